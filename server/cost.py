"""What a request costs, estimated before it runs, for admission against a per-process work budget.

The inference pool bounds how many requests run and wait (:mod:`strata.server.pool`), but not how
much work they carry: a handful of 4096² decodes or 10-minute sounds, each cheap to send (a
56-byte stream can claim a 4096×4096 image), would hold the workers for minutes. Every heavy
route therefore estimates its work in *seconds of compute on the reference machine* (2 CPU
cores) from what it can read cheaply before running: the image size in the file or stream
header, the number of samples of a sound. The pool admits a request only while the work it has
admitted (running and waiting) stays within ``STRATA_MAX_WORK_SECONDS``:

- a request whose own estimate is over the budget can never run: 413 ``limit_exceeded``;
- one that does not fit now: 503 ``overloaded`` with ``Retry-After`` (the seconds of admitted
  work over the budget, shared by the workers).

Sizing rule: the budget is how long the last admitted request may wait behind the others, times
the workers. The default, 120 s, admits two of the largest allowed requests (a 4096² decode is
about 54 s) or hundreds of ordinary ones (a 768×512 image costs about 0.6 s to encode and 1.3 s
to decode). On a faster machine or a GPU the estimates are pessimistic, so raise the budget in
proportion. The rates below come from ``bench/speed.py``, ``bench/speed_audio.py`` and the
4096² measurements in docs/reliability.md.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

#: Seconds of work per megapixel / per second of sound on the reference machine (2 cores).
IMAGE_ENCODE_S_PER_MPX = 1.4  # pad, g_a (tiled over 1 MP), RVQ search, entropy coding
IMAGE_DECODE_S_PER_MPX = 3.2  # entropy decoding, g_s (tiled over 1 MP: overlap included), PNG
AUDIO_ENCODE_S_PER_S = 0.01  # log-mel, mel g_a, search, entropy coding
AUDIO_MEL_S_PER_S = 0.01  # entropy decoding and mel g_s
AUDIO_WAVE_S_PER_S = 0.06  # + HiFi-GAN and its refinement (or Griffin-Lim)
BASE_S = 0.005  # any request: parsing, headers


@dataclass(frozen=True)
class Work:
    """An estimate of a request's work, in seconds of compute."""

    seconds: float
    what: str  # for messages: "a 4096×4096 image decode"

    @staticmethod
    def image(size: tuple[int, int], decode: bool) -> Work:
        h, w = size
        rate = IMAGE_DECODE_S_PER_MPX if decode else IMAGE_ENCODE_S_PER_MPX
        return Work(BASE_S + h * w / 1e6 * rate, f"a {h}×{w} image {'decode' if decode else 'encode'}")

    @staticmethod
    def audio(seconds: float, decode: bool, waveform: bool = True) -> Work:
        rate = (AUDIO_MEL_S_PER_S + (AUDIO_WAVE_S_PER_S if waveform else 0.0)) if decode else AUDIO_ENCODE_S_PER_S
        return Work(BASE_S + seconds * rate, f"{seconds:.1f} s of sound {'decoded' if decode else 'encoded'}")


NOTHING = Work(BASE_S, "a request")


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(H, W)`` from an image file's header (no pixel decoding), or ``None`` when it does not open: the
    request then fails with its own error when it runs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.height), int(im.width)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def sound_seconds(data: bytes) -> float | None:
    """Duration from a sound file's header, or ``None`` when it does not open (see :func:`image_size`)."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except (RuntimeError, TypeError, ValueError, sf.LibsndfileError):
        return None
    if info.samplerate <= 0 or info.frames < 0:
        return None
    return info.frames / info.samplerate


def retry_after(excess: float, workers: int) -> int:
    """Whole seconds until ``excess`` seconds of admitted work have drained through ``workers``."""
    return max(1, math.ceil(excess / max(1, workers)))
