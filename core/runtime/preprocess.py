"""The app's image preprocessing, with Pillow and numpy only.

:func:`decode` is line for line ``core.sg.data.decode_image`` — what Predict, training and the feature
cache run on every image: Pillow open → JPEG draft at the target size → ``convert("RGB")`` → bicubic
resize of the shorter side to S → centre crop S×S. :func:`normalise` is ``normalize_batch``: uint8 →
float32 / 255 → (x − mean) / std per channel. The bundle's manifest names these steps and their
numbers; the export checks that this module and the app give the very same pixels
(core/deploy/bundle.py), and tests/test_runtime.py checks it too.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Sequence, Union

import numpy as np
from PIL import Image

Source = Union[str, os.PathLike, bytes]

DEFAULT_MAX_PIXELS = 50_000_000


class BadImage(ValueError):
    """The input is not an image this runtime can read (message says why, in English)."""


def decode(source: Source, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(3, size, size) uint8, exactly as the app decodes an image; :class:`BadImage` when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
            w, h = image.size
            if w * h > max_pixels:
                raise BadImage(f"too many pixels: {w}×{h} > {max_pixels}")
            image.draft("RGB", (size, size))  # as the app: JPEG decodes at a reduced scale
            image = image.convert("RGB")
            w, h = image.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            image = image.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            image = image.crop((left, top, left + size, top + size))
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("too many pixels (decompression bomb)") from None
    except FileNotFoundError:
        raise
    except Exception as exc:  # Pillow raises many types on malformed data
        raise BadImage(f"not a readable image ({type(exc).__name__})") from None


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (B, 3, H, W) → float32 normalised per channel, as ``core.sg.data.normalize_batch``."""
    x = images.astype(np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (x - m) / s
