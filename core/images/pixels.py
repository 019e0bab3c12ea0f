"""Validation and re-encoding of one uploaded image: what is stored is pixels only.

Every accepted upload is decoded and written again from its pixels, upright (EXIF orientation
applied) and 8-bit RGB, with no metadata (no EXIF, XMP, ICC profile, comments, text chunks) and
nothing after the image data. A JPEG with a zip appended, a PNG with a payload after ``IEND`` or in a
text chunk, an EXIF block carrying a script: none of it reaches the data home, the export or anyone
who later downloads the file. The original bytes are not needed by anything: training, prediction,
thumbnails and the export read pixels, and the image's identity (``images.sha256``, which also fixes its
split) is the hash of the uploaded bytes, so a re-upload of the same file is still an exact duplicate.

* JPEG sources stay JPEG, re-encoded with the source's own quantisation tables and chroma subsampling
  (measured on a 12 MP photo: 0.04 s, PSNR 62 dB against the upload — no visible generation loss).
  CMYK or greyscale JPEGs, and JPEGs whose tables cannot be reused, are written at quality 95.
* Everything else becomes lossless PNG (the slow part of an upload: ~0.1 s per 0.3 MP of camera
  pixels, ~1.5 s per 12 MP; the original was only decoded before).
* ICC profiles are dropped, not applied: every loader here reads the raw values (``convert("RGB")``),
  as it always did, so the model sees what it saw before.

Pillow's decompression-bomb guard stays on; its warning tier is a refusal too.
"""
from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from core.images.base import SUPPORTED_FORMATS, Rejected, mb

log = logging.getLogger(__name__)

JPEG_QUALITY = 95
# zlib level of stored PNGs; uploads wait on it. On 640×480 camera-like pixels (2 busy cores): the
# default 6 takes 214 ms / 581 KiB per image, level 1 115 ms / 633 KiB. 6 is kept: files stay as small
# as Pillow's own PNGs, and such a PNG (no payload) re-encodes to the very same bytes.
PNG_COMPRESS_LEVEL = 6


def _plugins() -> tuple[str, ...]:
    """The Pillow plugins to try, by the names ``Image.open(formats=…)`` takes (an MPO is opened by the
    JPEG plugin)."""
    Image.init()
    return tuple(f for f in sorted(SUPPORTED_FORMATS) if f in Image.OPEN)


PLUGINS = _plugins()


@dataclass
class Normalised:
    data: bytes
    ext: str
    width: int
    height: int


def normalise_image(data: bytes, max_bytes: int, max_pixels: int) -> Normalised:
    """Validate ``data`` and return what to store; raises ``Rejected`` with a message key."""
    fmt = check_image(data, max_bytes, max_pixels, verify=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            # verify() leaves the image unusable and checks little for JPEG: decode for real.
            with Image.open(io.BytesIO(data), formats=PLUGINS) as img:
                img.load()
                jpeg_tables = _reusable_jpeg_tables(img) if fmt in ("JPEG", "MPO") else None
                rgb = _to_rgb(ImageOps.exif_transpose(img))
        except Rejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Rejected("images.decompression_bomb") from None
        except UnidentifiedImageError:
            raise Rejected("images.not_image") from None
        except Exception as exc:  # Pillow raises many types on malformed data (OSError, SyntaxError, ...)
            log.info("image decode failed: %r", exc)
            raise Rejected("images.corrupt") from None
    # A fresh image from the pixels alone: no ``info`` (ICC, EXIF, comments) can ride along on save.
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    out = io.BytesIO()
    if fmt in ("JPEG", "MPO"):
        if jpeg_tables:
            clean.save(out, "JPEG", qtables=jpeg_tables[0], subsampling=jpeg_tables[1])
        else:
            clean.save(out, "JPEG", quality=JPEG_QUALITY)
        ext = "jpg"
    else:
        clean.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        ext = "png"
    return Normalised(out.getvalue(), ext, clean.width, clean.height)


def check_image(data: bytes, max_bytes: int, max_pixels: int, verify: bool = False) -> str:
    """The checks every image passes before anything decodes its pixels — uploads and Predict alike:
    not empty, at most ``max_bytes``, one of ``SUPPORTED_FORMATS`` (only those plugins are even tried, so
    an EPS, ICO or SPIDER file is never handed to its decoder — EPS would run Ghostscript), and at most
    ``max_pixels`` and Pillow's bomb limit, read from the header. ``verify`` also runs Pillow's cheap
    structural check. Returns the format; raises ``Rejected`` with a message key."""
    if not data:
        raise Rejected("images.empty")
    if len(data) > max_bytes:
        raise Rejected("images.too_large", size=mb(len(data)), limit=mb(max_bytes))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=PLUGINS) as probe:
                fmt = probe.format
                if fmt not in SUPPORTED_FORMATS:
                    raise Rejected("images.unsupported_format", format=fmt or "?")
                width, height = probe.size
                # Same test as Pillow's warning tier, made explicit: catch_warnings is process-wide
                # state, so another thread could reset the filter between open() and here.
                if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
                    raise Rejected("images.decompression_bomb")
                if width * height > max_pixels:
                    raise Rejected("images.too_many_pixels", width=width, height=height,
                                   mp=f"{width * height / 1e6:.1f}", limit=f"{max_pixels / 1e6:.0f}")
                if verify:
                    probe.verify()
        except Rejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Rejected("images.decompression_bomb") from None
        except UnidentifiedImageError:
            other = _sniff_format(data)
            if other:
                raise Rejected("images.unsupported_format", format=other) from None
            raise Rejected("images.not_image") from None
        except Exception as exc:  # Pillow raises many types on malformed data (OSError, SyntaxError, ...)
            log.info("image check failed: %r", exc)
            raise Rejected("images.corrupt") from None
    return fmt


def _sniff_format(data: bytes) -> str | None:
    """The name of another format Pillow knows ``data`` as, from its plugins' magic-byte tests only
    (nothing is parsed or decoded), so a refused ICO or EPS is named in the message."""
    Image.init()
    prefix = data[:16]
    for fmt, (_factory, accept) in Image.OPEN.items():
        if fmt in SUPPORTED_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                return fmt
        except Exception:  # an accept() that wants more bytes
            continue
    return None


def _reusable_jpeg_tables(img: Image.Image):
    """(quantisation tables, subsampling) of a colour JPEG, so the re-encode costs no visible quality."""
    tables = getattr(img, "quantization", None)
    if img.mode != "RGB" or not tables or len(tables) < 2:
        return None
    sampling = JpegImagePlugin.get_sampling(img)
    return (tables, sampling) if sampling in (0, 1, 2) else None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit greyscale: scale to 8 bits instead of clipping everything to white.
        arr = np.asarray(img).astype(np.float64)
        if arr.max(initial=0) > 255:
            arr = arr / (65535.0 if arr.max() <= 65535 else arr.max()) * 255.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "L" and "transparency" in img.info:
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")
