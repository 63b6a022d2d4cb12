import subprocess
import sys
import time

import numpy as np
import pytest
from strata.errors import InputError
from strata.frontend.audio import MelConfig, hann_window, log_mel
from strata.vocoder import griffin_lim
from strata.vocoder.griffinlim import mel_to_magnitude

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
    griffin_lim(mel[:, :8], CFG, n_iter=1)  # warm-up: filterbank caches
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


def chirp_and_harmonics(seconds: float = 2.0, rate: int = CFG.sample_rate) -> np.ndarray:
    """A 100 Hz → 3 kHz linear chirp over 9 harmonics of a wobbling 150 Hz pitch, amplitude-modulated at 3 Hz."""
    n = int(seconds * rate) // CFG.hop * CFG.hop
    t = np.arange(n) / rate
    chirp = np.sin(2 * np.pi * (100 * t + (3000 - 100) / (2 * seconds) * t**2))
    phase = 2 * np.pi * np.cumsum(150 + 30 * np.sin(2 * np.pi * 1.5 * t)) / rate
    x = (0.3 * chirp + 0.4 * sum(np.sin(k * phase) / k for k in range(1, 10))) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def spectral_convergence(y: np.ndarray, target: np.ndarray, cfg: MelConfig = CFG) -> float:
    """``‖ |STFT(y)| − target ‖_F / ‖target‖_F`` with ``log_mel``'s framing (reflect pad, ``center=False``)."""
    padded = np.pad(y.astype(np.float64), (cfg.pad, cfg.pad), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop]
    mag = np.abs(np.fft.rfft(frames * hann_window(cfg.win, cfg.n_fft), axis=-1)).T
    return float(np.linalg.norm(mag - target) / np.linalg.norm(target))


def test_converges_like_librosa():
    librosa = pytest.importorskip("librosa")
    mel = log_mel(chirp_and_harmonics(), CFG)
    target = mel_to_magnitude(mel, CFG)
    ref = librosa.griffinlim(
        target,
        n_iter=32,
        hop_length=CFG.hop,
        win_length=CFG.win,
        n_fft=CFG.n_fft,
        window="hann",
        center=False,
        init="random",
        random_state=0,
    )[CFG.pad : CFG.pad + mel.shape[1] * CFG.hop]
    y = griffin_lim(mel, CFG, n_iter=32, seed=0)
    ours, theirs = spectral_convergence(y, target), spectral_convergence(ref, target)
    print(f"\nspectral convergence after 32 iterations: numpy {ours:.5f}, librosa {theirs:.5f}")
    assert ours <= 1.1 * theirs
    assert spectral_convergence(griffin_lim(mel, CFG, n_iter=1), target) > ours  # the iterations do something


@pytest.mark.parametrize(
    "cfg",
    [MelConfig(hop=300, win=800), MelConfig(sample_rate=16000, n_fft=512, hop=160, win=400, n_mels=64, fmax=7600.0)],
)
def test_other_framings(cfg):
    """A hop that does not divide ``n_fft`` and a window shorter than it: length, dtype and the round trip hold."""
    n = 16000 // cfg.hop * cfg.hop
    x = chirp_and_harmonics(n / cfg.sample_rate, cfg.sample_rate)[:n]
    mel = log_mel(x, cfg)
    y = griffin_lim(mel, cfg, n_iter=16)
    assert y.dtype == np.float32 and y.shape == (mel.shape[1] * cfg.hop,)
    assert np.abs(log_mel(y, cfg) - mel).mean() < 0.5


def test_serving_path_needs_no_librosa():
    """Filterbank, log-mel, magnitude and Griffin-Lim in a fresh interpreter where ``import librosa`` fails."""
    code = (
        "import sys; sys.modules['librosa'] = None\n"
        "import numpy as np\n"
        "from strata.frontend.audio import log_mel\n"
        "from strata.vocoder.griffinlim import griffin_lim, mel_to_magnitude\n"
        "m = log_mel(np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 0.1)\n"
        "assert mel_to_magnitude(m).shape == (513, 16)\n"
        "assert griffin_lim(m, n_iter=2).shape == (4096,)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_magnitude_matches_librosa_inverse():
    inverse = pytest.importorskip("librosa.feature.inverse")
    mel_to_stft = inverse.mel_to_stft

    mel = log_mel(harmonic(0.3), CFG)
    ref = mel_to_stft(np.exp(mel), sr=CFG.sample_rate, n_fft=CFG.n_fft, power=1.0, fmin=CFG.fmin, fmax=CFG.fmax)
    np.testing.assert_allclose(mel_to_magnitude(mel, CFG), ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((40, 10)), np.zeros((80, 0)), np.full((80, 3), np.nan)])
def test_rejects(bad):
    with pytest.raises(InputError):
        griffin_lim(bad, CFG)
