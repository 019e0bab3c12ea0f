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

``slug`` encodes the model's cache version, input size, split point, view count and the engine that
computes the prefix (fp32, bf16 or int8: core/sg/prefix_engine.py), so a different backbone, weights
file, input size, split or precision never reads another's entries (invalidation by version).
Writes go to a temp file that is renamed into place (``os.replace`` is atomic), so a reader sees a
whole entry or none. Reading trusts nothing in the file: only a regular file is opened (never a FIFO,
device or symlink, so a read cannot hang), the ``.npy`` header is bounded in size, and the entry must be
float16 of exactly this cache's shape and finite; anything else (a torn write, a disk error, a file put
there by hand) is treated as missing and recomputed.

Pure torch/numpy + files: no SQLite, no Streamlit.
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
import stat
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data import ImageSource, decode_image, normalize_batch
from .prefix_engine import INT8_RECIPE, PrefixRunner, choose_engine

__all__ = ["PrefixFeatureCache", "make_views", "MAX_VIEWS"]

MAX_VIEWS = 4
_MAX_HEADER = 1024          # a real entry's .npy header is 128 bytes
_ENTRY_SHAPES: dict[str, tuple[int, ...]] = {}   # slug → the (V, …) shape of its entries


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
                 decode_workers: int = 2, batch_size: int = 64, engine: str | None = None,
                 device: str | torch.device = "cpu"):
        """``engine``: fp32, bf16, int8 or auto (None: ``SGCL_PREFIX_ENGINE``, else auto); one this
        machine cannot run well falls back to the next (core/sg/prefix_engine.py). ``device``: where
        the entries will be computed (a GPU always uses fp32)."""
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be in 1..{MAX_VIEWS}")
        self.model = model
        self.model_version = model_version
        self.views = int(views)
        self.decode_workers = int(decode_workers)
        self.batch_size = int(batch_size)
        self.engine = choose_engine(model, engine, device)
        self.device = torch.device(device)
        self._runner: PrefixRunner | None = None
        k = getattr(model, "k", None)
        raw = f"{model_version}|size={model.input_size}|k={k}|views={self.views}"
        tag = ""
        if self.engine != "fp32":     # fp32 keeps the key it had before engines existed
            tag = f"-{self.engine}" + (INT8_RECIPE if self.engine == "int8" else "")
            raw += f"|engine={tag[1:]}"
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_version)[:60]
        digest = hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:10]
        self.slug = f"{readable}-s{model.input_size}-k{k}-v{self.views}{tag}-{digest}"
        self.dir = Path(root) / self.slug
        self.computed = 0   # entries this instance wrote (a warm cache computes none)

    @property
    def runner(self) -> PrefixRunner:
        """What computes this cache's entries (built on first use: the int8 engine takes a while once)."""
        if self._runner is None:
            self._runner = PrefixRunner(self.model, self.engine, self.model_version)
        return self._runner

    @torch.no_grad()
    def prefix_of(self, images: torch.Tensor) -> torch.Tensor:
        """(B, …) float32 prefix output (on the CPU) of uint8 images (B, 3, S, S), computed with this
        cache's engine and not stored: what an entry's view 0 would hold, for an image that is not kept
        (Predict)."""
        x = normalize_batch(images.to(self.device), self.model.mean, self.model.std)
        return self.runner(x).float().cpu().to(torch.float16).float()

    # ---- paths and reading ------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{8,128}", key):
            raise ValueError(f"unsafe cache key {key!r}")
        return self.dir / key[:2] / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in keys if not self.has(k)]

    @property
    def entry_shape(self) -> tuple[int, ...]:
        """The (V, …) shape every entry of this cache has (found once by running the prefix on a blank
        image)."""
        if self.slug not in _ENTRY_SHAPES:
            size = self.model.input_size
            param = next(iter(self.model.parameters()), None)
            device = param.device if param is not None else "cpu"
            with torch.no_grad():
                out = self.model.prefix(torch.zeros(1, 3, size, size, device=device))
            _ENTRY_SHAPES[self.slug] = (self.views, *out.shape[1:])
        return _ENTRY_SHAPES[self.slug]

    def read(self, key: str) -> torch.Tensor | None:
        """The cached (V, …) float16 tensor, or None when absent or not a whole, finite entry of this
        cache's shape."""
        array = _read_entry(self.path(key), self.entry_shape)
        return None if array is None else torch.from_numpy(array)

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
            outs.append(self.runner(x).float().cpu().to(torch.float16))
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
            if value is None:   # vanished or damaged: recompute once
                _remove(self.path(key))
                self.compute([(key, src)], device)
                value = self.read(key)
                if value is None:
                    raise OSError(f"feature cache entry {key} cannot be read back")
            arrays.append(value)
        return torch.stack(arrays)

    def disk_usage(self) -> tuple[int, int]:
        """(entries, bytes) of this version's cache."""
        files = list(self.dir.glob("*/*.npy")) if self.dir.is_dir() else []
        return len(files), sum(f.stat().st_size for f in files)


def _read_entry(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The float16 array of ``shape`` stored at ``path``, or None for anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)   # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
    except OSError:
        return None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            if fh.read(6) != b"\x93NUMPY":
                return None
            major = fh.read(2)[:1]
            width = {b"\x01": 2, b"\x02": 4, b"\x03": 4}.get(major)
            if width is None:
                return None
            length = int.from_bytes(fh.read(width), "little")
            if length > _MAX_HEADER:
                return None
            header = ast.literal_eval(fh.read(length).decode("latin1"))
            if not (isinstance(header, dict) and np.dtype(header.get("descr")) == np.float16
                    and header.get("fortran_order") is False and tuple(header.get("shape", ())) == shape):
                return None
            count = int(np.prod(shape))
            data = fh.read(2 * count + 1)
            if len(data) != 2 * count:           # torn (short) or with trailing bytes
                return None
            array = np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float16)
        except (OSError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return array if np.isfinite(array).all() else None


def _remove(path: Path) -> None:
    """Make room for a recomputed entry, whatever is at ``path`` (a file, FIFO, link or directory)."""
    import shutil

    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():   # os.replace cannot replace a directory
        _remove(path)
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
