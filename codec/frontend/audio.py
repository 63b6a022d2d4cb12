"""Audio frontend: bytes → mono float ``[T]`` → 22 050 Hz → log-mel ``[n_mels, frames]``.

::

    WAV/FLAC/OGG bytes ─►─┤ read_audio ├─►─ [T] @ rate ─►─┤ resample ├─►─ [T'] @ 22 050 ─►─┤ log_mel ├─►─ [80, T'/256]
    decoded [T] ─►─┤ write_wav ├─►─ 16-bit PCM WAV bytes

Accepts WAV (incl. WAVE_FORMAT_EXTENSIBLE), FLAC and OGG (Vorbis, Opus) through
libsndfile. Channels are averaged to mono, block by block as the file is decoded (and
resampled on the way when asked), so a small compressed file cannot expand to a many-channel,
high-rate float array. Frames, rate and channel count are read from the header and checked
against the limits before any sample is decoded.

The log-mel is HiFi-GAN's (``meldataset.mel_spectrogram``), in numpy only so that
serving needs neither torch nor librosa: reflect padding of ``(n_fft - hop) / 2`` on
both sides, ``center=False`` frames, periodic Hann window, magnitude
``sqrt(re² + im² + 1e-9)``, librosa's Slaney mel filterbank (rebuilt here, equal to
``librosa.filters.mel``), ``log(clamp(mel, 1e-5))``. ``strata.train.nets.mel`` is its torch
twin for the training losses; the two agree to 1e-4.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from strata.errors import InputError, LimitExceededError, UnsupportedMediaError

FORMATS = ("WAV", "WAVEX", "FLAC", "OGG")  # libsndfile major formats accepted by read_audio
MIN_RATE, MAX_RATE = 1000, 384_000  # plausible sample rates (Hz)
_CHUNK_FRAMES = 2048  # STFT frames per block in log_mel (bounds memory on long inputs)
_RESAMPLE_QUALITY = "VHQ"  # soxr quality of resample() and of read_audio's streaming resampler: same samples
_READ_FRAMES = 1 << 16  # frames per block decoded by read_audio (bounds memory on many channels / high rates)


@dataclass(frozen=True)
class MelConfig:
    """Log-mel analysis settings (HiFi-GAN's, LJSpeech V1–V3)."""

    sample_rate: int = 22050  # Hz
    n_fft: int = 1024  # FFT size (samples)
    hop: int = 256  # frame hop (samples); one mel frame = ``hop`` output samples of the vocoder
    win: int = 1024  # Hann window length (≤ n_fft; centred in the FFT frame when shorter)
    n_mels: int = 80  # mel bands
    fmin: float = 0.0  # lowest filter edge (Hz)
    fmax: float = 8000.0  # highest filter edge (Hz)
    log_floor: float = 1e-5  # mel magnitudes are clamped to this before the log

    def __post_init__(self) -> None:
        if not 0 < self.hop <= self.n_fft or not 0 < self.win <= self.n_fft:
            raise InputError(f"need 0 < hop ≤ n_fft and 0 < win ≤ n_fft, got hop {self.hop}, win {self.win}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise InputError(f"need 0 ≤ fmin < fmax ≤ sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.n_mels < 1 or self.log_floor <= 0:
            raise InputError(f"need n_mels ≥ 1 and log_floor > 0, got {self.n_mels}, {self.log_floor}")

    @property
    def pad(self) -> int:
        """Reflect padding on each side of the signal before framing."""
        return (self.n_fft - self.hop) // 2

    def frames(self, n_samples: int) -> int:
        """Mel frames for ``n_samples`` samples: ``(T + 2·pad − n_fft) // hop + 1`` (= ``T // hop`` by default)."""
        return (n_samples + 2 * self.pad - self.n_fft) // self.hop + 1


DEFAULT_MEL = MelConfig()


@dataclass(frozen=True)
class Audio:
    """Decoded sound: mono float32 samples ``[T]`` in [-1, 1] at the file's own rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def read_audio(data: bytes, max_seconds: float, max_channels: int = 32, rate: int | None = None) -> Audio:
    """Decode WAV/FLAC/OGG bytes to mono float32 ``[T]`` (channels averaged, clipped to [-1, 1]).

    With ``rate`` the samples are also resampled to ``rate`` Hz (as :func:`resample` does, to the
    same samples) while they are decoded. The file is decoded in blocks of :data:`_READ_FRAMES`
    frames, each averaged to mono (and resampled) before the next is read, so the memory held is
    the mono result plus one block, whatever the channel count and sample rate: a FLAC file of a
    few MB holding 10 minutes of 8-channel 384 kHz silence would otherwise decode to 7 GB of
    float32 at once.

    Raises ``UnsupportedMediaError`` for anything that is not a readable sound in an
    accepted format or has an implausible rate or channel count, ``LimitExceededError``
    for more than ``max_seconds``, ``InputError`` for an empty sound (or one too short to leave
    a sample at ``rate``) or NaN/inf samples.
    """
    if not data:
        raise UnsupportedMediaError("empty audio body")
    if rate is not None and rate <= 0:
        raise InputError(f"sample rates must be positive, got {rate}")
    parts: list[np.ndarray] = []
    frames = 0
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_header(f.format, f.samplerate, f.channels, f.frames, max_seconds, max_channels)
            source = f.samplerate
            target = source if rate is None else rate
            stream = None
            if target != source:
                stream = soxr.ResampleStream(source, target, 1, "float32", quality=_RESAMPLE_QUALITY)
            for block in f.blocks(_READ_FRAMES, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise InputError("the sound contains NaN or infinite samples")
                mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
                mono = np.clip(mono, -1.0, 1.0)
                frames += mono.size
                parts.append(mono if stream is None else stream.resample_chunk(mono))
            if stream is not None and frames:
                parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as e:
        if isinstance(e, InputError):
            raise
        reason = getattr(e, "error_string", None) or str(e)  # libsndfile's message, without the BytesIO repr
        raise UnsupportedMediaError(f"not a decodable WAV, FLAC or OGG sound ({len(data)} bytes): {reason}") from None
    if frames == 0:
        raise InputError("the sound has no samples")
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    if samples.size == 0:
        raise InputError(f"the sound is too short: {frames} samples at {source} Hz leave none at {target} Hz")
    return Audio(samples, target)


def _check_header(fmt: str, rate: int, channels: int, frames: int, max_seconds: float, max_channels: int) -> None:
    if fmt not in FORMATS:
        raise UnsupportedMediaError(f"audio format {fmt} is not accepted; use one of {', '.join(FORMATS)}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise UnsupportedMediaError(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if not 1 <= channels <= max_channels:
        raise UnsupportedMediaError(f"{channels} channels; at most {max_channels} are accepted")
    if frames <= 0:
        raise InputError("the sound has no samples")
    if frames > max_seconds * rate:
        raise LimitExceededError(f"sound of {frames / rate:.2f} s is over the limit of {max_seconds:g} s")


def write_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of mono float ``[T]`` samples (clipped to [-1, 1])."""
    x = np.asarray(samples)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"samples must be mono float [T], got {x.dtype} {x.shape}")
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), int(sample_rate), format="WAV", subtype="PCM_16")
    return buf.getvalue()


def wav_header(frames: int, sample_rate: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV of ``frames`` samples, as :func:`write_wav` writes it."""
    if not 0 <= frames <= (0xFFFFFFFF - 36) // 2:
        raise InputError(f"a WAV holds at most {(0xFFFFFFFF - 36) // 2} samples, got {frames}")
    data = 2 * frames
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate,
            2 * sample_rate, 2, 16) + b"data" + struct.pack("<I", data))


def pcm16(samples: np.ndarray) -> bytes:
    """Little-endian 16-bit PCM of mono float ``[T]`` samples clipped to [-1, 1]: :func:`write_wav`'s data.

    libsndfile converts, as for :func:`write_wav`, so a WAV sent in pieces (header, then the PCM of each
    piece) has the bytes of the one written at once.
    """
    x = np.asarray(samples)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"samples must be mono float [T], got {x.dtype} {x.shape}")
    if x.size == 0:
        return b""
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), 22050, format="RAW", subtype="PCM_16", endian="LITTLE")
    return buf.getvalue()


def resample(samples: np.ndarray, rate: int, target: int = 22050) -> np.ndarray:
    """Resample float ``[T]`` from ``rate`` to ``target`` Hz with soxr (VHQ); identity if equal."""
    if rate <= 0 or target <= 0:
        raise InputError(f"sample rates must be positive, got {rate} → {target}")
    if samples.ndim != 1:
        raise InputError(f"samples must be [T], got shape {samples.shape}")
    x = np.asarray(samples, dtype=np.float32)
    if rate == target:
        return x
    return soxr.resample(x, rate, target, quality=_RESAMPLE_QUALITY).astype(np.float32, copy=False)


# Slaney's mel scale (Auditory Toolbox, librosa's ``htk=False``): linear below 1 kHz, logarithmic above.
_MEL_HZ_PER_MEL = 200.0 / 3  # linear part: 66.7 Hz per mel
_MEL_LOG_HZ = 1000.0  # start of the log part (Hz)
_MEL_LOG_MEL = _MEL_LOG_HZ / _MEL_HZ_PER_MEL  # = 15 mels
_MEL_LOG_STEP = np.log(6.4) / 27.0  # log part: ln(Hz ratio) per mel


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MEL_LOG_MEL + np.log(np.maximum(hz, _MEL_LOG_HZ) / _MEL_LOG_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_LOG_HZ, log_part, hz / _MEL_HZ_PER_MEL)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MEL_LOG_HZ * np.exp(_MEL_LOG_STEP * (np.maximum(mel, _MEL_LOG_MEL) - _MEL_LOG_MEL))
    return np.where(mel >= _MEL_LOG_MEL, log_part, mel * _MEL_HZ_PER_MEL)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Slaney mel filterbank ``[n_mels, n_fft/2 + 1]`` float32 (read-only, cached per config).

    Triangles between ``n_mels + 2`` points evenly spaced on Slaney's mel scale from
    ``fmin`` to ``fmax``, evaluated at the FFT bin frequencies, each scaled by
    ``2 / (hz[i+2] − hz[i])`` (Slaney's equal-area normalisation). This is
    ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (``htk=False, norm="slaney"``)
    without librosa, bit for bit: the triangles are rounded to float32 before the
    scaling as librosa does (the rest is float64).
    """
    bin_hz = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)  # [n_fft/2 + 1]
    hz = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))  # [n_mels + 2]
    rising = (bin_hz - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]  # [n_mels, bins]
    falling = (hz[2:, None] - bin_hz) / (hz[2:] - hz[1:-1])[:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    fb = (triangles * (2.0 / (hz[2:] - hz[:-2]))[:, None]).astype(np.float32)
    fb.setflags(write=False)
    return fb


def hann_window(win: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of ``win`` samples, zero-padded (centred) to ``n_fft`` like torch.stft does."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    left = (n_fft - win) // 2
    return np.pad(w, (left, n_fft - win - left))


def log_mel(samples: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """HiFi-GAN log-mel of ``[T]`` or ``[B, T]`` float audio → float32 ``[n_mels, frames]`` / ``[B, n_mels, frames]``.

    ``frames = (T + 2·pad − n_fft) // hop + 1`` with ``pad = (n_fft − hop) // 2`` (``T // hop``
    for the default settings). Needs ``T > pad`` (reflect padding). Computed in float64.
    """
    x = np.asarray(samples)
    if x.ndim not in (1, 2) or not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"samples must be float [T] or [B, T], got {x.dtype} {x.shape}")
    if x.shape[-1] <= cfg.pad:
        raise InputError(f"need more than {cfg.pad} samples for a log-mel, got {x.shape[-1]}")
    x = x.astype(np.float64, copy=False)
    x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(cfg.pad, cfg.pad)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft, axis=-1)[..., :: cfg.hop, :]
    window = hann_window(cfg.win, cfg.n_fft)
    fb = mel_filterbank(cfg).astype(np.float64)
    out = np.empty((*frames.shape[:-2], cfg.n_mels, frames.shape[-2]), dtype=np.float32)
    for s in range(0, frames.shape[-2], _CHUNK_FRAMES):
        spec = np.fft.rfft(frames[..., s : s + _CHUNK_FRAMES, :] * window, axis=-1)
        mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-9)  # [..., frames, bins]
        mel = fb @ np.swapaxes(mag, -1, -2)  # [..., n_mels, frames]
        out[..., s : s + _CHUNK_FRAMES] = np.log(np.maximum(mel, cfg.log_floor))
    return out


__all__ = [
    "DEFAULT_MEL",
    "FORMATS",
    "Audio",
    "MelConfig",
    "hann_window",
    "log_mel",
    "mel_filterbank",
    "read_audio",
    "resample",
    "write_wav",
]


# ------------------------------------------------------------------------- sound files on disk

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")


def list_audio(folder: Path) -> list[Path]:
    """Sound files directly in ``folder``, sorted by name."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"no audio folder {folder}")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    return files


def read_audio_file(path: Path | str, rate: int = DEFAULT_MEL.sample_rate) -> np.ndarray:
    """A sound file on disk → mono float32 ``[T]`` at ``rate`` (channels averaged, soxr-resampled).

    For trusted training and evaluation files: it decodes the whole file at once and has no size
    limits. Sounds from users go through :func:`read_audio`.
    """
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    return resample(np.ascontiguousarray(mono), sr, rate)
