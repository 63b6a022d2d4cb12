"""Tests for codec.baselines_audio: the Opus round trip through opusenc/opusdec subprocesses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from strata.errors import BaselineError, BaselineUnavailableError, InputError
from strata.eval import baselines_audio
from strata.eval.baselines_audio import OpusResult, opus_backend, opus_roundtrip

from tests.conftest import SHARED_DATA

RATE = 22050
SPEECH_TEST = SHARED_DATA / "audio" / "speech" / "test"

needs_opus_tools = pytest.mark.skipif(
    not (shutil.which("opusenc") and shutil.which("opusdec")),
    reason="opusenc/opusdec (opus-tools) not on PATH",
)


def speech_like(seconds: float = 3.0, rate: int = RATE) -> np.ndarray:
    """Harmonics of a gliding 90-160 Hz pitch under a 2.5 Hz syllable envelope, float32 [T]."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 40) if k * 160 < 0.45 * rate)
    x = x * np.sqrt(np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def lag_of_best_match(x: np.ndarray, y: np.ndarray, max_lag: int = 40) -> int:
    """The shift of ``y`` against ``x`` (in samples) with the highest cross-correlation."""
    core = slice(max_lag, len(x) - max_lag)
    scores = [float(np.dot(x[core], np.roll(y, -lag)[core])) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_like()


@needs_opus_tools
@pytest.mark.parametrize("rate", [RATE, 16000, 48000, 44100])
def test_round_trip_keeps_length_and_rate(rate: int) -> None:
    x = speech_like(1.3, rate)[:-7]  # a length that is not a whole number of 20 ms frames
    r = opus_roundtrip(x, rate, 12)
    assert isinstance(r, OpusResult)
    assert (r.backend, r.rate, r.target_kbps, r.mode) == ("opusenc", rate, 12.0, "vbr")
    assert r.samples.shape == x.shape and r.samples.dtype == np.float32
    assert r.seconds == pytest.approx(len(x) / rate)
    assert r.bitrate_kbps == pytest.approx(r.bytes * 8 / r.seconds / 1000)
    assert r.encode_s > 0 and r.decode_s > 0


@needs_opus_tools
def test_bitrate_is_near_the_target(speech: np.ndarray) -> None:
    for kbps in (6, 12, 24):
        r = opus_roundtrip(speech, RATE, kbps)
        # VBR may undershoot on a simple signal; the container adds ~1.1 kB on 3 s (3 kbit/s): 512 bytes of
        # padding, headers, one lacing byte per packet and the Ogg page headers.
        assert 0.6 * kbps < r.bitrate_kbps < 1.1 * kbps + 3.5, (kbps, r.bitrate_kbps)
    cbr = opus_roundtrip(speech, RATE, 12, mode="hard-cbr")
    assert 12 < cbr.bitrate_kbps < 12 + 3.5  # exactly 12 kbit/s of packets, plus the container


@needs_opus_tools
def test_decoded_is_aligned_and_close_at_a_high_rate(speech: np.ndarray) -> None:
    y = opus_roundtrip(speech, RATE, 96).samples
    assert lag_of_best_match(speech, y) == 0  # opusdec removed the pre-skip
    rel_err = np.sqrt(np.mean((y - speech) ** 2) / np.mean(speech**2))
    assert rel_err < 0.2


@needs_opus_tools
def test_same_input_gives_the_same_bytes_and_samples(speech: np.ndarray) -> None:
    a, b = opus_roundtrip(speech, RATE, 8), opus_roundtrip(speech, RATE, 8)
    assert a == b  # bytes, bitrate, mode, backend (samples and timings are not compared by ==)
    np.testing.assert_array_equal(a.samples, b.samples)


@needs_opus_tools
@pytest.mark.skipif(not SPEECH_TEST.is_dir(), reason=f"no speech test split at {SPEECH_TEST}")
def test_higher_target_scores_higher_on_real_speech() -> None:
    pytest.importorskip("pesq")
    from strata.eval.metrics_audio import pesq_wb
    from strata.frontend.audio import read_audio

    clip = read_audio(sorted(SPEECH_TEST.glob("*.flac"))[0].read_bytes(), max_seconds=60)
    x, rate = clip.samples, clip.sample_rate
    low, high = opus_roundtrip(x, rate, 6), opus_roundtrip(x, rate, 16)
    assert high.bitrate_kbps > low.bitrate_kbps
    assert pesq_wb(x, high.samples, rate) > pesq_wb(x, low.samples, rate) + 0.5


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples": np.zeros((2, 100), np.float32)}, "float numpy array"),
        ({"samples": np.zeros(100, np.int16)}, "float numpy array"),
        ({"samples": [0.0] * 100}, "float numpy array"),
        ({"samples": np.zeros(0, np.float32)}, "no samples"),
        ({"samples": np.full(100, np.nan, np.float32)}, "NaN"),
        ({"rate": 0}, "sample rate"),
        ({"rate": 22050.0}, "sample rate"),
        ({"kbps": 5}, "6..256"),
        ({"kbps": 300}, "6..256"),
        ({"kbps": "12"}, "6..256"),
        ({"mode": "abr"}, "rate control"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs: dict, match: str) -> None:
    args = {"samples": np.zeros(2205, np.float32), "rate": RATE, "kbps": 12.0} | kwargs
    with pytest.raises(InputError, match=match):
        opus_roundtrip(**args)


def test_no_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BaselineUnavailableError, match="opus-tools.*ffmpeg built with libopus") as e:
        opus_roundtrip(np.zeros(2205, np.float32), RATE, 12)
    assert e.value.code == "baseline_unavailable"
    with pytest.raises(BaselineUnavailableError, match="ffmpeg built with libopus"):
        opus_backend("ffmpeg")
    with pytest.raises(InputError, match="'opusenc' or 'ffmpeg'"):
        opus_backend("lame")  # type: ignore[arg-type]


@needs_opus_tools
def test_encoder_failure_quotes_its_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "opusenc"
    fake.write_text("#!/bin/sh\necho 'Error: something broke' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(shutil.which('opusdec')).parent}")
    with pytest.raises(BaselineError, match=r"(?s)exit status 3.*something broke") as e:
        opus_roundtrip(np.zeros(2205, np.float32), RATE, 12)
    assert e.value.code == "baseline_failed"


@needs_opus_tools
def test_encoder_timeout_is_a_baseline_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "opusenc"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(shutil.which('opusdec')).parent}")
    with pytest.raises(BaselineError, match="timed out after 0.5 s"):
        opus_roundtrip(np.zeros(2205, np.float32), RATE, 12, timeout=0.5)


@needs_opus_tools
def test_a_short_decode_is_refused(monkeypatch: pytest.MonkeyPatch, speech: np.ndarray) -> None:
    real = baselines_audio.resample
    monkeypatch.setattr(baselines_audio, "resample", lambda x, a, b: real(x, a, b)[: RATE // 2])
    with pytest.raises(BaselineError, match="returned 11025 samples for 66150 input samples"):
        opus_roundtrip(speech, RATE, 12)
