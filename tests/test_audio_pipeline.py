"""The audio codec end to end (``strata.audio``), on the tiny exported model (see conftest).

Round trips, layer prefixes, determinism, odd lengths, input and header checks, fuzzed streams, the
chunked processing of long inputs (equal to one call over the whole input; bounded memory on ten
minutes) and the vocoder choice.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the fixtures export the tiny model with torch

import strata.audio as ap  # noqa: E402
from strata.audio import AudioCodec, AudioCodes, Vocoder  # noqa: E402
from strata.bitstream import MAGIC, StreamLimits, pack, parse, truncate  # noqa: E402
from strata.errors import (  # noqa: E402
    BitstreamError,
    ChunkCorruptedError,
    HeaderError,
    InputError,
    LayersError,
    LimitExceededError,
    StrataError,
    StreamLimitError,
    StreamModelError,
    TruncatedStreamError,
    WeightsMismatchError,
)

from tests.conftest import synthetic_image, synthetic_sound  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOUND = synthetic_sound(1.3, seed=1)  # 28 665 samples: 28 code columns, the last one zero-padded
SHORT = synthetic_sound(0.4, seed=2)  # 8 820 samples, for the fuzzing loop
UNCHUNKED = 10**9  # a chunk size that never splits


def _header_len(data: bytes) -> int:
    return len(data) - parse(data).header.payload_bytes


def _restamp(data: bytes, **changes) -> bytes:
    """``data`` with header fields replaced and the header (and chunk table) re-packed with valid CRCs."""
    s = parse(data, StreamLimits(max_samples=2**40))
    return pack(replace(s.header, **changes), list(s.chunks))


def _variant(codec: AudioCodec, **parts) -> AudioCodec:
    """A new codec from ``codec``'s parts, some replaced (the session fixture stays untouched)."""
    kw = dict(
        entry=codec.entry,
        analysis=codec.analysis,
        synthesis=codec.synthesis,
        quantizer=codec.quantizer,
        prior=codec.prior,
        vocoder=codec.vocoder,
        limits=codec.limits,
    )
    return AudioCodec(**{**kw, **parts})


class _Spy:
    """Wraps a network and records the length of the last axis of every input."""

    def __init__(self, fn):
        self.fn, self.lengths = fn, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.lengths.append(x.shape[-1])
        return self.fn(x)


# ------------------------------------------------------------------------------------------ round trips


def test_round_trip_shapes_and_types(tiny_audio_codec):
    c = tiny_audio_codec
    data = c.compress(SOUND)
    assert isinstance(data, bytes) and data[:4] == MAGIC
    out = c.decompress(data)
    assert out.shape == SOUND.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out).max() <= 1.0

    codes = c.encode(SOUND)
    assert isinstance(codes, AudioCodes)
    assert codes.codes.shape == (4, 10, 28) and codes.codes.dtype == np.int64
    assert (codes.samples, codes.sample_rate, codes.model, codes.layers) == (SOUND.size, 22050, "tiny-audio", 4)
    assert codes.codes.min() >= 0 and codes.codes.max() < 16
    assert math.isclose(codes.seconds, SOUND.size / 22050)
    np.testing.assert_array_equal(c.decompress_codes(data).codes, codes.codes)
    assert c.decompress_mel(data).shape == (80, math.ceil(SOUND.size / 256))

    h = parse(data).header
    assert (h.size, h.grid, h.padding, h.layers) == ((SOUND.size, 22050), (10, 28), (0, 28 * 1024 - SOUND.size), 4)
    assert h.model == "tiny-audio" and h.weights == c.entry.weights_prefix


def test_codes_path_equals_bytes_path(tiny_audio_codec):
    c = tiny_audio_codec
    np.testing.assert_array_equal(c.decode(c.encode(SOUND)), c.decompress(c.compress(SOUND)))
    np.testing.assert_array_equal(c.decode_mel(c.encode(SOUND)), c.decompress_mel(c.compress(SOUND)))
    assert c.compress_codes(c.encode(SOUND)) == c.compress(SOUND)


def test_deterministic_bytes_across_runs_and_instances(tiny_audio_codec, tiny_audio_registry):
    other = AudioCodec.load(tiny_audio_registry, "tiny-audio")
    first = tiny_audio_codec.compress(SOUND)
    assert first == tiny_audio_codec.compress(SOUND) == other.compress(SOUND)
    np.testing.assert_array_equal(tiny_audio_codec.decompress(first), other.decompress(first))


def test_more_layers_reduce_mel_error(tiny_audio_codec):
    from strata.frontend.audio import log_mel

    c, data = tiny_audio_codec, tiny_audio_codec.compress(SOUND)
    padded = np.zeros(28 * 1024, np.float32)
    padded[: SOUND.size] = SOUND
    target = log_mel(padded)[:, : math.ceil(SOUND.size / 256)]
    errors = [float(np.mean((c.decompress_mel(data, layers=k) - target) ** 2)) for k in (1, 4)]
    assert errors[1] < errors[0]


# ------------------------------------------------------------------------------------------ layer prefixes


def test_every_prefix_of_layers(tiny_audio_codec):
    c = tiny_audio_codec
    full = c.compress(SOUND)
    header = parse(full).header
    for k in range(1, c.layers + 1):
        wave, mel = c.decompress(full, layers=k), c.decompress_mel(full, layers=k)
        cut = truncate(full, k)
        assert parse(cut).header.layers == k
        np.testing.assert_array_equal(c.decompress(cut), wave)
        np.testing.assert_array_equal(c.decompress_mel(cut), mel)
        assert c.compress(SOUND, layers=k) == cut
        assert c.encode(SOUND, layers=k).layers == k
        # a stream simply cut after chunk k (progressive download) decodes the same with partial=True
        prefix = full[: _header_len(full) + sum(n for n, _ in header.chunks[:k])]
        np.testing.assert_array_equal(c.decompress(prefix, partial=True), wave)
        np.testing.assert_array_equal(c.decompress_mel(prefix, partial=True), mel)
        if k < c.layers:
            with pytest.raises(TruncatedStreamError):
                c.decompress(prefix)
    assert not np.array_equal(c.decompress(full, layers=1), c.decompress(full))


def test_layer_arguments(tiny_audio_codec):
    c = tiny_audio_codec
    data = c.compress(SOUND, 2)
    for bad in (0, 3, -1, True, 2.0, "2"):
        with pytest.raises(LayersError):
            c.decompress(data, layers=bad)
    for bad in (0, 5, -1, True, 1.5):
        with pytest.raises(LayersError):
            c.compress(SOUND, bad)
    with pytest.raises(LayersError):
        truncate(data, 3)


# ------------------------------------------------------------------------------------------ lengths and inputs


@pytest.mark.parametrize("n", [1, 255, 1023, 1024, 1025, 5000, 3 * 1024 + 3 * 256])
def test_odd_lengths(tiny_audio_codec, n):
    c = tiny_audio_codec
    x = synthetic_sound(1.0, seed=n % 3)[:n]
    data = c.compress(x)
    assert parse(data).header.grid == (10, max(1, math.ceil(n / 1024)))
    out = c.decompress(data)
    assert out.shape == (n,) and out.dtype == np.float32
    assert c.decompress(data, vocoder="griffinlim").shape == (n,)
    assert c.decompress_mel(data).shape == (80, math.ceil(n / 256))


@pytest.mark.parametrize(
    ("samples", "match"),
    [
        (np.zeros((2, 2048), np.float32), "mono"),  # stereo, channels first
        (np.zeros((2048, 2), np.float32), "mono"),
        (np.zeros(2048, np.int16), "mono float"),
        (np.zeros(2048, np.int32), "mono float"),
        (np.zeros(2048, bool), "mono float"),
        (np.float32(0.5), "mono"),
        (np.zeros(0, np.float32), "no samples"),
        (np.r_[np.zeros(100), np.nan].astype(np.float32), "NaN"),
        (np.r_[np.zeros(100), np.inf].astype(np.float64), "NaN or infinite"),
    ],
)
def test_bad_samples_are_refused(tiny_audio_codec, samples, match):
    with pytest.raises(InputError, match=match):
        tiny_audio_codec.compress(samples)


def test_float64_and_loud_input(tiny_audio_codec):
    """Other float types are accepted; samples beyond ±1 are clipped like the frontend clips decoded files."""
    c = tiny_audio_codec
    assert c.compress(SOUND.astype(np.float64)) == c.compress(SOUND)
    assert c.compress(SOUND * 50) == c.compress(np.clip(SOUND * 50, -1, 1))


def test_length_limits(tiny_audio_codec):
    small = _variant(tiny_audio_codec, limits=StreamLimits(max_samples=22050))
    with pytest.raises(LimitExceededError):
        small.compress(SOUND)
    with pytest.raises(StreamLimitError):  # the stream is refused before anything is allocated
        small.decompress(tiny_audio_codec.compress(SOUND))
    assert small.decompress(tiny_audio_codec.compress(SOUND[:22050])).shape == (22050,)


def test_vocoder_argument(tiny_audio_codec):
    c = tiny_audio_codec
    data = c.compress(SOUND)
    for bad in ("wavenet", "", 3, "HIFIGAN"):
        with pytest.raises(InputError, match="vocoder"):
            c.decompress(data, vocoder=bad)
        with pytest.raises(InputError, match="vocoder"):
            c.decode(c.encode(SOUND), vocoder=bad)
    with pytest.raises(InputError, match="has no vocos vocoder; it has hifigan, griffinlim"):
        c.decompress(data, vocoder="vocos")  # the tiny model has no Vocos network
    assert c.vocoders == (Vocoder.HIFIGAN, Vocoder.GRIFFINLIM) and c.default_vocoder is Vocoder.HIFIGAN
    np.testing.assert_array_equal(c.decompress(data, vocoder=Vocoder.HIFIGAN), c.decompress(data, vocoder="hifigan"))
    np.testing.assert_array_equal(c.decompress(data, vocoder=None), c.decompress(data))  # None: the default


def test_decode_validates_codes(tiny_audio_codec):
    c = tiny_audio_codec
    codes = c.encode(SOUND)
    bad = [
        replace(codes, codes=codes.codes[:, :, :-1]),  # one column short for the sample count
        replace(codes, codes=codes.codes[:, :9]),  # a row missing
        replace(codes, codes=codes.codes[0]),  # not [k, rows, columns]
        replace(codes, codes=codes.codes.astype(np.float32)),
        replace(codes, codes=codes.codes + 16),  # outside the codebooks
        replace(codes, sample_rate=44100),
        replace(codes, samples=0),
        replace(codes, samples=1.5),
    ]
    for b in bad:
        with pytest.raises(InputError):
            c.decode(b)
    with pytest.raises(LayersError):
        c.decode(codes, layers=5)
    with pytest.raises(LayersError):
        c.compress_codes(replace(codes, codes=np.zeros((5, 10, 28), np.int64)))


# ------------------------------------------------------------------------------------------ header checks


def test_image_stream_is_refused(tiny_audio_codec, tiny_codec):
    image_stream = tiny_codec.compress(synthetic_image(16, 24))
    with pytest.raises(StreamModelError, match="image"):
        tiny_audio_codec.decompress(image_stream)
    with pytest.raises(StreamModelError):
        tiny_codec.decompress(tiny_audio_codec.compress(SHORT))


def test_wrong_model_or_weights(tiny_audio_codec):
    c = tiny_audio_codec
    data = c.compress(SOUND)
    with pytest.raises(StreamModelError, match="other-model"):
        c.decompress(_restamp(data, model="other-model"))
    weights = bytearray(parse(data).header.weights)
    weights[3] ^= 0x01
    with pytest.raises(WeightsMismatchError):
        c.decompress(_restamp(data, weights=bytes(weights)))
    assert np.array_equal(c.decompress(_restamp(data)), c.decompress(data))  # re-packing alone changes nothing


@pytest.mark.parametrize(
    "changes",
    [
        {"size": (SOUND.size, 44100)},  # another sample rate
        {"size": (SOUND.size, 16000)},
        {"grid": (10, 29)},  # one column too many for the sample count
        {"grid": (10, 27)},
        {"grid": (9, 28)},  # another number of code rows
        {"padding": (0, 0)},
        {"padding": (1, 28 * 1024 - SOUND.size)},
        {"size": (SOUND.size + 2000, 22050)},  # more samples than the grid holds
        {"size": (65_535 * 1024 + 1, 22050), "grid": (10, 65_535), "padding": (0, 1023)},  # > a v1 stream's length
    ],
)
def test_header_fields_are_checked(tiny_audio_codec, changes):
    with pytest.raises(HeaderError):
        tiny_audio_codec.decompress(_restamp(tiny_audio_codec.compress(SOUND), **changes))


def test_more_layers_than_the_model(tiny_audio_codec):
    s = parse(tiny_audio_codec.compress(SOUND))
    with pytest.raises(HeaderError, match="5 layers"):
        tiny_audio_codec.decompress(pack(s.header, [*s.chunks, s.chunks[-1]]))


def test_corrupted_chunk_is_detected(tiny_audio_codec):
    c = tiny_audio_codec
    data = bytearray(c.compress(SOUND))
    data[-2] ^= 0x40
    with pytest.raises(ChunkCorruptedError):
        c.decompress(bytes(data))
    assert c.decompress(bytes(data), layers=3).shape == SOUND.shape  # only the last chunk is damaged


def _fix_header_crc(d: bytearray, end: int) -> None:
    d[end - 4 : end] = zlib.crc32(bytes(d[: end - 4])).to_bytes(4, "little")


def test_fuzzed_streams_raise_only_strata_errors(tiny_audio_codec):
    """200 corrupted copies: raw byte flips and cuts (the CRCs catch them), header flips behind a recomputed
    header CRC (the field checks catch them) and chunk flips re-packed with valid CRCs (the entropy decoder
    sees garbage). Each either decodes to a sound of the right length or raises a StrataError; anything else
    (IndexError, KeyError, a numpy or onnxruntime error, ...) propagates and fails the test."""
    c = tiny_audio_codec
    rng = np.random.default_rng(0)
    data = c.compress(SHORT)
    stream = parse(data)
    end = _header_len(data)
    outcomes: Counter[str] = Counter()
    for i in range(200):
        mode = ("raw", "header", "chunks")[i % 3]
        if mode == "chunks":
            chunks = [bytearray(ch) for ch in stream.chunks]
            layer = int(rng.integers(len(chunks)))
            for _ in range(rng.integers(1, 4)):
                chunks[layer][rng.integers(len(chunks[layer]))] ^= int(rng.integers(1, 256))
            d = bytearray(pack(stream.header, [bytes(ch) for ch in chunks]))
        else:
            d = bytearray(data)
            lo, hi = (0, len(d)) if mode == "raw" else (7, end - 4)
            for _ in range(rng.integers(1, 4)):
                d[rng.integers(lo, hi)] ^= int(rng.integers(1, 256))
            if mode == "header":
                _fix_header_crc(d, end)
            if rng.random() < 0.25:
                d = d[: rng.integers(0, len(d))]
        try:
            out = c.decompress(bytes(d), partial=bool(rng.random() < 0.5))
        except StrataError as e:
            assert isinstance(e, BitstreamError), f"{mode}: {type(e).__name__}: {e}"
            outcomes[f"{mode}:{type(e).__name__}"] += 1
        else:
            assert out.shape == SHORT.shape and out.dtype == np.float32
            outcomes[f"{mode}:decoded"] += 1
    assert sum(v for k, v in outcomes.items() if k.startswith("header:") and "decoded" not in k) >= 50
    assert outcomes["chunks:ChunkCorruptedError"] >= 10, outcomes
    assert outcomes["raw:HeaderError"] + outcomes["raw:ChunkCorruptedError"] >= 30, outcomes


# ------------------------------------------------------------------------------------------ chunked processing


def test_chunked_equals_unchunked(tiny_audio_codec, monkeypatch):
    """10 s (861 frames, 216 columns) in windows of 64 frames: 14 calls of g_a, g_s and the vocoder each.

    At the default CHUNK_FRAMES (2048) the codec runs g_a and g_s once over these 10 s, and the reference
    runs the vocoder once too. Codes must be identical, the mel within 1e-4 and the waveform within 1e-4
    (every kept output sees exactly the inputs of the single call; only float32 summation order may
    differ between window lengths. Measured: both differences are 0).
    """
    c = tiny_audio_codec
    x = synthetic_sound(10.0, seed=2)
    whole_codes = c.encode(x)
    whole_mel = c.decode_mel(whole_codes)
    whole_wave = replace(c.vocoder, chunk_frames=UNCHUNKED)(whole_mel)[: x.size]

    monkeypatch.setattr(ap, "CHUNK_FRAMES", 64)
    ga, gs, voc = _Spy(c.analysis), _Spy(c.synthesis), _Spy(c.vocoder.net)
    chunked = _variant(c, analysis=ga, synthesis=gs, vocoder=replace(c.vocoder, net=voc, chunk_frames=64))
    codes = chunked.encode(x)
    mel = chunked.decode_mel(codes)
    wave = chunked.decode(codes)
    assert (len(ga.lengths), len(gs.lengths), len(voc.lengths)) == (14, 2 * 14, 14)  # decode ran g_s again
    assert max(ga.lengths) <= 64 + 2 * 32 and max(gs.lengths) <= 16 + 2 * math.ceil(c.context_s / 4)
    assert max(voc.lengths) <= 64 + 2 * c.vocoder.receptive_field

    np.testing.assert_array_equal(codes.codes, whole_codes.codes)
    assert np.abs(mel - whole_mel).max() <= 1e-4
    assert wave.shape == whole_wave.shape == x.shape
    assert np.abs(whole_wave).max() > 1e-3  # a real signal
    assert np.abs(wave - whole_wave).max() <= 1e-4
    assert chunked.compress(x) == c.compress(x)


def test_too_little_context_changes_the_result(tiny_audio_codec, monkeypatch):
    """The equality above can fail: with less context than the receptive field the seams differ.

    ``context_a`` is cut to 4 frames (one code column; the measured field is ~31) rather than 0, because
    :func:`strata.audio.analyse_mel` reads 0 as "run g_a once" (the export path).
    """
    c = tiny_audio_codec
    assert c.context_a > 4 and c.context_s > 0
    x = synthetic_sound(10.0, seed=2)
    whole_codes = c.encode(x)
    whole_mel = c.decode_mel(whole_codes)
    monkeypatch.setattr(ap, "CHUNK_FRAMES", 64)
    short = _variant(c)
    short.context_a = 4
    assert (short.encode(x).codes != whole_codes.codes).any()
    short.context_a, short.context_s = c.context_a, 0
    np.testing.assert_array_equal(short.encode(x).codes, whole_codes.codes)
    assert np.abs(short.decode_mel(whole_codes) - whole_mel).max() > 1e-3


MEMORY_SCRIPT = r"""
import json, re, sys
import numpy as np
from strata.audio import AudioCodec
from strata.registry import Registry
from strata.runtime import CPU

def status(field):  # kB of this process (VmRSS: now; VmHWM: peak since start or the last reset)
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s*(\d+) kB", f.read()).group(1))

root, seconds, short_seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
codec = AudioCodec.load(Registry(root), "tiny-audio", providers=[CPU], threads=1)
t = np.arange(int(22050 * seconds)) / 22050
x = (0.3 * np.sin(2 * np.pi * (220 + 30 * np.sin(2 * np.pi * 0.3 * t)) * t) * np.sin(np.pi * t) ** 2).astype(np.float32)
del t
short = x[: int(22050 * short_seconds)]
short_stream = codec.compress(short)  # also the warm-up: full-size windows of every network
short_wave = codec.decompress(short_stream)
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
except OSError:
    pass  # then VmHWM may still hold an older peak: the growth below can only be over-estimated
before = status("VmRSS")
stream = codec.compress(x)
after_encode = status("VmHWM")
wave = codec.decompress(stream)
peak = status("VmHWM")

codes, short_codes = codec.decompress_codes(stream).codes, codec.decompress_codes(short_stream).codes
m = short_codes.shape[-1] - 16  # columns whose receptive field ends before the short clip's end
w = short.size - 32 * 1024  # samples before the reach of those columns through g_s and the vocoder
print(json.dumps({
    "growth_kib": peak - before, "encode_growth_kib": after_encode - before, "samples": wave.size,
    "dtype": str(wave.dtype), "wave_bytes": x.nbytes, "torch": "torch" in sys.modules,
    "codes_equal": bool(np.array_equal(codes[..., :m], short_codes[..., :m])),
    "wave_diff": float(np.abs(wave[:w] - short_wave[:w]).max()), "wave_peak": float(np.abs(wave).max()),
}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS / VmHWM from /proc")
def test_ten_minutes_in_bounded_memory(tiny_audio_registry):
    """10 minutes (13 230 000 samples, 12 920 columns, 51 680 mel frames) through compress and decompress in a
    fresh torch-free process: peak RSS grows by less than 2 × the sound + 64 MiB = 165 MiB.

    The sound is 50.5 MiB of float32. What must be held: the zero-padded copy that encode analyses (1×),
    the decoded waveform (1×), the log-mel (80 / 256 × 4 bytes per sample, 0.3×) and the windows (a
    frontend window of 2048 frames handles ≈ 50 MiB of float64 / complex STFT temporaries; the networks'
    windows a few MiB). Measured: ≈ 115 MiB.

    Unchunked, the same pass needs ≈ 1.2 GiB (measured with CHUNK_FRAMES and the vocoder's chunk_frames
    set to 10^9: 377 MiB to encode, 1180 MiB to decode). The frontend alone holds two float64 copies of the
    sound (202 MiB), and the tiny HiFi-GAN's last stage holds [1, 2, 13 230 080] float32 tensors of 101 MiB
    each, several at once (the real V3 generator has 16 times as many channels there).

    The same run also matches a short clip: the codes of the first 30 s coded alone equal the 10-minute
    codes up to 16 columns before the short clip's end (g_a's receptive field, 8 columns, sees the end
    there), and the decoded waveforms agree within 1e-4 up to 32 columns before that end (plus g_s's and
    the vocoder's fields).

    The peak is this child's VmHWM, reset through ``/proc/self/clear_refs`` after the warm-up, minus its
    RSS before the call (``ru_maxrss`` would carry the forked pytest process's high-water mark, see
    ``tests/test_vocoder_runtime.py``).
    """
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tiny_audio_registry.root), "600", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    growth_mib, wave_mib = r["growth_kib"] / 1024, r["wave_bytes"] / 2**20
    bound = 2 * wave_mib + 64
    print(
        f"\npeak RSS growth {growth_mib:.1f} MiB (encode {r['encode_growth_kib'] / 1024:.1f} MiB) for "
        f"{wave_mib:.1f} MiB of sound; bound {bound:.1f} MiB"
    )
    assert (r["samples"], r["dtype"], r["torch"]) == (22050 * 600, "float32", False)
    assert r["codes_equal"]
    assert r["wave_peak"] > 1e-3 and r["wave_diff"] <= 1e-4
    assert growth_mib < bound


# ------------------------------------------------------------------------------------------ vocoders


def test_griffin_lim_selection(tiny_audio_codec):
    c = tiny_audio_codec
    data = c.compress(SOUND)
    gl = c.decompress(data, vocoder="griffinlim")
    hifi = c.decompress(data)
    assert gl.shape == hifi.shape == SOUND.shape and gl.dtype == np.float32 and np.isfinite(gl).all()
    assert np.abs(gl).max() > 1e-3
    assert np.abs(gl - hifi).max() > 1e-3
    np.testing.assert_array_equal(c.decode(c.encode(SOUND), vocoder=Vocoder.GRIFFINLIM), gl)  # deterministic
    np.testing.assert_array_equal(
        c.decompress(data, layers=2, vocoder="griffinlim"),
        c.decode(c.decompress_codes(data, layers=2), vocoder="griffinlim"),
    )


def test_refine_argument(tiny_audio_codec):
    c = tiny_audio_codec
    data = c.compress(SOUND)
    codes = c.decompress_codes(data)
    mel = c.decode_mel(codes)
    raw = c.decode(codes, refine=0)
    np.testing.assert_array_equal(raw, c.vocoder(mel, refine=0)[: SOUND.size])
    np.testing.assert_array_equal(c.decompress(data, refine=0), raw)
    three = c.decode(codes, refine=3)
    np.testing.assert_array_equal(three, c.vocoder(mel, refine=3)[: SOUND.size])
    assert three.shape == raw.shape == SOUND.shape and three.dtype == np.float32
    assert np.abs(three - raw).max() > 1e-3
    np.testing.assert_array_equal(c.decode(codes), c.decode(codes, refine=c.vocoder.refine))  # None: the default
    np.testing.assert_array_equal(
        c.decompress(data, layers=2, refine=1), c.vocoder(c.decode_mel(codes, 2), refine=1)[: SOUND.size]
    )
    for bad in (-1, 33, 1.5, True, "2"):
        with pytest.raises(InputError, match="refine"):
            c.decode(codes, refine=bad)
        with pytest.raises(InputError, match="refine"):
            c.decompress(data, refine=bad)
    for refine in (0, 1):
        with pytest.raises(InputError, match="refine applies to the network vocoders"):
            c.decode(codes, vocoder="griffinlim", refine=refine)
        with pytest.raises(InputError, match="refine applies to the network vocoders"):
            c.decompress(data, vocoder=Vocoder.GRIFFINLIM, refine=refine)
