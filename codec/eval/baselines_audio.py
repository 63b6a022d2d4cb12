"""Classical audio baseline for the evaluation: Opus, through opus-tools or ffmpeg subprocesses.

::

    samples [T] @ rate ─►─┤ 16-bit WAV ├─►─┤ opusenc --bitrate K ├─►─ Ogg Opus file (its bytes are the rate)
                                                                              │
    decoded [T] @ rate ◄─┤ soxr, trim to T ├◄─ [T·48000/rate] @ 48 kHz ◄─┤ opusdec --rate 48000 --float ├

:func:`opus_roundtrip` codes one signal at one target bitrate with ``opusenc``'s settings
(20 ms frames, complexity 10, automatic speech/music tuning, 512 bytes of reserved metadata
padding; rate control ``mode``: VBR by default) and decodes it with ``opusdec`` at 48 kHz,
which removes the pre-skip and cuts the end at the granule position, so the decoded sound is
aligned with the input sample for sample. The bitrate is computed from the size of the whole
Ogg file, container included, as docs/design.md §7 (evaluation protocol) states its reference points ("Opus at a 6 kbps
target (8.3 kbps with its Ogg container)"). On short clips the container is a large share:
a 2.7 s speech file at a 6 kbps target takes 2 586 bytes (7.6 kbit/s), 0.5 kB of them padding.

the docs/design.md §7 (evaluation protocol) reference points on the speech test split (6 → 8.3 kbit/s, 1.91 / 0.859; 8 →
10.3, 2.85 / 0.941; 12 → 14.4, 3.69 / 0.964) are reproduced by ``mode="hard-cbr"`` (8.33,
1.90 / 0.859; 10.34, 2.79 / 0.941; 14.35, 3.69 / 0.964 with opus-tools 0.2 and libopus
1.3.1), not by the default VBR, which is smaller and better at every target (7.80, 2.22 /
0.896; 9.56, 2.94 / 0.946; 13.72, 3.87 / 0.967). Say which mode a table uses.

When ``opusenc``/``opusdec`` are not on ``PATH``, ``ffmpeg`` with the ``libopus`` encoder
does the same (``-c:a libopus -b:a K -vbr on|constrained|off``; decoded by ffmpeg's own Opus
decoder). Its container overhead differs (no reserved padding, other tags), so compare
bitrates measured with one backend (``OpusResult.backend`` says which). Neither present:
:class:`strata.errors.BaselineUnavailableError`.
"""

from __future__ import annotations

import functools
import math
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from strata.errors import BaselineError, BaselineUnavailableError, InputError
from strata.frontend.audio import MAX_RATE, MIN_RATE, resample

#: Target bitrates (kbit/s) for an Opus rate sweep; docs/design.md §7 quotes 6, 8 and 12 on the speech test split.
OPUS_KBPS = (6, 8, 12, 16, 24, 32)
#: The bitrate range opusenc accepts for one channel (kbit/s).
MIN_KBPS, MAX_KBPS = 6.0, 256.0
#: Opus decodes at 48 kHz; the result is resampled to the input rate with soxr.
DECODE_RATE = 48000
#: Wall-clock limit of each encoder or decoder process (seconds).
DEFAULT_TIMEOUT_S = 60.0
#: Largest accepted difference between the decoded and the input length, before trimming or zero-padding
#: (opusdec is exact; anything beyond a few 20 ms frames means the decoder lost or invented audio).
MAX_LENGTH_MISMATCH_S = 0.06

Backend = Literal["opusenc", "ffmpeg"]
#: Rate control: variable (opusenc's default), constrained variable, or hard constant bitrate.
Mode = Literal["vbr", "cvbr", "hard-cbr"]
MODES = ("vbr", "cvbr", "hard-cbr")
_FFMPEG_VBR = {"vbr": "on", "cvbr": "constrained", "hard-cbr": "off"}


@dataclass(frozen=True)
class OpusResult:
    """One signal coded by Opus at one target bitrate."""

    target_kbps: float  #: the bitrate asked of the encoder, kbit/s
    mode: str  #: rate control: "vbr", "cvbr" or "hard-cbr"
    bitrate_kbps: float  #: measured: ``bytes * 8 / seconds / 1000``, Ogg container included
    bytes: int  #: size of the whole Ogg Opus file
    rate: int  #: sample rate of the input and of ``samples``, Hz
    backend: str  #: "opusenc" (opus-tools) or "ffmpeg" (libopus)
    samples: np.ndarray = field(repr=False, compare=False)  #: decoded float32 ``[T]`` at ``rate``, aligned
    encode_s: float = field(compare=False)  #: wall-clock seconds of the encoder process (process start included)
    decode_s: float = field(compare=False)  #: wall-clock seconds of the decoder process + the resampling

    @property
    def seconds(self) -> float:
        """Duration of the coded signal."""
        return len(self.samples) / self.rate


# ------------------------------------------------------------------------------------------ backends


@functools.lru_cache(maxsize=4)
def _ffmpeg_has_libopus(ffmpeg: str) -> bool:
    try:
        cmd = [ffmpeg, "-hide_banner", "-encoders"]
        out = subprocess.run(cmd, capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and b" libopus " in out.stdout


def opus_backend(prefer: Backend | None = None) -> Backend:
    """The Opus tool this machine has: ``"opusenc"`` (opusenc + opusdec on ``PATH``), else ``"ffmpeg"``.

    Args:
        prefer: require this backend instead of choosing one.

    Raises:
        BaselineUnavailableError: the backend asked for (or, with ``prefer=None``, either) is missing.
        InputError: ``prefer`` is not ``None``, ``"opusenc"`` or ``"ffmpeg"``.
    """
    if prefer not in (None, "opusenc", "ffmpeg"):
        raise InputError(f"Opus backend must be 'opusenc' or 'ffmpeg', got {prefer!r}")
    if prefer in (None, "opusenc") and shutil.which("opusenc") and shutil.which("opusdec"):
        return "opusenc"
    if prefer in (None, "ffmpeg"):
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg and _ffmpeg_has_libopus(ffmpeg):
            return "ffmpeg"
    wanted = {
        None: "opusenc and opusdec (Debian/Ubuntu: apt install opus-tools) or ffmpeg built with libopus",
        "opusenc": "opusenc and opusdec (Debian/Ubuntu: apt install opus-tools)",
        "ffmpeg": "ffmpeg built with libopus",
    }[prefer]
    raise BaselineUnavailableError(f"the Opus baseline needs {wanted} on PATH")


def _run(cmd: list[str], what: str, timeout: float) -> float:
    """Run ``cmd``; return its wall-clock seconds. Failures name the command and quote its stderr."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise BaselineUnavailableError(f"{what}: {cmd[0]} is not installed ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise BaselineError(f"{what} timed out after {timeout:g} s: {shlex.join(cmd)}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:] or "(nothing on stderr)"
        raise BaselineError(f"{what} failed (exit status {proc.returncode}): {shlex.join(cmd)}\n{err}")
    return time.perf_counter() - t0


def _commands(
    backend: Backend, kbps: float, mode: Mode, wav: Path, ogg: Path, out: Path
) -> tuple[list[str], list[str]]:
    """Encoder and decoder command lines of ``backend``."""
    if backend == "opusenc":
        rate_control = [] if mode == "vbr" else [f"--{mode}"]  # VBR is opusenc's default (no flag)
        # --serial: a fixed Ogg stream serial number, so the same input gives the same bytes (the size is unchanged).
        enc = ["opusenc", "--bitrate", f"{kbps:g}", *rate_control, "--quiet", "--serial", "1", str(wav), str(ogg)]
        dec = ["opusdec", "--rate", str(DECODE_RATE), "--float", "--quiet", str(ogg), str(out)]
        return enc, dec
    quiet = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    enc = ["ffmpeg", *quiet, "-i", str(wav), "-c:a", "libopus", "-b:a", f"{kbps * 1000:.0f}", "-vbr", _FFMPEG_VBR[mode]]
    enc += ["-ar", str(DECODE_RATE), "-f", "ogg", str(ogg)]  # libopus takes 8/12/16/24/48 kHz input only
    dec = ["ffmpeg", *quiet, "-i", str(ogg), "-ar", str(DECODE_RATE), "-c:a", "pcm_f32le", str(out)]
    return enc, dec


# ------------------------------------------------------------------------------------------ round trip


def _check(samples: np.ndarray, rate: int, kbps: float, mode: str, timeout: float) -> None:
    if not isinstance(samples, np.ndarray) or samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
        got = f"{samples.dtype} {samples.shape}" if isinstance(samples, np.ndarray) else type(samples).__name__
        raise InputError(f"samples must be a float numpy array [T], got {got}")
    if samples.size == 0:
        raise InputError("samples has no samples")
    if not np.isfinite(samples).all():
        raise InputError("samples contains NaN or infinite values")
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"sample rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz, got {rate!r}")
    if isinstance(kbps, bool) or not isinstance(kbps, (int, float, np.number)) or not MIN_KBPS <= kbps <= MAX_KBPS:
        raise InputError(f"Opus target bitrate must be {MIN_KBPS:g}..{MAX_KBPS:g} kbit/s, got {kbps!r}")
    if mode not in MODES:
        raise InputError(f"Opus rate control must be one of {', '.join(MODES)}, got {mode!r}")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")


def opus_roundtrip(
    samples: np.ndarray,
    rate: int,
    kbps: float,
    *,
    mode: Mode = "vbr",
    backend: Backend | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> OpusResult:
    """Code mono ``samples`` with Opus at a ``kbps`` target and decode them back.

    The input is written as a 16-bit WAV (clipped to [-1, 1]) in a temporary directory,
    encoded to an Ogg Opus file, decoded at 48 kHz as float, resampled to ``rate`` with soxr
    and trimmed (or zero-padded by at most a few samples of resampler rounding) to ``T``.
    The decoded samples are not clipped.

    Args:
        samples: mono float ``[T]`` in [-1, 1].
        rate: their sample rate, Hz (any rate: opusenc resamples to 48 kHz internally).
        kbps: target bitrate, 6..256 kbit/s (with VBR the actual rate depends on the signal).
        mode: ``"vbr"`` (opusenc's default, the strongest baseline), ``"cvbr"``, or ``"hard-cbr"``
            (what reproduces the docs/design.md §7 (evaluation protocol) reference points, see the module docstring).
        backend: ``"opusenc"`` or ``"ffmpeg"`` to force one; ``None`` picks :func:`opus_backend`.
        timeout: wall-clock limit of each subprocess, seconds.

    Returns:
        An :class:`OpusResult`; ``bitrate_kbps`` counts the whole file, container included.

    Raises:
        InputError: not a finite float ``[T]`` array, a bad ``rate``, ``kbps``, ``mode`` or ``timeout``.
        BaselineUnavailableError: no Opus tool on this machine (see :func:`opus_backend`).
        BaselineError: the encoder or decoder failed (its stderr is in the message) or timed
            out, or the decoded length is off by more than ``MAX_LENGTH_MISMATCH_S``.
    """
    _check(samples, rate, kbps, mode, timeout)
    rate, kbps = int(rate), float(kbps)
    chosen = opus_backend(backend)
    n = samples.shape[0]
    with tempfile.TemporaryDirectory(prefix="strata-opus-") as tmp:
        wav, ogg, out = Path(tmp) / "in.wav", Path(tmp) / "coded.opus", Path(tmp) / "decoded.wav"
        sf.write(wav, np.clip(samples, -1.0, 1.0).astype(np.float32), rate, subtype="PCM_16")
        enc_cmd, dec_cmd = _commands(chosen, kbps, mode, wav, ogg, out)
        encode_s = _run(enc_cmd, f"Opus encoding at {kbps:g} kbit/s", timeout)
        size = ogg.stat().st_size
        decode_s = _run(dec_cmd, "Opus decoding", timeout)
        t0 = time.perf_counter()
        try:
            decoded, dec_rate = sf.read(out, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as e:
            raise BaselineError(f"the Opus decoder wrote an unreadable WAV: {e}") from None
    if dec_rate != DECODE_RATE or decoded.shape[1] != 1:
        raise BaselineError(f"the Opus decoder wrote {decoded.shape[1]} channel(s) at {dec_rate} Hz, expected mono")
    y = resample(decoded[:, 0], DECODE_RATE, rate)
    if abs(y.shape[0] - n) > MAX_LENGTH_MISMATCH_S * rate:
        raise BaselineError(
            f"the Opus round trip returned {y.shape[0]} samples for {n} input samples "
            f"({(y.shape[0] - n) / rate * 1000:+.1f} ms at {rate} Hz)"
        )
    y = y[:n] if y.shape[0] >= n else np.pad(y, (0, n - y.shape[0]))
    decode_s += time.perf_counter() - t0
    seconds = n / rate
    return OpusResult(
        target_kbps=kbps,
        mode=mode,
        bitrate_kbps=size * 8 / seconds / 1000,
        bytes=size,
        rate=rate,
        backend=chosen,
        samples=y,
        encode_s=encode_s,
        decode_s=decode_s,
    )


__all__ = [
    "DECODE_RATE",
    "DEFAULT_TIMEOUT_S",
    "MAX_KBPS",
    "MIN_KBPS",
    "MODES",
    "OPUS_KBPS",
    "OpusResult",
    "opus_backend",
    "opus_roundtrip",
]
