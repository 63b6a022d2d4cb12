"""Image frontend: bytes → RGB ``uint8 [H, W, 3]`` → padded float ``[1, 3, H', W']`` and back.

Accepts PNG, JPEG and WebP. EXIF orientation is applied (the image is coded as it
is displayed); alpha is dropped, grayscale and palette images become RGB, 16-bit
images are reduced to 8 bits. The pixel count is checked from the header before
the image is decoded, so a decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from strata.errors import InputError, LimitExceededError, UnsupportedMediaError

FORMATS = ("PNG", "JPEG", "WEBP")  # the JPEG plugin also opens multi-picture (MPO) camera files
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(folder: Path) -> list[Path]:
    """The PNG/JPEG/WebP files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder" if folder.exists() else f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(SUFFIXES)}) in {folder}")
    return files


def read_image(data: bytes, max_pixels: int = 64 * 1024 * 1024) -> np.ndarray:
    """Decode PNG/JPEG/WebP bytes to RGB ``uint8 [H, W, 3]``."""
    if not data:
        raise UnsupportedMediaError("empty image body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = im.size
            if w * h > max_pixels:
                raise LimitExceededError(f"image of {w}×{h} = {w * h} pixels is over the limit of {max_pixels}")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32) >> 8
                return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise LimitExceededError(f"image is too large: {e}") from None
    except UnidentifiedImageError:
        raise UnsupportedMediaError(f"not a PNG, JPEG or WebP image ({len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise UnsupportedMediaError(f"image could not be decoded: {e}") from None


PNG_LEVEL = 1
"""zlib level of the PNGs the service and the CLI write. On decoded photos level 1 is 2 to 3 times faster than
Pillow's default 6 and its files are no larger (kodim05: 0.80 MB in 32 ms against 0.81 MB in 86 ms): the
decoder's smooth output leaves little for the slower match search to find."""


def write_image(image: np.ndarray, fmt: str = "png", quality: int = 95, png_level: int = PNG_LEVEL) -> bytes:
    """Encode RGB ``uint8 [H, W, 3]`` as PNG or WebP (lossless PNG at zlib level ``png_level``; WebP at ``quality``)."""
    fmt = fmt.lower()
    buf = io.BytesIO()
    im = Image.fromarray(image)
    if fmt == "png":
        im.save(buf, format="PNG", compress_level=png_level)
    elif fmt == "webp":
        im.save(buf, format="WEBP", quality=quality)
    else:
        raise InputError(f"output format must be 'png' or 'webp', got {fmt!r}")
    return buf.getvalue()


@dataclass(frozen=True)
class Padded:
    """An image ready for ``g_a``: ``[1, 3, H', W']`` float32 in [0, 1], padded to the factor."""

    tensor: np.ndarray
    size: tuple[int, int]  # original (H, W)
    padding: tuple[int, int]  # rows added at the bottom, columns added on the right


def pad(image: np.ndarray, factor: int) -> Padded:
    """Scale to [0, 1] and pad (edge replication) to a multiple of ``factor``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise InputError("image has no pixels")
    ph, pw = -h % factor, -w % factor
    x = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    return Padded(x, (h, w), (ph, pw))


def pad_uint8(image: np.ndarray, factor: int) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` → ``uint8 [1, 3, H', W']`` padded (edge replication) to a multiple of ``factor``:
    :func:`pad`'s tensor before scaling, a quarter of its memory (the image codec scales it tile by tile)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise InputError("image has no pixels")
    x = np.pad(image, ((0, -h % factor), (0, -w % factor), (0, 0)), mode="edge")
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Network output in [0, 1] (any shape) → rounded ``uint8`` of the same shape."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def unpad(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[1, 3, H', W']`` float → cropped, rounded RGB ``uint8 [H, W, 3]``."""
    h, w = size
    return np.ascontiguousarray(to_uint8(x[0, :, :h, :w]).transpose(1, 2, 0))
