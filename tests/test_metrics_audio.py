"""Tests for codec.metrics_audio: PESQ-WB, STOI, log-mel RMSE, mel distance and log-spectral distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from strata.errors import InputError
from strata.eval.metrics_audio import log_mel_rmse, log_spectral_distance, mel_distance, pesq_wb, stoi
from strata.frontend.audio import log_mel

RATE = 22050
NOISE_LEVELS = (0.001, 0.003, 0.01, 0.03, 0.1)  # white-noise standard deviations, increasing


def speech_like(seconds: float = 3.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A voiced, syllabic stand-in for speech: harmonics of a gliding 90-160 Hz pitch, 2.5 syllables/s."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 40) if k * 160 < 0.45 * rate)
    envelope = np.sqrt(np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None))
    x = x * envelope + 0.01 * np.random.default_rng(seed).standard_normal(t.size) * envelope
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def noisy(x: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    return (x + sigma * np.random.default_rng(seed).standard_normal(x.shape)).astype(np.float32)


def strictly_decreasing(values: list[float]) -> bool:
    return all(a > b for a, b in zip(values, values[1:], strict=False))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_like()


# --------------------------------------------------------------------------- PESQ / STOI


def test_pesq_identical_is_the_maximum(speech: np.ndarray) -> None:
    pytest.importorskip("pesq")
    assert pesq_wb(speech, speech.copy(), RATE) == pytest.approx(4.644, abs=0.01)


def test_stoi_identical_is_one(speech: np.ndarray) -> None:
    pytest.importorskip("pystoi")
    assert stoi(speech, speech.copy(), RATE) == pytest.approx(1.0, abs=1e-6)


def test_pesq_and_stoi_fall_with_noise(speech: np.ndarray) -> None:
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    pesqs = [pesq_wb(speech, noisy(speech, s), RATE) for s in NOISE_LEVELS]
    stois = [stoi(speech, noisy(speech, s), RATE) for s in NOISE_LEVELS]
    assert strictly_decreasing(pesqs), pesqs
    assert strictly_decreasing(stois), stois
    assert pesqs[-1] < 1.5 and stois[-1] < 0.9


def test_pesq_stoi_trim_to_the_common_length_and_are_deterministic(speech: np.ndarray) -> None:
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    deg = noisy(speech, 0.01)
    longer = np.concatenate([deg, np.ones(500, np.float32)])  # extra samples past the reference are ignored
    assert pesq_wb(speech, longer, RATE) == pesq_wb(speech, deg, RATE)
    assert stoi(speech, longer, RATE) == stoi(speech, deg, RATE)
    assert pesq_wb(speech, deg, RATE) == pesq_wb(speech, deg.copy(), RATE)


def test_pesq_at_16k_needs_no_resampling(speech: np.ndarray) -> None:
    pytest.importorskip("pesq")
    from pesq import pesq
    from strata.frontend.audio import resample

    x16 = resample(speech, RATE, 16000)
    y16 = noisy(x16, 0.01)
    assert pesq_wb(x16, y16, 16000) == pytest.approx(pesq(16000, x16, y16, "wb"))


def test_pesq_unscorable_input_is_an_input_error(speech: np.ndarray) -> None:
    pytest.importorskip("pesq")
    silence = np.zeros_like(speech)
    with pytest.raises(InputError, match="reference signal is silent"):
        pesq_wb(silence, speech, RATE)
    with pytest.raises(InputError, match="degraded signal is silent"):
        pesq_wb(speech, silence, RATE)
    short = speech[: RATE // 10]  # pesq: "Buffer needs to be at least 1/4 of a second long"
    with pytest.raises(InputError, match="PESQ cannot score .*1/4 of a second"):
        pesq_wb(short, short, RATE)


def test_stoi_unscorable_input_is_an_input_error(speech: np.ndarray) -> None:
    pytest.importorskip("pystoi")
    with pytest.raises(InputError, match="at least 0.4 s"):
        stoi(speech[: RATE // 4], speech[: RATE // 4], RATE)
    with pytest.raises(InputError, match="silent"):
        stoi(np.zeros(RATE, np.float32), speech[:RATE], RATE)
    quiet = np.zeros(2 * RATE, np.float32)
    quiet[:2000] = speech[:2000]  # 0.09 s of sound, the rest silent: too few frames once silence is dropped
    with pytest.raises(InputError, match="non-silent"):
        stoi(quiet, quiet, RATE)


# --------------------------------------------------------------------------- log-spectral distance


def test_lsd_identical_is_zero_and_grows_with_noise(speech: np.ndarray) -> None:
    assert log_spectral_distance(speech, speech.copy(), RATE) == 0.0
    lsds = [log_spectral_distance(speech, noisy(speech, s), RATE) for s in NOISE_LEVELS]
    assert strictly_decreasing(lsds[::-1]), lsds
    assert all(d > 0 for d in lsds)


def test_lsd_known_value_for_a_gain() -> None:
    x = noisy(np.zeros(8192, np.float32), 0.1)
    # A gain g shifts every bin by 20·log10(g) dB (the 1e-10 floor is far below the noise power).
    assert log_spectral_distance(x, 0.5 * x, 16000) == pytest.approx(20 * math.log10(2), rel=1e-4)


def test_lsd_is_symmetric_and_trims(speech: np.ndarray) -> None:
    deg = noisy(speech, 0.01)
    assert log_spectral_distance(speech, deg, RATE) == pytest.approx(log_spectral_distance(deg, speech, RATE))
    assert log_spectral_distance(speech, deg[:-300], RATE) == log_spectral_distance(speech[:-300], deg[:-300], RATE)


# --------------------------------------------------------------------------- log-mel metrics


def test_mel_metrics_identical_are_zero_and_grow_with_noise(speech: np.ndarray) -> None:
    ref = log_mel(speech)
    assert log_mel_rmse(ref, ref.copy()) == 0.0
    assert mel_distance(ref, ref.copy()) == 0.0
    degs = [log_mel(noisy(speech, s)) for s in NOISE_LEVELS]
    rmses = [log_mel_rmse(ref, d) for d in degs]
    dists = [mel_distance(ref, d) for d in degs]
    assert strictly_decreasing(rmses[::-1]), rmses
    assert strictly_decreasing(dists[::-1]), dists


def test_mel_metrics_known_values() -> None:
    ref = np.zeros((80, 10), np.float32)
    deg = ref.copy()
    deg[:, :5] = 2.0  # half the cells off by 2, half by 0
    assert mel_distance(ref, deg) == pytest.approx(1.0)
    assert log_mel_rmse(ref, deg) == pytest.approx(math.sqrt(2.0))
    assert log_mel_rmse(ref, deg, std=2.0) == pytest.approx(math.sqrt(2.0) / 2)
    std = np.full(80, 2.0)
    std[:40] = 1.0  # per band: 40 bands with Δ 2, 40 with Δ 1 on the changed frames
    assert log_mel_rmse(ref, deg, std=std) == pytest.approx(math.sqrt((0.5 * 4 + 0.5 * 1) / 2))


def test_mel_metrics_trim_to_common_frames() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(80, 50)).astype(np.float32)
    deg = ref + 0.1
    longer = np.concatenate([deg, np.full((80, 7), 99.0, np.float32)], axis=1)
    assert mel_distance(ref, longer) == pytest.approx(0.1)
    assert log_mel_rmse(longer, ref) == pytest.approx(0.1)


# --------------------------------------------------------------------------- validation


BAD_SIGNALS = [
    (np.zeros((2, 1000), np.float32), "float samples"),  # [C, T], not [T]
    (np.zeros(1000, np.int16), "float samples"),
    (np.zeros(0, np.float32), "no samples"),
    (np.full(1000, np.nan, np.float32), "NaN"),
    ([0.0] * 1000, "numpy array"),
]


@pytest.mark.parametrize(("bad", "match"), BAD_SIGNALS)
@pytest.mark.parametrize("metric", ["pesq", "stoi", "lsd"])
def test_bad_signals_are_input_errors(speech: np.ndarray, bad, match: str, metric: str) -> None:
    fn = {"pesq": pesq_wb, "stoi": stoi, "lsd": log_spectral_distance}[metric]
    if metric != "lsd":
        pytest.importorskip({"pesq": "pesq", "stoi": "pystoi"}[metric])
    with pytest.raises(InputError, match=match):
        fn(bad, speech, RATE)
    with pytest.raises(InputError, match=match):
        fn(speech, bad, RATE)


@pytest.mark.parametrize("rate", [0, -16000, 22050.0, True, 10_000_000])
def test_bad_rate_is_an_input_error(speech: np.ndarray, rate) -> None:
    with pytest.raises(InputError, match="sample rate"):
        log_spectral_distance(speech, speech, rate)


def test_lsd_needs_one_frame() -> None:
    x = np.zeros(1000, np.float32)
    with pytest.raises(InputError, match="at least 1024 samples"):
        log_spectral_distance(x, x, RATE)


@pytest.mark.parametrize(
    ("ref", "deg", "match"),
    [
        (np.zeros((80, 10), np.float32), np.zeros((64, 10), np.float32), "differ in bands"),
        (np.zeros((80, 10, 1), np.float32), np.zeros((80, 10), np.float32), r"\[n_mels, frames\]"),
        (np.zeros(80, np.float32), np.zeros((80, 10), np.float32), r"\[n_mels, frames\]"),
        (np.zeros((80, 10), np.int32), np.zeros((80, 10), np.float32), "float log-mel"),
        (np.zeros((80, 0), np.float32), np.zeros((80, 10), np.float32), "empty"),
        (np.full((80, 10), np.inf, np.float32), np.zeros((80, 10), np.float32), "NaN or infinite"),
    ],
)
def test_bad_mels_are_input_errors(ref, deg, match: str) -> None:
    for fn in (log_mel_rmse, mel_distance):
        with pytest.raises(InputError, match=match):
            fn(ref, deg)
        with pytest.raises(InputError, match=match):
            fn(deg, ref)


@pytest.mark.parametrize(
    ("std", "match"), [(0.0, "positive"), (np.full(80, -1.0), "positive"), (np.ones(64), "one per band"), ("x", "std")]
)
def test_bad_std_is_an_input_error(std, match: str) -> None:
    m = np.zeros((80, 10), np.float32)
    with pytest.raises(InputError, match=match):
        log_mel_rmse(m, m, std=std)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, speech: np.ndarray) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pesq", None)  # makes `import pesq` raise ImportError
    monkeypatch.setitem(sys.modules, "pystoi", None)
    with pytest.raises(ModuleNotFoundError, match="audio-eval"):
        pesq_wb(speech, speech, RATE)
    with pytest.raises(ModuleNotFoundError, match="audio-eval"):
        stoi(speech, speech, RATE)
