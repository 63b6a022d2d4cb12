"""Tests for codec.metrics: PSNR, MS-SSIM, Bjøntegaard deltas and curve interpolation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from strata.errors import InputError
from strata.eval.metrics import MS_SSIM_MIN_SIZE, _avg_pool2, bd_psnr, bd_rate, interp_psnr_at, ms_ssim, psnr


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured, edged synthetic ``uint8`` ``[h, w, 3]`` image (stands in for a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 40.0 + 120.0 * (xx / w) + 60.0 * np.sin(yy / 17.0)
    img = np.stack([base, base[::-1, :] * 0.8 + 20.0, 255.0 - base], axis=-1)
    img += gaussian_filter(rng.normal(0.0, 40.0, (h, w, 3)), sigma=(2.0, 2.0, 0.0))
    img[h // 4 : h // 2, w // 3 : w // 2] = (200.0, 30.0, 90.0)  # a hard-edged block
    img += rng.normal(0.0, 3.0, img.shape)  # fine grain
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def add_noise(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noisy = img + np.random.default_rng(seed).normal(0.0, sigma, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- psnr


def test_psnr_known_values() -> None:
    a = np.zeros((4, 5, 3), np.uint8)
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2))  # MSE 1 → 48.13 dB
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255**2 / 100))  # MSE 100 → 28.13 dB
    f = np.zeros((2, 2, 3))
    assert psnr(f, f + 0.1, peak=1.0) == pytest.approx(20.0)


def test_psnr_uint8_does_not_wrap() -> None:
    a = np.full((3, 3, 3), 250, np.uint8)
    b = np.full((3, 3, 3), 5, np.uint8)  # |a - b| = 245, not (5 - 250) % 256 = 11
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 245**2))


def test_psnr_identical_is_inf() -> None:
    a = photo_like(8, 8)
    assert psnr(a, a.copy()) == math.inf


@pytest.mark.parametrize(
    ("a", "b", "kwargs"),
    [
        (np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), {}),
        (np.zeros((0, 4, 3)), np.zeros((0, 4, 3)), {}),
        (np.zeros((4, 4, 3)), np.full((4, 4, 3), np.nan), {}),
        (np.zeros((4, 4, 3)), np.ones((4, 4, 3)), {"peak": 0.0}),
        ([[0.0]], [[1.0]], {}),
    ],
)
def test_psnr_rejects_bad_input(a: np.ndarray, b: np.ndarray, kwargs: dict) -> None:
    with pytest.raises(InputError):
        psnr(a, b, **kwargs)


# --------------------------------------------------------------------------- ms_ssim


def test_ms_ssim_identical_is_one() -> None:
    a = photo_like(200, 240)
    assert ms_ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_decreases_with_noise() -> None:
    a = photo_like(192, 256)
    values = [ms_ssim(a, add_noise(a, s)) for s in (2.0, 10.0, 40.0)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0


def test_ms_ssim_float_range_matches_uint8() -> None:
    a = photo_like(170, 180)
    b = jpeg_roundtrip(a, 20)
    assert ms_ssim(a / 255.0, b / 255.0, data_range=1.0) == pytest.approx(ms_ssim(a, b), abs=1e-12)


def test_ms_ssim_grey_equals_single_channel() -> None:
    a = photo_like(180, 170)[..., 1]
    b = add_noise(a, 8.0)
    assert ms_ssim(a, b) == pytest.approx(ms_ssim(a[..., None], b[..., None]), abs=1e-15)
    assert 0.0 < ms_ssim(a, b) < 1.0


def test_ms_ssim_minimum_size() -> None:
    assert MS_SSIM_MIN_SIZE == 161
    small = photo_like(160, 300)
    with pytest.raises(InputError, match="161"):
        ms_ssim(small, small)
    ok = photo_like(161, 161)
    assert ms_ssim(ok, ok) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.zeros((200, 200, 3)), np.zeros((200, 201, 3))),
        (np.zeros((200, 200, 3, 1)), np.zeros((200, 200, 3, 1))),
        (np.zeros(200), np.zeros(200)),
    ],
)
def test_ms_ssim_rejects_bad_shapes(a: np.ndarray, b: np.ndarray) -> None:
    with pytest.raises(InputError):
        ms_ssim(a, b)


def test_avg_pool2_pads_odd_sides_in_front_with_zeros() -> None:
    x = np.arange(1.0, 4.0)[None, :, None] * np.ones((2, 1, 1))  # [2, 3, 1]: rows [1, 2, 3]
    # W = 3 is odd: windows are (pad, 1) and (2, 3); H = 2 is even; zeros count in the mean.
    np.testing.assert_allclose(_avg_pool2(x)[..., 0], [[(0 + 1 + 0 + 1) / 4, (2 + 3 + 2 + 3) / 4]])


def test_ms_ssim_matches_pytorch_msssim() -> None:
    torch = pytest.importorskip("torch")
    pytorch_msssim = pytest.importorskip("pytorch_msssim")

    def as_tensor(x: np.ndarray) -> object:
        return torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1)[None]

    cases = [
        (photo_like(256, 384, seed=3), lambda im: jpeg_roundtrip(im, 10)),
        (photo_like(203, 257, seed=4), lambda im: add_noise(im, 12.0)),  # odd sides: padded pooling
        (np.random.default_rng(5).integers(0, 256, (161, 170, 3), dtype=np.uint8), lambda im: add_noise(im, 30.0)),
    ]
    for ref, distort in cases:
        dist = distort(ref)
        expected = pytorch_msssim.ms_ssim(as_tensor(ref), as_tensor(dist), data_range=255).item()
        assert ms_ssim(ref, dist) == pytest.approx(expected, abs=1e-4)


# --------------------------------------------------------------------------- BD-rate / BD-PSNR

RATES = [0.12, 0.25, 0.5, 0.9, 1.6]
PSNRS = [26.1, 28.9, 31.5, 33.6, 35.8]


def test_bd_rate_against_itself_is_zero() -> None:
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_halved_and_doubled_rates() -> None:
    half = [r / 2 for r in RATES]
    double = [r * 2 for r in RATES]
    assert bd_rate(RATES, PSNRS, half, PSNRS) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(RATES, PSNRS, double, PSNRS) == pytest.approx(100.0, abs=1e-9)


def test_bd_psnr_shifted_curve() -> None:
    assert bd_psnr(RATES, PSNRS, RATES, [p + 1.0 for p in PSNRS]) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, [p - 0.5 for p in PSNRS]) == pytest.approx(-0.5, abs=1e-9)


def test_bd_rate_on_a_log_linear_curve() -> None:
    # PSNR = 30 + 6 log2(rate): +1 dB at a fixed rate is the same as rate × 2^(-1/6) at a fixed PSNR.
    rates = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    anchor = 30.0 + 6.0 * np.log2(rates)
    assert bd_rate(rates, anchor, rates, anchor + 1.0) == pytest.approx((2 ** (-1 / 6) - 1) * 100, abs=1e-9)
    assert bd_psnr(rates, anchor, rates * 2 ** (-1 / 6), anchor) == pytest.approx(1.0, abs=1e-9)


def test_bd_rate_sorts_points() -> None:
    order = [3, 0, 4, 2, 1]
    shuffled_r = [RATES[i] for i in order]
    shuffled_p = [PSNRS[i] for i in order]
    test_r = [r * 0.8 for r in RATES]
    assert bd_rate(shuffled_r, shuffled_p, test_r, PSNRS) == pytest.approx(bd_rate(RATES, PSNRS, test_r, PSNRS))
    assert bd_rate(RATES, PSNRS, test_r, PSNRS) == pytest.approx(-20.0)


def test_bd_rate_partial_overlap_uses_common_range() -> None:
    # B only covers the upper part of A; in that range it needs 30 % fewer bits (log-linear curves, so
    # PCHIP is exact and the partial range changes nothing).
    rates = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    anchor = 30.0 + 6.0 * np.log2(rates)
    assert bd_rate(rates, anchor, rates[2:] * 0.7, anchor[2:]) == pytest.approx(-30.0, abs=1e-9)
    assert bd_rate(rates[:2], anchor[:2], rates * 0.7, anchor) == pytest.approx(-30.0, abs=1e-9)


@pytest.mark.parametrize(
    ("ra", "pa", "rb", "pb", "match"),
    [
        ([1.0], [30.0], RATES, PSNRS, "at least 2"),
        (RATES, PSNRS, RATES[:3], PSNRS, "rates but"),
        (RATES, PSNRS, [0.1, 0.2], [40.0, 42.0], "do not overlap"),
        (RATES, PSNRS, [0.0, 0.2], [30.0, 32.0], "positive"),
        (RATES, PSNRS, [0.1, 0.2, 0.3], [30.0, 30.0, 32.0], "repeated PSNR"),
        (RATES, PSNRS, ["a", "b"], [30.0, 32.0], "numbers"),
    ],
)
def test_bd_rate_errors(ra: list, pa: list, rb: list, pb: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        bd_rate(ra, pa, rb, pb)


def test_bd_psnr_errors() -> None:
    with pytest.raises(InputError, match="do not overlap"):
        bd_psnr([0.1, 0.2], [30.0, 32.0], [0.5, 1.0], [30.0, 32.0])
    with pytest.raises(InputError, match="repeated rates"):
        bd_psnr(RATES, PSNRS, [0.2, 0.2, 0.5], [30.0, 31.0, 32.0])


# --------------------------------------------------------------------------- interp_psnr_at


def test_interp_psnr_at() -> None:
    rates, psnrs = [1.0, 0.25, 0.5], [32.0, 28.0, 30.0]  # unsorted on purpose
    assert interp_psnr_at(rates, psnrs, 0.5) == pytest.approx(30.0)
    assert interp_psnr_at(rates, psnrs, 0.25) == pytest.approx(28.0)
    assert interp_psnr_at(rates, psnrs, 1.0) == pytest.approx(32.0)
    assert interp_psnr_at(rates, psnrs, math.sqrt(0.125)) == pytest.approx(29.0)  # halfway in log rate
    assert interp_psnr_at(rates, psnrs, 0.5 * 2**0.25) == pytest.approx(30.5)
    assert interp_psnr_at(rates, psnrs, 0.2) is None
    assert interp_psnr_at(rates, psnrs, 1.01) is None


def test_interp_psnr_at_errors() -> None:
    with pytest.raises(InputError):
        interp_psnr_at([], [], 1.0)
    with pytest.raises(InputError):
        interp_psnr_at([0.5, 1.0], [30.0], 0.7)
    with pytest.raises(InputError):
        interp_psnr_at([0.5, 1.0], [30.0, 31.0], 0.0)
    with pytest.raises(InputError, match="repeated rates"):
        interp_psnr_at([0.5, 0.5, 1.0], [30.0, 30.5, 31.0], 0.7)
