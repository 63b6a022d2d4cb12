import time

import numpy as np
import pytest

from codec.errors import InputError
from codec.frontend.audio import MelConfig, log_mel
from codec.vocoder import griffin_lim
from codec.vocoder.griffinlim import mel_to_magnitude

CFG = MelConfig()


def harmonic(seconds: float, rate: int = CFG.sample_rate) -> np.ndarray:
    """A voiced-speech-like test signal: 11 harmonics of a gliding 120–160 Hz pitch under a syllabic envelope."""
    n = int(seconds * rate) // CFG.hop * CFG.hop
    t = np.arange(n) / rate
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.5 * t)) / rate
    envelope = (0.5 + 0.4 * np.sin(2 * np.pi * 2 * t)) ** 2
    return (0.2 * envelope * sum(np.sin(k * phase) / k for k in range(1, 12))).astype(np.float32)


def test_round_trip_mel_is_close():
    x = harmonic(5.0)
    mel = log_mel(x, CFG)
    griffin_lim(mel[:, :8], CFG, n_iter=1)  # warm-up: librosa's lazy imports and caches
    start = time.perf_counter()
    y = griffin_lim(mel, CFG, n_iter=32)
    elapsed = time.perf_counter() - start
    print(f"\nGriffin-Lim, 32 iterations, 5 s of audio: {elapsed:.2f} s ({5.0 / elapsed:.1f}× real time)")
    assert y.dtype == np.float32 and y.shape == (mel.shape[1] * CFG.hop,) == x.shape
    err = np.abs(log_mel(y, CFG) - mel).mean()
    print(f"mean |Δ log-mel| after Griffin-Lim: {err:.3f}")
    assert err < 0.5


def test_output_is_aligned_with_the_input():
    x = harmonic(1.0)
    mel = log_mel(x, CFG)
    y = griffin_lim(mel, CFG, n_iter=16)
    errs = {s: np.abs(log_mel(np.roll(y, s), CFG) - mel)[:, 4:-4].mean() for s in (-128, 0, 128)}
    assert min(errs, key=errs.get) == 0


def test_deterministic():
    mel = log_mel(harmonic(0.5), CFG)
    np.testing.assert_array_equal(griffin_lim(mel, CFG, n_iter=4), griffin_lim(mel, CFG, n_iter=4))
    assert not np.array_equal(griffin_lim(mel, CFG, n_iter=4), griffin_lim(mel, CFG, n_iter=4, seed=1))


def test_magnitude_matches_librosa_inverse():
    from librosa.feature.inverse import mel_to_stft

    mel = log_mel(harmonic(0.3), CFG)
    ref = mel_to_stft(np.exp(mel), sr=CFG.sample_rate, n_fft=CFG.n_fft, power=1.0, fmin=CFG.fmin, fmax=CFG.fmax)
    np.testing.assert_allclose(mel_to_magnitude(mel, CFG), ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((40, 10)), np.zeros((80, 0)), np.full((80, 3), np.nan)])
def test_rejects(bad):
    with pytest.raises(InputError):
        griffin_lim(bad, CFG)
