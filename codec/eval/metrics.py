"""Image quality metrics and rate-distortion curve comparisons (numpy + scipy only).

::

    psnr(a, b)                      peak signal-to-noise ratio, dB
    ms_ssim(a, b)                   multi-scale SSIM (Wang, Simoncelli & Bovik, 2003)
    bd_rate(ra, pa, rb, pb)         Bjøntegaard-delta rate of curve B against anchor A, %
    bd_psnr(ra, pa, rb, pb)         Bjøntegaard-delta PSNR of curve B against anchor A, dB
    interp_psnr_at(rates, psnrs, r) PSNR of a curve at one rate (linear in log rate)

``ms_ssim`` follows the widely used ``pytorch_msssim`` implementation step by step
(11-tap Gaussian window with sigma 1.5, "valid" filtering, five scales, 2×2 average
pooling with zero padding on odd sides, relu on the contrast-structure terms and on the
last-scale SSIM, per-channel products averaged over channels), so numbers computed here
can be compared with numbers published with that package.

The Bjøntegaard deltas use the piecewise cubic Hermite ("pchip") variant of the
VCEG/JCT-VC reference: each curve is interpolated with a monotone cubic, both are
integrated over the overlapping interval, and the mean gap is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import correlate1d
from strata.errors import InputError

# MS-SSIM constants (Wang et al. 2003; pytorch_msssim defaults).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WIN_SIZE = 11
MS_SSIM_WIN_SIGMA = 1.5
MS_SSIM_K1 = 0.01
MS_SSIM_K2 = 0.03
#: The short side must exceed (win_size - 1) * 2**(scales - 1) = 160 px.
MS_SSIM_MIN_SIZE = (MS_SSIM_WIN_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1

ArrayLike1D = Sequence[float] | np.ndarray


def _pair_as_float(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two images of one shape and return them as float64 copies."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        raise InputError(f"expected two numpy arrays, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise InputError(f"images are empty: shape {a.shape}")
    for name, x in (("a", a), ("b", b)):
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise InputError(f"image {name} has dtype {x.dtype}; expected an integer or float dtype")
    fa = a.astype(np.float64)
    fb = b.astype(np.float64)
    if not (np.isfinite(fa).all() and np.isfinite(fb).all()):
        raise InputError("images contain NaN or infinite values")
    return fa, fb


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return value


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio between two images, in dB.

    Args:
        a: reference image, ``uint8`` or float, usually ``[H, W, 3]`` (any shape works).
        b: distorted image, same shape as ``a``.
        peak: the largest possible pixel value (255 for 8-bit images, 1.0 for [0, 1] floats).

    Returns:
        ``10 * log10(peak**2 / MSE)`` with the MSE over all elements; ``math.inf`` when the
        images are identical.

    Raises:
        InputError: different shapes, empty or non-numeric arrays, NaN/inf values, or ``peak <= 0``.
    """
    peak = _check_positive("peak", peak)
    fa, fb = _pair_as_float(a, b)
    mse = float(np.mean((fa - fb) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian window ``[size]`` centred on ``size // 2``."""
    coords = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Separable "valid" filtering of ``x`` ``[H, W, C]`` with ``win`` ``[k]`` on both spatial axes.

    Returns ``[H - k + 1, W - k + 1, C]``. Cross-correlation and convolution agree because the
    window is symmetric; the border samples that depend on the boundary mode are cropped away.
    """
    r = win.shape[0] // 2
    y = correlate1d(x, win, axis=0, mode="constant")[r : x.shape[0] - r]
    return correlate1d(y, win, axis=1, mode="constant")[:, r : x.shape[1] - r]


def _ssim_terms(x: np.ndarray, y: np.ndarray, win: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of ``x``, ``y`` ``[H, W, C]``.

    Returns two arrays ``[C]``: (SSIM, CS).
    """
    c1 = (MS_SSIM_K1 * data_range) ** 2
    c2 = (MS_SSIM_K2 * data_range) ** 2
    n = x.shape[2]
    # Filter the five moments in one pass: [H, W, 5C].
    stats = _filter_valid(np.concatenate([x, y, x * x, y * y, x * y], axis=2), win)
    mu1, mu2 = stats[..., :n], stats[..., n : 2 * n]
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = stats[..., 2 * n : 3 * n] - mu1_sq
    sigma2_sq = stats[..., 3 * n : 4 * n] - mu2_sq
    sigma12 = stats[..., 4 * n :] - mu1_mu2
    cs_map = (2.0 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    ssim_map = (2.0 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1) * cs_map
    return ssim_map.mean(axis=(0, 1)), cs_map.mean(axis=(0, 1))


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """2×2 average pooling of ``x`` ``[H, W, C]`` → ``[ceil(H/2), ceil(W/2), C]``.

    Matches ``torch.nn.functional.avg_pool2d(kernel_size=2, padding=(H % 2, W % 2))``: an odd
    side gets one zero sample in front (the one at the back is never reached by a window) and
    the zeros count in the average (``count_include_pad=True``).
    """
    pad = ((x.shape[0] % 2, 0), (x.shape[1] % 2, 0), (0, 0))
    if pad[0][0] or pad[1][0]:
        x = np.pad(x, pad)
    h, w, c = x.shape
    return x.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Multi-scale structural similarity between two images (Wang et al. 2003).

    Computed as ``pytorch_msssim.ms_ssim`` does: for each channel, the product over five
    scales of ``relu(CS_s) ** w_s`` (scales 1-4) and ``relu(SSIM_5) ** w_5``, then the mean
    over channels.

    Args:
        a: reference image ``[H, W, 3]`` (or ``[H, W, C]``, or ``[H, W]`` grey), ``uint8`` or float.
        b: distorted image, same shape as ``a``.
        data_range: the value range of the pixels (255 for 8-bit images, 1.0 for [0, 1] floats).

    Returns:
        MS-SSIM in [0, 1]; 1.0 for identical images.

    Raises:
        InputError: different shapes, a shape other than ``[H, W]``/``[H, W, C]``, a short side
            below ``MS_SSIM_MIN_SIZE`` (161) pixels, NaN/inf values, or ``data_range <= 0``.
    """
    data_range = _check_positive("data_range", data_range)
    if not isinstance(a, np.ndarray) or a.ndim not in (2, 3):
        raise InputError(f"ms_ssim expects images [H, W, C] or [H, W], got shape {getattr(a, 'shape', None)}")
    x, y = _pair_as_float(a, b)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    if min(x.shape[:2]) < MS_SSIM_MIN_SIZE:
        raise InputError(
            f"ms_ssim needs images at least {MS_SSIM_MIN_SIZE}×{MS_SSIM_MIN_SIZE} px "
            f"(4 downsamplings of an {MS_SSIM_WIN_SIZE}-tap window), got {x.shape[0]}×{x.shape[1]}"
        )
    win = _gaussian_window(MS_SSIM_WIN_SIZE, MS_SSIM_WIN_SIGMA)
    weights = np.asarray(MS_SSIM_WEIGHTS)
    levels = len(weights)
    factors = []  # per level: [C]
    for level in range(levels):
        ssim_c, cs_c = _ssim_terms(x, y, win, data_range)
        if level < levels - 1:
            factors.append(np.maximum(cs_c, 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
        else:
            factors.append(np.maximum(ssim_c, 0.0))
    per_channel = np.prod(np.stack(factors) ** weights[:, None], axis=0)  # [C]
    return float(per_channel.mean())


def _curve(name: str, rates: ArrayLike1D, psnrs: ArrayLike1D, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one rate-distortion curve; return float64 ``rates``, ``psnrs`` ``[N]``."""
    try:
        r = np.asarray(rates, dtype=np.float64)
        p = np.asarray(psnrs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: rates and PSNRs must be numbers ({exc})") from None
    if r.ndim != 1 or p.ndim != 1:
        raise InputError(f"{name}: rates and PSNRs must be 1-D sequences, got shapes {r.shape} and {p.shape}")
    if r.shape != p.shape:
        raise InputError(f"{name}: {r.size} rates but {p.size} PSNR values")
    if r.size < min_points:
        raise InputError(f"{name}: need at least {min_points} points, got {r.size}")
    if not (np.isfinite(r).all() and np.isfinite(p).all()):
        raise InputError(f"{name}: rates and PSNRs must be finite")
    if (r <= 0).any():
        raise InputError(f"{name}: rates must be positive, got {r.tolist()}")
    return r, p


def _pchip_mean(x: np.ndarray, y: np.ndarray, lo: float, hi: float, name: str, what: str) -> float:
    """Mean over ``[lo, hi]`` of the PCHIP interpolant of ``y`` ``[N]`` against ``x`` ``[N]``.

    ``what`` names ``x`` in the error raised when two points share an abscissa.
    """
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    if (np.diff(xs) == 0).any():
        raise InputError(f"{name}: repeated {what} {xs[:-1][np.diff(xs) == 0].tolist()}; each point needs its own")
    return float(PchipInterpolator(xs, ys).integrate(lo, hi)) / (hi - lo)


def _overlap(xa: np.ndarray, xb: np.ndarray, what: str) -> tuple[float, float]:
    lo = max(float(xa.min()), float(xb.min()))
    hi = min(float(xa.max()), float(xb.max()))
    if not hi > lo:
        raise InputError(
            f"the {what} ranges do not overlap: anchor [{xa.min():g}, {xa.max():g}], test [{xb.min():g}, {xb.max():g}]"
        )
    return lo, hi


def bd_rate(rate_a: ArrayLike1D, psnr_a: ArrayLike1D, rate_b: ArrayLike1D, psnr_b: ArrayLike1D) -> float:
    """Bjøntegaard-delta rate of curve B (test) against curve A (anchor), in percent.

    ``log(rate)`` is interpolated as a function of PSNR with a monotone piecewise cubic
    (PCHIP) for each curve; both are integrated over the overlapping PSNR range and the mean
    gap ``d`` gives ``(exp(d) - 1) * 100``. Negative means B needs fewer bits for the same
    quality (-50 means half the bits).

    Args:
        rate_a, psnr_a: anchor curve, ``[N]`` rates (any positive unit: bpp, bytes, kbps) and PSNRs.
        rate_b, psnr_b: test curve, ``[M]`` rates in the same unit and PSNRs.

    Raises:
        InputError: fewer than 2 points on a curve, mismatched lengths, non-positive rates,
            repeated PSNR values within a curve, or PSNR ranges that do not overlap.
    """
    ra, pa = _curve("anchor", rate_a, psnr_a, 2)
    rb, pb = _curve("test", rate_b, psnr_b, 2)
    lo, hi = _overlap(pa, pb, "PSNR")
    mean_a = _pchip_mean(pa, np.log(ra), lo, hi, "anchor", "PSNR values")
    mean_b = _pchip_mean(pb, np.log(rb), lo, hi, "test", "PSNR values")
    return (math.exp(mean_b - mean_a) - 1.0) * 100.0


def bd_psnr(rate_a: ArrayLike1D, psnr_a: ArrayLike1D, rate_b: ArrayLike1D, psnr_b: ArrayLike1D) -> float:
    """Bjøntegaard-delta PSNR of curve B (test) against curve A (anchor), in dB.

    PSNR is interpolated as a function of ``log(rate)`` with PCHIP for each curve; the mean
    gap over the overlapping log-rate range is returned. Positive means B is better.

    Args:
        rate_a, psnr_a: anchor curve, ``[N]`` rates and PSNRs.
        rate_b, psnr_b: test curve, ``[M]`` rates in the same unit and PSNRs.

    Raises:
        InputError: fewer than 2 points on a curve, mismatched lengths, non-positive rates,
            repeated rates within a curve, or rate ranges that do not overlap.
    """
    ra, pa = _curve("anchor", rate_a, psnr_a, 2)
    rb, pb = _curve("test", rate_b, psnr_b, 2)
    lo, hi = _overlap(ra, rb, "rate")
    la, lb, lo, hi = np.log(ra), np.log(rb), math.log(lo), math.log(hi)
    return _pchip_mean(lb, pb, lo, hi, "test", "rates") - _pchip_mean(la, pa, lo, hi, "anchor", "rates")


def interp_psnr_at(rates: ArrayLike1D, psnrs: ArrayLike1D, rate: float) -> float | None:
    """PSNR of a rate-distortion curve at ``rate``, linear in ``log(rate)`` between neighbours.

    Args:
        rates: ``[N]`` positive rates of the curve (any order; sorted internally).
        psnrs: ``[N]`` PSNR values matching ``rates``.
        rate: the rate to read the curve at, in the same unit.

    Returns:
        The interpolated PSNR, or ``None`` when ``rate`` lies outside ``[min(rates), max(rates)]``.

    Raises:
        InputError: an empty curve, mismatched lengths, non-positive rates, repeated rates,
            or a non-positive ``rate``.
    """
    r, p = _curve("curve", rates, psnrs, 1)
    rate = _check_positive("rate", rate)
    order = np.argsort(r, kind="stable")
    r, p = r[order], p[order]
    if (np.diff(r) == 0).any():
        raise InputError(f"curve: repeated rates {r[:-1][np.diff(r) == 0].tolist()}")
    if rate < r[0] or rate > r[-1]:
        return None
    return float(np.interp(math.log(rate), np.log(r), p))


__all__ = [
    "MS_SSIM_MIN_SIZE",
    "MS_SSIM_WEIGHTS",
    "bd_psnr",
    "bd_rate",
    "interp_psnr_at",
    "ms_ssim",
    "psnr",
]
