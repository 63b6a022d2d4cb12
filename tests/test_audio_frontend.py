import io
import struct

import numpy as np
import pytest
import soundfile as sf
from strata.errors import InputError, LimitExceededError, UnsupportedMediaError
from strata.frontend.audio import MelConfig, log_mel, mel_filterbank, read_audio, resample, write_wav

CFG = MelConfig()


def encode(samples: np.ndarray, rate: int = 22050, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def pcm_wav(rate: int, channels: int = 1, frames: int = 100) -> bytes:
    """A 16-bit PCM WAV written by hand, so the header can say anything."""
    data = np.zeros(frames * channels, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.2).astype(np.float32)


# --- log-mel ---------------------------------------------------------------------------------------------------


def test_log_mel_matches_torch_twin():
    torch = pytest.importorskip("torch")
    from strata.train.nets.mel import log_mel_torch

    x = noise((2, 6000))
    ref = log_mel_torch(torch.from_numpy(x), CFG).numpy()
    out = log_mel(x, CFG)
    assert out.shape == ref.shape == (2, CFG.n_mels, CFG.frames(6000))
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_log_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")

    x = noise((5000,), seed=1)
    padded = np.pad(x, (CFG.pad, CFG.pad), mode="reflect")
    spec = librosa.stft(padded, n_fft=CFG.n_fft, hop_length=CFG.hop, win_length=CFG.win, window="hann", center=False)
    mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    fb = librosa.filters.mel(sr=CFG.sample_rate, n_fft=CFG.n_fft, n_mels=CFG.n_mels, fmin=CFG.fmin, fmax=CFG.fmax)
    ref = np.log(np.maximum(fb @ mag, 1e-5))
    np.testing.assert_allclose(log_mel(x, CFG), ref, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(mel_filterbank(CFG), fb)


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        MelConfig(fmax=11025.0),  # Nyquist mel of the reference loss
        MelConfig(sample_rate=16000, n_fft=512, hop=160, win=400, n_mels=64, fmin=50.0, fmax=7600.0),
        MelConfig(sample_rate=44100, n_fft=2048, hop=512, win=2048, n_mels=128, fmin=20.0, fmax=22050.0),
        MelConfig(fmin=1200.0, fmax=8000.0),  # every edge in the log part of the mel scale
    ],
)
def test_mel_filterbank_matches_librosa(cfg):
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    fb = mel_filterbank(cfg)
    assert fb.dtype == np.float32 and fb.shape == (cfg.n_mels, cfg.n_fft // 2 + 1) and not fb.flags.writeable
    np.testing.assert_allclose(fb, ref, atol=1e-6, rtol=0)
    assert mel_filterbank(cfg) is fb  # cached


@pytest.mark.parametrize("n", [CFG.pad + 1, 1000, 2560, 2561, 2815, 22050])
def test_frame_count(n):
    frames = log_mel(noise((n,)), CFG).shape[-1]
    assert frames == (n + 2 * CFG.pad - CFG.n_fft) // CFG.hop + 1 == CFG.frames(n)
    if n % CFG.hop == 0:
        assert frames == n // CFG.hop


def test_batch_equals_single_and_dtype():
    x = noise((3, 3000), seed=2)
    batch = log_mel(x, CFG)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(batch[1], log_mel(x[1], CFG), atol=1e-6)
    assert log_mel(np.zeros(3000, np.float32), CFG).min() == pytest.approx(np.log(CFG.log_floor))


@pytest.mark.parametrize("bad", [np.zeros(CFG.pad, np.float32), np.zeros(2000, np.int16), np.zeros((1, 1, 2000))])
def test_log_mel_rejects(bad):
    with pytest.raises(InputError):
        log_mel(bad, CFG)


def test_mel_config_validation():
    with pytest.raises(InputError, match="fmax"):
        MelConfig(fmax=20000)
    with pytest.raises(InputError, match="hop"):
        MelConfig(hop=2048)
    assert MelConfig(fmax=11025).fmax == 11025  # Nyquist mel of the reference loss


# --- read_audio ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "subtype", "atol"),
    [("WAV", "PCM_16", 1 / 32768), ("WAV", "FLOAT", 0.0), ("FLAC", "PCM_16", 1 / 32768), ("FLAC", "PCM_24", 1e-6)],
)
def test_reads_mono(fmt, subtype, atol):
    x = noise((4000,), seed=3)
    audio = read_audio(encode(x, 16000, fmt, subtype), max_seconds=10)
    assert audio.sample_rate == 16000 and audio.samples.dtype == np.float32 and audio.samples.shape == (4000,)
    np.testing.assert_allclose(audio.samples, x, atol=atol + 1e-7)
    assert audio.seconds == pytest.approx(0.25)


def test_stereo_is_averaged():
    left, right = noise((3000,), seed=4), noise((3000,), seed=5)
    audio = read_audio(encode(np.stack([left, right], axis=1), 44100, "WAV", "FLOAT"), max_seconds=10)
    np.testing.assert_allclose(audio.samples, (left + right) / 2, atol=1e-7)


def test_float_wav_is_clipped():
    audio = read_audio(encode(np.array([0.5, 1.5, -3.0] * 100, np.float32), 22050, "WAV", "FLOAT"), max_seconds=1)
    assert audio.samples.max() == 1.0 and audio.samples.min() == -1.0


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_reads_ogg(subtype):
    if subtype not in sf.available_subtypes("OGG"):
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no OGG {subtype}")
    rate = 48000 if subtype == "OPUS" else 22050
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    audio = read_audio(encode(x, rate, "OGG", subtype), max_seconds=10)
    assert audio.sample_rate == rate and abs(len(audio.samples) - rate) < rate // 10


def test_resample_keeps_frequency():
    t = np.arange(44100) / 44100
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = resample(x, 44100, 22050)
    assert y.dtype == np.float32 and len(y) == 22050
    peak_hz = np.argmax(np.abs(np.fft.rfft(y * np.hanning(len(y))))) * 22050 / len(y)
    assert peak_hz == pytest.approx(1000, abs=1.5)
    np.testing.assert_array_equal(resample(x, 44100, 44100), x)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 96000])
@pytest.mark.parametrize("frames", [1000, 65536, 200_001])  # under, at and across the 65 536-frame read block
def test_read_audio_resamples_block_by_block_as_resample_does(rate, frames):
    data = encode(noise((frames, 3), seed=frames), rate, "WAV", "FLOAT")
    whole = read_audio(data, max_seconds=60)
    audio = read_audio(data, max_seconds=60, rate=22050)
    assert audio.sample_rate == 22050
    np.testing.assert_array_equal(audio.samples, resample(whole.samples, rate, 22050))


def test_read_audio_too_short_to_resample():
    with pytest.raises(InputError, match="too short: 1 samples at 384000 Hz"):
        read_audio(encode(noise((1,)), 384000, "WAV", "FLOAT"), max_seconds=1, rate=22050)
    with pytest.raises(InputError, match="positive"):
        read_audio(encode(noise((100,)), 22050, "WAV", "FLOAT"), max_seconds=1, rate=0)


def test_resample_rejects():
    with pytest.raises(InputError):
        resample(np.zeros(10, np.float32), 0)
    with pytest.raises(InputError):
        resample(np.zeros((2, 10), np.float32), 44100)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"", UnsupportedMediaError, "empty"),
        (b"this is not a sound at all" * 10, UnsupportedMediaError, "not a decodable"),
        (b"\x00" * 1000, UnsupportedMediaError, "not a decodable"),
        (pcm_wav(22050)[:30], UnsupportedMediaError, "not a decodable"),  # header cut before the data chunk
        (pcm_wav(0), UnsupportedMediaError, "not a decodable"),
        (pcm_wav(500), UnsupportedMediaError, "500 Hz"),
        (pcm_wav(500_000), UnsupportedMediaError, "500000 Hz"),
        (pcm_wav(22050, channels=33), UnsupportedMediaError, "33 channels"),
        (pcm_wav(22050, frames=0), InputError, "no samples"),
        (pcm_wav(8000, frames=8001), LimitExceededError, "1.00 s"),
    ],
)
def test_bad_input(data, error, match):
    with pytest.raises(error, match=match):
        read_audio(data, max_seconds=1.0)


def test_channel_limit_is_configurable():
    stereo = encode(noise((100, 2)), 22050)
    with pytest.raises(UnsupportedMediaError, match="at most 1"):
        read_audio(stereo, max_seconds=1, max_channels=1)


def test_non_finite_samples():
    x = noise((500,))
    x[10] = np.nan
    with pytest.raises(InputError, match="NaN"):
        read_audio(encode(x, 22050, "WAV", "FLOAT"), max_seconds=1)
    x[10] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        read_audio(encode(x, 22050, "WAV", "FLOAT"), max_seconds=1)


def test_other_formats_are_refused():
    with pytest.raises(UnsupportedMediaError, match="AIFF is not accepted"):
        read_audio(encode(noise((500,)), 22050, "AIFF"), max_seconds=1)


def test_truncated_flac_is_an_input_error():
    data = encode(noise((22050,)), 22050, "FLAC")
    for cut in (20, 100, len(data) // 2):
        try:
            audio = read_audio(data[:cut], max_seconds=2)
        except InputError:
            continue
        assert 0 < len(audio.samples) <= 22050


def test_write_wav_is_16_bit_pcm_and_reads_back():
    x = np.sin(np.linspace(0, 300, 5000)).astype(np.float32) * 1.5  # clipped to [-1, 1]
    data = write_wav(x, 22050)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == ("WAV", "PCM_16", 22050, 1, 5000)
    back = read_audio(data, 600)
    assert back.sample_rate == 22050
    np.testing.assert_allclose(back.samples, np.clip(x, -1, 1), atol=1 / 32767)
    assert write_wav(x, 22050) == data  # deterministic bytes
    with pytest.raises(InputError):
        write_wav(np.zeros((2, 10), np.float32), 22050)
