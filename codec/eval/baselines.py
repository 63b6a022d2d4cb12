"""Classical codec baselines for the evaluation: Pillow's JPEG (libjpeg), WebP (libwebp), AVIF (libavif)
and JPEG 2000 (OpenJPEG).

::

    image [H, W, 3] uint8 ─►─┤ Pillow save → BytesIO ├─►─ bytes ─►─┤ Image.open + convert ├─►─ decoded

Each call encodes one image at one quality setting and returns a :class:`BaselinePoint`
with the stream size, the bits per pixel, the decoded image and the wall-clock encode
and decode times. Sweep ``JPEG_QUALITIES`` / ``WEBP_QUALITIES`` / ``AVIF_QUALITIES`` /
``JPEG2000_BPP`` to draw a rate-distortion curve; on the Kodak photos they span roughly 0.12
(WebP) or 0.18 (JPEG) to about 3 bpp. JPEG 2000 is set by its target rate (the codec with our
promise: quality layers that a truncated stream keeps), the others by their quality scale.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, features
from strata.errors import InputError

#: JPEG qualities for a rate-distortion sweep: on Kodak about 0.18 bpp at 2 (the floor: qualities 1 and 2
#: give the same all-255 baseline tables), 0.34 at 10, 0.92 at 50, 1.4 at 75, 1.9 at 85 and 3.4 at 95.
JPEG_QUALITIES = (2, 5, 10, 15, 20, 30, 40, 50, 60, 75, 85, 95)
#: WebP qualities for a rate-distortion sweep: on Kodak about 0.12 bpp at 0, 0.18 at 1, 0.30 at 10,
#: 0.72 at 50, 1.0 at 75, 1.5 at 85 and 2.9 at 95.
WEBP_QUALITIES = (0, 1, 5, 10, 20, 30, 40, 50, 60, 75, 85, 95)
#: AVIF qualities (libavif through Pillow, speed 6): about 0.11 bpp at 10, 0.24 at 30, 0.53 at 50 and 1.1 at 70 on
#: a validation photograph; 0 and 5 reach below 0.1.
AVIF_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80)
#: JPEG 2000 target rates in bits per pixel (OpenJPEG, irreversible 9/7 wavelet, one quality layer each).
JPEG2000_BPP = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class BaselinePoint:
    """One image coded by a classical codec at one quality setting."""

    codec: str  #: "jpeg", "webp", "avif" or "jpeg2000"
    quality: float  #: the codec's setting: its quality, or for JPEG 2000 the target bits per pixel
    bytes: int  #: size of the encoded stream
    bpp: float  #: bits per pixel: ``bytes * 8 / (H * W)``
    decoded: np.ndarray = field(repr=False, compare=False)  #: decoded image, ``uint8`` ``[H, W, 3]`` (read-only)
    encode_s: float = field(compare=False)  #: seconds spent in Pillow's ``save`` to memory
    decode_s: float = field(compare=False)  #: seconds spent in ``Image.open`` + ``convert`` + ``np.asarray``


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected a uint8 RGB image [H, W, 3], got dtype {image.dtype} and shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image is empty: shape {image.shape}")


def _check_quality(quality: int, lo: int, hi: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not lo <= quality <= hi:
        raise InputError(f"quality must be an integer in {lo}..{hi}, got {quality!r}")
    return int(quality)


def _code(image: np.ndarray, codec: str, fmt: str, quality: float, options: dict[str, Any]) -> BaselinePoint:
    """Encode ``image`` ``[H, W, 3]`` with Pillow in format ``fmt`` (``options`` as ``save`` takes them), decode it
    back, time both."""
    pil = Image.fromarray(np.ascontiguousarray(image))
    buf = io.BytesIO()
    t0 = time.perf_counter()
    pil.save(buf, format=fmt, **options)
    t1 = time.perf_counter()
    data = buf.getvalue()
    t2 = time.perf_counter()
    with Image.open(io.BytesIO(data)) as im:
        decoded = np.asarray(im.convert("RGB"))
    t3 = time.perf_counter()
    h, w = image.shape[:2]
    return BaselinePoint(
        codec=codec,
        quality=quality,
        bytes=len(data),
        bpp=len(data) * 8.0 / (h * w),
        decoded=decoded,
        encode_s=t1 - t0,
        decode_s=t3 - t2,
    )


def jpeg(image: np.ndarray, quality: int) -> BaselinePoint:
    """Code ``image`` with baseline JPEG (Pillow/libjpeg): 4:2:0 chroma, standard tables, ``optimize=False``.

    Args:
        image: ``uint8`` RGB ``[H, W, 3]``.
        quality: libjpeg quality, 1..100 (Pillow advises against values above 95).

    Returns:
        A :class:`BaselinePoint` with ``codec="jpeg"``.

    Raises:
        InputError: not a ``uint8`` ``[H, W, 3]`` array, or quality outside 1..100.
    """
    _check_image(image)
    q = _check_quality(quality, 1, 100)
    return _code(image, "jpeg", "JPEG", q, {"quality": q, "subsampling": "4:2:0", "optimize": False})


def webp(image: np.ndarray, quality: int) -> BaselinePoint:
    """Code ``image`` with lossy WebP (Pillow/libwebp), ``method=4`` (Pillow's default effort).

    Args:
        image: ``uint8`` RGB ``[H, W, 3]``.
        quality: libwebp quality, 0..100.

    Returns:
        A :class:`BaselinePoint` with ``codec="webp"``.

    Raises:
        InputError: not a ``uint8`` ``[H, W, 3]`` array, or quality outside 0..100.
        RuntimeError: Pillow was built without WebP support.
    """
    _check_image(image)
    q = _check_quality(quality, 0, 100)
    if not features.check("webp"):
        raise RuntimeError("this Pillow build has no WebP support")
    return _code(image, "webp", "WEBP", q, {"quality": q, "method": 4, "lossless": False})


def avif(image: np.ndarray, quality: int) -> BaselinePoint:
    """Code ``image`` with AVIF (Pillow/libavif), speed 6, 4:2:0 chroma.

    Raises:
        InputError: not a ``uint8`` ``[H, W, 3]`` array, or quality outside 0..100.
        RuntimeError: Pillow was built without AVIF support.
    """
    _check_image(image)
    q = _check_quality(quality, 0, 100)
    if not features.check("avif"):
        raise RuntimeError("this Pillow build has no AVIF support")
    return _code(image, "avif", "AVIF", q, {"quality": q, "speed": 6, "subsampling": "4:2:0"})


def jpeg2000(image: np.ndarray, bpp: float) -> BaselinePoint:
    """Code ``image`` with JPEG 2000 (Pillow/OpenJPEG) at a target rate: the irreversible 9/7 wavelet and one
    quality layer of compression ratio ``24 / bpp`` (24 bits per RGB pixel).

    Raises:
        InputError: not a ``uint8`` ``[H, W, 3]`` array, or ``bpp`` not in (0, 24].
        RuntimeError: Pillow was built without OpenJPEG.
    """
    _check_image(image)
    if isinstance(bpp, bool) or not isinstance(bpp, (int, float, np.floating)) or not 0 < bpp <= 24:
        raise InputError(f"JPEG 2000 target bpp must be in (0, 24], got {bpp!r}")
    if not features.check("jpg_2000"):
        raise RuntimeError("this Pillow build has no JPEG 2000 (OpenJPEG) support")
    options = {"quality_mode": "rates", "quality_layers": [24.0 / float(bpp)], "irreversible": True}
    return _code(image, "jpeg2000", "JPEG2000", float(bpp), options)


__all__ = ["AVIF_QUALITIES", "JPEG2000_BPP", "JPEG_QUALITIES", "WEBP_QUALITIES", "BaselinePoint", "avif", "jpeg",
           "jpeg2000", "webp"]
