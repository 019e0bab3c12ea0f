"""The frozen-prefix feature cache: the prefix output computed once per image per backbone version.

With a pretrained, frozen prefix (EfficientNet-Lite's stem and first blocks, a CLIP ViT's first blocks)
the prefix output of an image never changes, so it is computed once — in the background after upload —
and every task, epoch, run, herding step and prediction reads it; training epochs then run only the
small trainable suffix (spec/method.md, "Making it fast" §5).

Layout: ``<root>/<slug>/<key[:2]>/<key>.npy`` — one float16 array (V, …) per image, where ``key`` is
the caller's stable image key (the content hash) and V the number of cached *views*: view 0 is the
image as evaluated (resize + centre crop), view 1 its mirror image, views 2–3 the same pair shifted
by a random crop of 1/8 of the side (seeded by the key, so a cache entry is reproducible).  Training
with augmentation picks a random view per sample per epoch.

``slug`` encodes the model's cache version, input size, split point and view count, so a different
backbone, weights file, input size or split never reads another's entries (invalidation by version).
Writes go to a temp file that is renamed into place (``os.replace`` is atomic), so a reader sees a
whole entry or none; a corrupt entry (e.g. a disk error) is treated as missing and recomputed.

Pure torch/numpy + files: no SQLite, no Streamlit.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data import ImageSource, decode_image, normalize_batch

__all__ = ["PrefixFeatureCache", "make_views", "MAX_VIEWS"]

MAX_VIEWS = 4


def make_views(images: torch.Tensor, views: int, seeds: Sequence[int]) -> list[torch.Tensor]:
    """``views`` uint8 batches (B, 3, S, S): plain, mirrored, then shifted crops (seeded per image)."""
    out = [images]
    if views > 1:
        out.append(images.flip(-1))
    if views > 2:
        b, _, h, w = images.shape
        pad = max(1, h // 8)
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate") \
            if images.dtype.is_floating_point else torch.nn.functional.pad(images.float(), (pad, pad, pad, pad),
                                                                          mode="replicate").to(images.dtype)
        shifted = torch.empty_like(images)
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
            shifted[i] = padded[i, :, dy:dy + h, dx:dx + w]
        out.append(shifted)
        if views > 3:
            out.append(shifted.flip(-1))
    return out[:views]


class PrefixFeatureCache:
    """Prefix outputs of ``model`` (a ``SplitImageModel`` with a frozen prefix) for keyed images."""

    def __init__(self, root: str | os.PathLike, model, model_version: str, views: int = 1,
                 decode_workers: int = 2, batch_size: int = 64):
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be in 1..{MAX_VIEWS}")
        self.model = model
        self.views = int(views)
        self.decode_workers = int(decode_workers)
        self.batch_size = int(batch_size)
        k = getattr(model, "k", None)
        raw = f"{model_version}|size={model.input_size}|k={k}|views={self.views}"
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_version)[:60]
        self.slug = f"{readable}-s{model.input_size}-k{k}-v{self.views}-{hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:10]}"
        self.dir = Path(root) / self.slug
        self.computed = 0   # entries this instance wrote (a warm cache computes none)

    # ---- paths and reading ------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{8,128}", key):
            raise ValueError(f"unsafe cache key {key!r}")
        return self.dir / key[:2] / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in keys if not self.has(k)]

    def read(self, key: str) -> torch.Tensor | None:
        """The cached (V, …) float16 tensor, or None when absent or unreadable."""
        try:
            return torch.from_numpy(np.load(self.path(key), allow_pickle=False))
        except (OSError, ValueError, EOFError):
            return None

    # ---- computing --------------------------------------------------------------------------------
    @torch.no_grad()
    def compute(self, items: Sequence[tuple[str, ImageSource]], device: str | torch.device = "cpu",
                progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                on_error: Callable[[str, Exception], None] | None = None) -> int:
        """Compute and store the entries of ``items`` (key, image source) that are missing.  Images are
        decoded in ``decode_workers`` threads while the model runs; returns how many were written.
        An image that cannot be decoded is reported to ``on_error`` (else raised) and skipped."""
        todo = [(k, src) for k, src in dict(items).items() if not self.has(k)]
        if not todo:
            return 0
        size = self.model.input_size
        resize = getattr(self.model, "resize", "crop")
        self.model.eval()
        written = 0

        def decode(item):
            key, src = item
            try:
                return key, decode_image(src, size, resize), None
            except Exception as exc:  # noqa: BLE001 - reported per image
                return key, None, exc

        pool = ThreadPoolExecutor(max(1, self.decode_workers)) if self.decode_workers > 1 else None
        try:
            mapper = pool.map if pool is not None else map
            batch: list[tuple[str, np.ndarray]] = []
            for key, array, exc in mapper(decode, todo):
                if exc is not None:
                    if on_error is None:
                        raise exc
                    on_error(key, exc)
                    continue
                batch.append((key, array))
                if len(batch) >= self.batch_size:
                    written += self._write_batch(batch, device)
                    batch = []
                    if progress is not None:
                        progress(written, len(todo))
                    if should_stop is not None and should_stop():
                        break
            if batch:
                written += self._write_batch(batch, device)
                if progress is not None:
                    progress(written, len(todo))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return written

    def _write_batch(self, batch: list[tuple[str, np.ndarray]], device) -> int:
        keys = [k for k, _ in batch]
        images = torch.from_numpy(np.stack([a for _, a in batch]))
        seeds = [zlib.crc32(k.encode()) for k in keys]
        outs = []
        for view in make_views(images, self.views, seeds):
            x = normalize_batch(view.to(device), self.model.mean, self.model.std)
            outs.append(self.model.prefix(x).float().cpu().to(torch.float16))
        stacked = torch.stack(outs, 1).numpy()   # (B, V, …)
        for key, array in zip(keys, stacked):
            _atomic_save(self.path(key), array)
        self.computed += len(keys)
        return len(keys)

    def load(self, items: Sequence[tuple[str, ImageSource]], device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(N, V, …) float16 features of ``items`` in order, computing what is missing first."""
        if not items:
            raise ValueError("no images")
        self.compute(items, device, progress)
        arrays = []
        for key, src in items:
            value = self.read(key)
            if value is None or value.shape[0] < self.views:   # vanished or corrupt: recompute once
                self.path(key).unlink(missing_ok=True)
                self.compute([(key, src)], device)
                value = self.read(key)
                if value is None:
                    raise OSError(f"feature cache entry {key} cannot be read back")
            arrays.append(value[: self.views])
        return torch.stack(arrays)

    def disk_usage(self) -> tuple[int, int]:
        """(entries, bytes) of this version's cache."""
        files = list(self.dir.glob("*/*.npy")) if self.dir.is_dir() else []
        return len(files), sum(f.stat().st_size for f in files)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
