"""Tests for codec.baselines: Pillow JPEG and WebP round trips."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from strata.errors import InputError
from strata.eval.baselines import JPEG_QUALITIES, WEBP_QUALITIES, BaselinePoint, jpeg, webp
from strata.eval.metrics import psnr


def gradient(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth synthetic ``uint8`` ``[h, w, 3]`` gradient with a little texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * xx / w, 255 * yy / h, 128 + 60 * np.sin((xx + yy) / 9.0)], axis=-1)
    img += np.random.default_rng(0).normal(0.0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


Coder = Callable[[np.ndarray, int], BaselinePoint]
CODECS = [("jpeg", jpeg, 1, 100), ("webp", webp, 0, 100)]


@pytest.mark.parametrize(("name", "code", "lo", "hi"), CODECS)
def test_round_trip(name: str, code: Coder, lo: int, hi: int) -> None:
    img = gradient()
    p = code(img, 75)
    assert isinstance(p, BaselinePoint)
    assert (p.codec, p.quality) == (name, 75)
    assert p.decoded.shape == img.shape and p.decoded.dtype == np.uint8
    assert p.bytes > 0
    assert p.bpp == pytest.approx(p.bytes * 8 / (img.shape[0] * img.shape[1]))
    assert 0.05 < p.bpp < 8.0
    assert psnr(img, p.decoded) > 30.0
    assert p.encode_s > 0 and p.decode_s > 0


@pytest.mark.parametrize(("name", "code", "lo", "hi"), CODECS)
def test_higher_quality_costs_more_bytes_and_looks_better(name: str, code: Coder, lo: int, hi: int) -> None:
    img = gradient()
    low, mid, high = (code(img, q) for q in (10, 50, 95))
    assert low.bytes < mid.bytes < high.bytes
    assert psnr(img, low.decoded) < psnr(img, mid.decoded) < psnr(img, high.decoded)


@pytest.mark.parametrize(("name", "code", "lo", "hi"), CODECS)
def test_quality_bounds_and_bad_images(name: str, code: Coder, lo: int, hi: int) -> None:
    img = gradient(16, 16)
    assert code(img, lo).bytes > 0 and code(img, hi).bytes > 0
    for q in (lo - 1, hi + 1, 50.0, True, "50"):
        with pytest.raises(InputError, match="quality"):
            code(img, q)
    for bad in (img.astype(np.float32), img[..., 0], np.zeros((16, 16, 4), np.uint8), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(InputError):
            code(bad, 50)
    with pytest.raises(InputError):
        code(img.tolist(), 50)


def test_odd_sizes_and_non_contiguous_input() -> None:
    img = gradient(37, 53)[:, ::-1]  # negative stride
    for code in (jpeg, webp):
        p = code(img, 90)
        assert p.decoded.shape == (37, 53, 3)
        assert psnr(img, p.decoded) > 28.0


def test_point_is_frozen_and_compares_without_pixels() -> None:
    p = jpeg(gradient(16, 16), 50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.bytes = 1  # type: ignore[misc]
    twin = dataclasses.replace(p, decoded=np.zeros_like(p.decoded), encode_s=1.0, decode_s=1.0)
    assert twin == p
    assert "decoded" not in repr(p)


def test_quality_tables() -> None:
    for table, lo in ((JPEG_QUALITIES, 1), (WEBP_QUALITIES, 0)):
        assert list(table) == sorted(set(table))
        assert all(isinstance(q, int) and lo <= q <= 100 for q in table)


def test_avif_and_jpeg2000_reach_their_settings():
    from strata.eval.baselines import AVIF_QUALITIES, JPEG2000_BPP, avif, jpeg2000
    from strata.eval.metrics import psnr

    from tests.conftest import synthetic_image

    image = synthetic_image(256, 384, 2)
    try:
        low, high = avif(image, AVIF_QUALITIES[2]), avif(image, AVIF_QUALITIES[-1])
    except RuntimeError as e:
        pytest.skip(str(e))
    assert low.codec == "avif" and low.bpp < high.bpp and psnr(image, low.decoded) < psnr(image, high.decoded)
    rates = [r for r in JPEG2000_BPP if r >= 0.2]  # below, the codestream's own header is a large share
    points = [jpeg2000(image, r) for r in rates]
    for r, p in zip(rates, points, strict=True):
        assert p.codec == "jpeg2000" and p.quality == r and p.bpp <= r * 1.05 + 0.02, (r, p.bpp)  # a rate target
    assert [p.bpp for p in points] == sorted(p.bpp for p in points)
    with pytest.raises(InputError, match="bpp"):
        jpeg2000(image, 0)
    with pytest.raises(InputError, match="quality"):
        avif(image, 101)
