"""Decode-once image cache and tensor transforms.

Decoding a JPEG with PIL costs ~2–3 ms per image per core (spec/method.md), more than a training step
per image on a GPU, so every image is decoded and resized **once** into a uint8 tensor (N, 3, S, S),
kept in memory and optionally saved under a cache directory keyed by the sources and the size.
Augmentation (random crop with zero padding + horizontal flip) and normalisation run on whole batches
of tensors, on the training device.
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageSource", "decode_image", "ImageCache", "Samples", "DecodedImageDataset", "FeatureDataset",
           "augment_batch", "normalize_batch"]

ImageSource = Union[str, os.PathLike, bytes]


def decode_image(source: ImageSource, size: int, resize: str = "crop", formats=None) -> np.ndarray:
    """PIL decode → RGB → (3, size, size) uint8. ``resize``: ``"crop"`` (default) resizes the shorter side
    to ``size`` and centre-crops; ``"fit"`` squashes the whole image to size × size, so nothing is cut
    off (models that declare ``resize = "fit"``, core/sg/tiles.py: defects at a part's edge stay in).
    ``formats``: the only Pillow formats to try (None: any)."""
    if resize not in ("crop", "fit"):
        raise ValueError(f"unknown resize {resize!r}")
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=formats)
    image.draft("RGB", (size, size))  # lets JPEG decode at a reduced scale: much faster for big photos
    image = image.convert("RGB")
    if resize == "fit":
        image = image.resize((size, size), Image.BICUBIC)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def _source_key(source: ImageSource) -> bytes:
    if isinstance(source, bytes):
        return b"b:" + hashlib.sha256(source).digest()
    st = os.stat(source)
    return f"p:{os.path.abspath(source)}:{st.st_size}:{st.st_mtime_ns}".encode()


class ImageCache:
    """Decodes a list of image sources (paths or raw bytes) once into a uint8 tensor.

    ``ImageCache(cache_dir).load(sources, size)`` returns (N, 3, size, size) uint8.  With a
    ``cache_dir`` the array is stored as ``<key>.npy``, where the key hashes every source (content hash
    for bytes; absolute path + size + mtime for files) and the size, so a changed file or size gives a
    new entry.  Files are written atomically (temp file + ``os.replace``).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, workers: int = 0):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.workers = workers
        self.decoded = 0  # images decoded by this instance (a cache hit decodes none)

    def key(self, sources: Sequence[ImageSource], size: int) -> str:
        digest = hashlib.sha256(f"size={size};n={len(sources)}".encode())
        for source in sources:
            digest.update(_source_key(source))
            digest.update(b"\0")
        return digest.hexdigest()[:32]

    def load(self, sources: Sequence[ImageSource], size: int) -> torch.Tensor:
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self.key(sources, size)}.npy"
            if path.exists():
                return torch.from_numpy(np.load(path))
        if self.workers and self.workers > 1:
            with ThreadPoolExecutor(self.workers) as pool:  # PIL releases the GIL while decoding
                arrays = list(pool.map(lambda s: decode_image(s, size), sources))
        else:
            arrays = [decode_image(s, size) for s in sources]
        self.decoded += len(arrays)
        data = np.stack(arrays) if arrays else np.zeros((0, 3, size, size), np.uint8)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            try:
                np.save(tmp, data)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)   # a full disk must not leave half-written files behind
                raise
        return torch.from_numpy(data)


class Samples(torch.utils.data.Dataset):
    """Training/evaluation samples with their class index (into the run's seen-class table) and id.

    ``inputs`` is either decoded images — uint8 (N, 3, S, S), the prefix runs on every batch — or
    cached prefix features — (N, V, ...) with V ≥ 1 views per sample (view 0 is the plain image, the
    others cached augmentations), so training runs only the suffix.  ``labels`` (N,) int64, ``ids`` (N,)
    int64: stable ids chosen by the caller (database image ids); exemplar memory and checkpoints refer
    to samples by id.  Items are ``(input, class_index, sample_id)``.
    """

    kind = "images"

    def __init__(self, inputs: torch.Tensor, labels, ids):
        self.inputs = inputs
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.ids = torch.as_tensor(ids, dtype=torch.long)
        self._check()
        if not (len(self.inputs) == len(self.labels) == len(self.ids)):
            raise ValueError("inputs, labels and ids must have the same length")

    def _check(self) -> None:
        if self.inputs.dtype != torch.uint8 or self.inputs.dim() != 4:
            raise ValueError("images must be a uint8 tensor (N, 3, S, S)")

    @property
    def images(self) -> torch.Tensor:
        return self.inputs

    @property
    def views(self) -> int:
        return 1 if self.kind == "images" else int(self.inputs.shape[1])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.inputs[i], int(self.labels[i]), int(self.ids[i])

    def _like(self, inputs, labels, ids) -> "Samples":
        return type(self)(inputs, labels, ids)

    def subset(self, indices) -> "Samples":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._like(self.inputs[idx], self.labels[idx], self.ids[idx])

    def select_ids(self, ids) -> "Samples":
        """Rows whose id is in ``ids``, in the order of ``ids``; KeyError if one is missing."""
        position = {int(v): i for i, v in enumerate(self.ids.tolist())}
        try:
            rows = [position[int(v)] for v in ids]
        except KeyError as e:
            raise KeyError(f"sample id {e.args[0]} not in dataset") from None
        return self.subset(rows)

    def first_view(self) -> torch.Tensor:
        """The inputs without augmentation (what evaluation, herding and prediction use)."""
        return self.inputs if self.kind == "images" else self.inputs[:, 0]

    @staticmethod
    def concat(parts: Sequence["Samples"]) -> "Samples":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("nothing to concatenate")
        kinds = {type(p) for p in parts}
        if len(kinds) != 1:
            raise ValueError("cannot mix images and cached features")
        views = min(p.views for p in parts)  # exemplars cached with fewer views still concatenate
        inputs = [p.inputs if p.kind == "images" else p.inputs[:, :views] for p in parts]
        return parts[0]._like(torch.cat(inputs), torch.cat([p.labels for p in parts]),
                              torch.cat([p.ids for p in parts]))


class DecodedImageDataset(Samples):
    """Decoded images, uint8 (N, 3, S, S)."""

    kind = "images"

    @classmethod
    def from_sources(cls, sources: Sequence[ImageSource], labels, ids, size: int,
                     cache: ImageCache | None = None) -> "DecodedImageDataset":
        images = (cache or ImageCache()).load(list(sources), size)
        return cls(images, torch.as_tensor(labels), torch.as_tensor(ids))


class FeatureDataset(Samples):
    """Cached prefix outputs, (N, V, ...) in float16 or float32: V views per sample."""

    kind = "features"

    def _check(self) -> None:
        if not self.inputs.is_floating_point() or self.inputs.dim() < 3:
            raise ValueError("features must be a float tensor (N, V, ...)")


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float, scaled to [0, 1] and normalised per channel (the eval transform)."""
    x = images.to(dtype).div_(255.0)
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def augment_batch(images: torch.Tensor, generator: torch.Generator, padding: int = 4,
                  flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip on a uint8 batch (B, 3, H, W).

    Random numbers come from ``generator`` (a CPU generator), so runs are reproducible on any device.
    """
    b, _, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    if padding:
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
        dev = images.device
        rows = (offsets[:, 0:1] + torch.arange(h)).to(dev)  # (B, H)
        cols = (offsets[:, 1:2] + torch.arange(w)).to(dev)  # (B, W)
        bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
        ci = torch.arange(images.shape[1], device=dev).view(1, -1, 1, 1)
        out = padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
    else:
        out = images.clone()
    if flip and flips.any():
        fl = flips.to(out.device)
        out[fl] = out[fl].flip(-1)
    return out
