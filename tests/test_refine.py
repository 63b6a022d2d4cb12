"""Mel-consistency refinement (codec.vocoder.refine): convergence, blocks, limits, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from strata.errors import InputError
from strata.frontend.audio import DEFAULT_MEL, MelConfig, log_mel
from strata.vocoder.refine import MAX_ITERATIONS, frames_for, margin_frames, refine

RATE = DEFAULT_MEL.sample_rate


def _voice(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic sound with a slow pitch wobble and loudness contour, float32."""
    t = np.arange(int(seconds * RATE)) / RATE
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / RATE
    x = sum(np.cos(h * phase) * np.exp(-(((h * f0) - 600) / 500) ** 2) for h in range(1, 40))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t + seed) ** 2)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _frames(x: np.ndarray) -> np.ndarray:
    """``x`` cut to whole hops, as a vocoder gives it."""
    return x[: x.size // DEFAULT_MEL.hop * DEFAULT_MEL.hop]


def _mel_error(y: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(log_mel(y) - target).mean())


def test_frame_count_matches_the_frontend():
    for n in (385, 1000, 1024, 22050, 22050 * 3 + 17):
        assert frames_for(n) == log_mel(np.zeros(n, np.float32)).shape[1]


def test_each_iteration_brings_the_mel_closer():
    """A tilted, buzzing, too-quiet copy of a sound converges on the sound's log-mel, and sounds more like it."""
    ref = _frames(_voice(2.0))
    target = log_mel(ref)
    spec = np.fft.rfft(ref)
    tilt = np.linspace(1.6, 0.3, spec.size)  # +4 dB at 0 Hz down to −10 dB at Nyquist
    y = np.fft.irfft(spec * tilt, n=ref.size).astype(np.float32) * 0.5
    y += 0.01 * np.sin(2 * np.pi * 86.13 * np.arange(y.size) / RATE).astype(np.float32)  # a steady buzz
    errors = [_mel_error(refine(y, target, k), target) for k in (0, 1, 2, 4, 8)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.25 * errors[0]
    err0 = np.sqrt(np.mean((y - ref) ** 2))
    err8 = np.sqrt(np.mean((refine(y, target, 8) - ref) ** 2))
    assert err8 < 0.5 * err0  # phase kept: the waveform itself gets closer, not only its envelope


def test_a_consistent_signal_is_left_alone():
    """A sound refined towards its own log-mel barely moves (it is already a fixed point)."""
    x = _frames(_voice(1.5, seed=1))
    y = refine(x, log_mel(x), 4)
    assert np.abs(y - x).max() < 2e-3 * np.abs(x).max()


@pytest.mark.parametrize(("iterations", "momentum"), [(4, 0.0), (8, 0.9), (10, 0.9)])
def test_silence_asked_for_is_made(iterations, momentum):
    """A sound where the mel says silence is cut below −60 dB: by at least 20 dB an iteration with plain
    projections; with momentum (whose extrapolation puts back part of the previous round) within the
    served counts."""
    x = _frames(_voice(1.0))
    target = log_mel(x)
    quiet = slice(40, 70)  # frames 40..69 silent in the target
    target[:, quiet] = np.log(DEFAULT_MEL.log_floor)
    y = refine(x, target, iterations, momentum=momentum)
    middle = slice(48 * 256, 62 * 256)  # away from the edges of the silent stretch
    assert np.sqrt(np.mean(y[middle] ** 2)) < 1e-3 * np.sqrt(np.mean(x[middle] ** 2))
    assert np.abs(y[: 30 * 256] - x[: 30 * 256]).max() < 0.01  # the rest stays


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_boost_is_bounded(momentum):
    """Faint noise under a loud target is raised by at most max_boost in total, not to the target's level,
    with or without momentum (the bound is counted from the input's own levels)."""
    ref = _frames(_voice(1.0))
    noise = np.random.default_rng(0).standard_normal(ref.size).astype(np.float32) * 1e-5
    for boost in (10.0, 100.0):
        y = refine(noise, log_mel(ref), 10, max_boost=boost, momentum=momentum)
        gain = np.sqrt(np.mean(y**2) / np.mean(noise**2))
        assert 0.3 * boost < gain < 1.5 * boost, (boost, gain)


@pytest.mark.parametrize("iterations", [1, 3, 8])
@pytest.mark.parametrize("block", [1, 7, 40, 10_000])
def test_blocks_equal_one_call(iterations, block):
    """Blocks with margin_frames of context give what one call gives, to the bit (the margin is enough)."""
    x = _frames(_voice(3.1, seed=2))
    noisy = x + np.random.default_rng(1).standard_normal(x.size).astype(np.float32) * 0.02
    target = log_mel(x)
    whole = refine(noisy, target, iterations, block_frames=100_000)
    np.testing.assert_array_equal(refine(noisy, target, iterations, block_frames=block), whole)


def test_a_smaller_margin_would_show():
    """Bit-exact blocks need the whole margin: with a third of it the seams differ (if only by ~1e-5)."""
    import strata.vocoder.refine as r

    x = _frames(_voice(3.0, seed=3))
    noisy = x + np.random.default_rng(2).standard_normal(x.size).astype(np.float32) * 0.02
    target = log_mel(x)
    whole = refine(noisy, target, 4, block_frames=100_000)
    original = r.margin_frames
    try:
        r.margin_frames = lambda iterations, cfg=DEFAULT_MEL: original(iterations, cfg) // 3
        short = refine(noisy, target, 4, block_frames=100)
    finally:
        r.margin_frames = original
    assert np.abs(short - whole).max() > 0
    assert margin_frames(4) == 19


def test_in_place_and_copy_agree():
    x = _frames(_voice(2.0))
    target = log_mel(x * 0.5)
    copy = refine(x, target, 3)
    assert not np.shares_memory(copy, x)
    y = x.copy()
    out = refine(y, target, 3, in_place=True, block_frames=30)
    assert out is y
    np.testing.assert_array_equal(y, copy)


def test_odd_lengths_and_zero_iterations():
    """A length that is not whole hops keeps its tail; zero iterations give the input back as float32."""
    x = _voice(1.0)[: 256 * 50 + 100]
    target = log_mel(x)
    y = refine(x, target, 2)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    z = refine(x.astype(np.float64), target, 0)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z, x)
    assert refine(np.zeros(0, np.float32), np.zeros((80, 0), np.float32), 3).size == 0


def test_numpy_scalars_are_numbers():
    x = _frames(_voice(0.5))
    target = log_mel(x)
    expected = refine(x, target, 2, max_boost=10.0, block_frames=50)
    got = refine(x, target, np.int64(2), max_boost=np.float32(10), block_frames=np.int64(50))
    np.testing.assert_array_equal(got, expected)


def test_silence_in_silence_out():
    x = np.zeros(256 * 20, np.float32)
    y = refine(x, log_mel(x), 8)
    assert np.abs(y).max() < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iterations": -1}, "iterations"),
        ({"iterations": MAX_ITERATIONS + 1}, "iterations"),
        ({"iterations": 1.5}, "iterations"),
        ({"iterations": True}, "iterations"),
        ({"max_boost": 0.5}, "max_boost"),
        ({"max_boost": float("inf")}, "max_boost"),
        ({"max_cut": float("nan")}, "max_cut"),
        ({"block_frames": 0}, "block_frames"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"momentum": True}, "momentum"),
        ({"momentum": float("nan")}, "momentum"),
        ({"audio": np.zeros((2, 2560), np.float32)}, "1-D float"),
        ({"audio": np.zeros(2560, np.int16)}, "1-D float"),
        ({"audio": np.zeros(300, np.float32)}, "more than 384 samples"),
        ({"log_mel": np.zeros((80, 9), np.float32)}, r"\[80, 10\]"),
        ({"log_mel": np.zeros((40, 10), np.float32)}, r"\[80, 10\]"),
        ({"log_mel": np.full((80, 10), np.nan, np.float32)}, "NaN"),
        ({"in_place": True, "audio": np.zeros(2560)}, "in_place"),
        ({"max_boost": 1e39}, "max_boost"),
        ({"audio": np.r_[np.zeros(2000), np.nan, np.zeros(559)].astype(np.float32)}, "NaN"),
        ({"audio": np.r_[np.zeros(2559), 1e300]}, "beyond float32"),
        ({"log_mel": np.full((80, 10), 1e300)}, "beyond float32"),
        ({"cfg": MelConfig(hop=200)}, "multiple of hop"),
        ({"cfg": MelConfig(hop=255)}, "multiple of hop"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    args = {"audio": np.zeros(2560, np.float32), "log_mel": np.zeros((80, 10), np.float32), "iterations": 2}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        refine(args.pop("audio"), args.pop("log_mel"), args.pop("iterations"), **args)


def test_only_the_main_thread_sets_blas_threads():
    """Refinement runs numpy's BLAS on one thread when called from the main thread, and leaves the process-wide
    setting alone from any other thread (two threads entering and leaving one limit could leave it wrong)."""
    import threading

    from strata.vocoder import refine as refine_module
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    seen: dict[str, list[int]] = {}
    real = refine_module._iterate

    def spy(name: str):
        def wrapped(*args, **kwargs):
            seen[name] = blas_threads()
            return real(*args, **kwargs)
        return wrapped

    x = (0.1 * np.sin(np.linspace(0, 3000, 20000))).astype(np.float32)
    mel = log_mel(x * 0.5)
    before = blas_threads()
    if not before:
        pytest.skip("numpy reports no BLAS thread pool")
    try:
        refine_module._iterate = spy("main")
        refine(x, mel, 1)
        refine_module._iterate = spy("worker")
        worker = threading.Thread(target=refine, args=(x, mel, 1))
        worker.start()
        worker.join()
    finally:
        refine_module._iterate = real
    assert seen["main"] == [1] * len(before)
    assert seen["worker"] == before
    assert blas_threads() == before  # restored
