"""A damaged feature-cache entry is never used: a file of the wrong shape or dtype, a header that declares
a huge array or is itself huge, a FIFO (or a directory) where the entry should be, NaN or infinite
values — each reads as missing (no raw error, no hang, no memory spike) and is recomputed by the next
load, so a training job or a prediction that meets it gets the right features."""
from __future__ import annotations

import os
import struct
import threading

import numpy as np
import pytest
import torch

from core.sg.features import PrefixFeatureCache

SIZE = 8


class TinyPrefix(torch.nn.Module):
    """A stand-in frozen prefix: a fixed 1×1 conv and pooling → (B, 4) features."""

    input_size = SIZE
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    k = 0

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        torch.nn.init.constant_(self.conv.weight, 0.1)
        torch.nn.init.constant_(self.conv.bias, 0.0)

    def prefix(self, x):
        return self.conv(x).mean((2, 3))


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    import core.sg.features as F

    # decode_image is the real decoder of files; the items here are already-decoded arrays
    monkeypatch.setattr(F, "decode_image", lambda src, size, resize="crop": src)
    return PrefixFeatureCache(tmp_path / "cache", TinyPrefix(), "tiny:1", views=2, decode_workers=1)


KEYS = ["a" * 16, "b" * 16]


def _items():
    return [(k, _image(i)) for i, k in enumerate(KEYS)]


def _npy(header: dict, payload: bytes = b"", version: int = 1) -> bytes:
    text = repr(header).encode("latin1")
    pad = 64 - (len(text) + 1 + (10 if version == 1 else 12)) % 64
    text += b" " * pad + b"\n"
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + payload


def _check_recomputed(cache, good, damaged_key):
    assert cache.read(damaged_key) is None                        # read as missing, no raw error
    again = cache.load(_items())
    assert again.shape == good.shape and again.dtype == torch.float16
    assert torch.equal(again, good)
    assert cache.read(damaged_key) is not None                    # the entry was rewritten whole


def test_a_good_entry_reads_back_with_the_cache_shape(cache):
    good = cache.load(_items())
    assert good.shape == (2, 2, 4) and cache.entry_shape == (2, 4)
    assert torch.equal(cache.read(KEYS[0]), good[0])


@pytest.mark.parametrize("array", [
    np.zeros((2, 7), np.float16),                  # another shape (another backbone's entry, a bug)
    np.zeros((1, 4), np.float16),                  # too few views
    np.zeros((2, 4), np.float32),                  # another dtype
    np.zeros((2, 4, 1), np.float16),
], ids=["shape", "views", "dtype", "rank"])
def test_an_entry_of_the_wrong_shape_or_dtype_is_recomputed(cache, array):
    good = cache.load(_items())
    np.save(cache.path(KEYS[1]), array)
    _check_recomputed(cache, good, KEYS[1])


def test_a_header_declaring_a_huge_array_is_not_allocated(cache):
    good = cache.load(_items())
    cache.path(KEYS[0]).write_bytes(_npy({"descr": "<f2", "fortran_order": False, "shape": (10**11, 4)},
                                         b"\0" * 64))
    _check_recomputed(cache, good, KEYS[0])


def test_a_huge_header_is_not_read(cache, monkeypatch):
    good = cache.load(_items())
    path = cache.path(KEYS[0])
    big = b"{'descr': '<f2', 'fortran_order': False, 'shape': (2, 4), }" + b" " * (64 << 20) + b"\n"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(big)) + big)
    reads = []
    real_fdopen = os.fdopen

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            reads.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Counting(real_fdopen(*a, **k)))
    assert cache.read(KEYS[0]) is None
    assert sum(reads) < 4096                                      # the 64 MiB header was never read
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    _check_recomputed(cache, good, KEYS[0])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX only")
def test_a_fifo_in_place_of_an_entry_does_not_hang(cache):
    good = cache.load(_items())
    path = cache.path(KEYS[0])
    path.unlink()
    os.mkfifo(path)
    result = {}
    reader = threading.Thread(target=lambda: result.setdefault("value", cache.read(KEYS[0])), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():                                         # unblock the stuck reader, then fail
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        reader.join(5)
        pytest.fail("reading a FIFO cache entry blocked")
    assert result["value"] is None
    _check_recomputed(cache, good, KEYS[0])


def test_a_directory_in_place_of_an_entry_is_replaced(cache):
    good = cache.load(_items())
    path = cache.path(KEYS[0])
    path.unlink()
    path.mkdir()
    (path / "junk").write_text("x")
    _check_recomputed(cache, good, KEYS[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_recomputed(cache, bad):
    good = cache.load(_items())
    array = good[1].numpy().copy()
    array[0, 2] = bad
    np.save(cache.path(KEYS[1]), array)
    _check_recomputed(cache, good, KEYS[1])


def test_trailing_or_missing_bytes_are_recomputed(cache):
    good = cache.load(_items())
    path = cache.path(KEYS[0])
    data = path.read_bytes()
    path.write_bytes(data + b"\0\0")
    _check_recomputed(cache, good, KEYS[0])
    path.write_bytes(data[:-2])
    _check_recomputed(cache, good, KEYS[0])
