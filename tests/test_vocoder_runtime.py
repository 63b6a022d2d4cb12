"""Serving-side HiFi-GAN (``strata.vocoder.hifigan``) and the overlap chunking it rests on (``strata.chunking``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from strata.chunking import apply_chunked
from strata.errors import InputError, ModelIntegrityError
from strata.runtime import CPU
from strata.vocoder.hifigan import HifiGanVocoder

ROOT = Path(__file__).resolve().parent.parent
UNCHUNKED = 10**9  # chunk_frames that never splits


# --- apply_chunked on numpy functions with known receptive fields -------------------------------------------------


def _conv(x: np.ndarray, radius: int, seed: int = 0) -> np.ndarray:
    """Zero-padded 'same' convolution along the last axis with a random kernel of ``2·radius + 1`` taps."""
    kernel = np.random.default_rng(seed).uniform(0.5, 1.5, 2 * radius + 1)
    n = x.shape[-1]
    return np.apply_along_axis(lambda v: np.convolve(v, kernel)[radius : radius + n], -1, x)


def _moving_average(x: np.ndarray) -> np.ndarray:
    """Receptive field 5."""
    return np.apply_along_axis(lambda v: np.convolve(v, np.full(11, 1 / 11))[5 : 5 + len(v)], -1, x)


def _decimate(x: np.ndarray) -> np.ndarray:
    """A 13-tap convolution, then every 4th sample: scale 1/4, receptive field 6 input positions."""
    return _conv(x, 6)[..., ::4]


def _upsample(x: np.ndarray) -> np.ndarray:
    """Conv (radius 2) → repeat ×256 → conv (radius 300 samples): scale 256, receptive field 2 + 2 = 4 positions.

    Output sample ``n`` reads the repeated samples ``n ± 300``, i.e. input positions ``⌊(n ± 300)/256⌋``, which
    reach 2 positions past the chunk on either side; the first conv adds 2 more.
    """
    return _conv(np.repeat(_conv(x, 2), 256, axis=-1), 300, seed=1)


def _signal(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape)


class _Spy:
    """Records the window lengths ``fn`` is called with."""

    def __init__(self, fn):
        self.fn, self.lengths = fn, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.lengths.append(x.shape[-1])
        return self.fn(x)


@pytest.mark.parametrize("n", [1, 7, 16, 26, 27, 33, 100, 1001])
@pytest.mark.parametrize("chunk", [1, 8, 16])
def test_chunked_moving_average_equals_whole(n, chunk):
    x = _signal(3, n)
    spy = _Spy(_moving_average)
    y = apply_chunked(spy, x, chunk=chunk, context=5)
    np.testing.assert_allclose(y, _moving_average(x), rtol=0, atol=1e-12)
    assert max(spy.lengths) <= chunk + 2 * 5
    assert len(spy.lengths) == (1 if n <= chunk + 10 else math.ceil(n / chunk))


@pytest.mark.parametrize(
    ("fn", "context", "scale", "align"), [(_moving_average, 5, 1, 1), (_decimate, 6, Fraction(1, 4), 4)]
)
def test_too_little_context_changes_the_result(fn, context, scale, align):
    """The equality tests can fail: one position (one aligned step) less context than the receptive field."""
    x = _signal(2, 400)
    ok = apply_chunked(fn, x, chunk=32, context=context, scale=scale, align=align)
    short = apply_chunked(fn, x, chunk=32, context=context - align, scale=scale, align=align)
    np.testing.assert_allclose(ok, fn(x), rtol=0, atol=1e-12)
    assert np.abs(short - fn(x)).max() > 1e-3


@pytest.mark.parametrize("n", [4, 40, 44, 68, 400, 1004])
@pytest.mark.parametrize("scale", [Fraction(1, 4), 0.25])
def test_chunked_decimation_equals_whole(n, scale):
    """Windows start at multiples of align = 4, so the decimation keeps the whole input's phase."""
    x = _signal(2, 3, n)
    spy = _Spy(_decimate)
    y = apply_chunked(spy, x, chunk=16, context=6, scale=scale, align=4)  # context rounds up to 8
    assert y.shape == (2, 3, n // 4)
    np.testing.assert_allclose(y, _decimate(x), rtol=0, atol=1e-12)
    assert max(spy.lengths) <= 16 + 2 * 8


@pytest.mark.parametrize("n", [1, 9, 20, 45])
def test_chunked_upsampling_equals_whole(n):
    x = _signal(2, n)
    y = apply_chunked(_upsample, x, chunk=8, context=4, scale=256)
    assert y.shape == (2, n * 256)
    np.testing.assert_allclose(y, _upsample(x), rtol=0, atol=1e-9)
    if n > 8 + 2 * 4:
        short = apply_chunked(_upsample, x, chunk=8, context=3, scale=256)
        assert np.abs(short - _upsample(x)).max() > 1e-3


def test_output_leading_axes_come_from_fn():
    x = _signal(5, 100)

    def fn(v: np.ndarray) -> np.ndarray:
        return np.stack([_moving_average(v), -v])  # [2, 5, n]

    np.testing.assert_allclose(apply_chunked(fn, x, chunk=10, context=5), fn(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (np.zeros(8), {"chunk": 0, "context": 1}, "chunk"),
        (np.zeros(8), {"chunk": 2.0, "context": 1}, "chunk"),
        (np.zeros(8), {"chunk": 4, "context": -1}, "context"),
        (np.zeros(8), {"chunk": 4, "context": 1, "align": 0}, "align"),
        (np.zeros(8), {"chunk": 4, "context": 1, "scale": 0}, "scale"),
        (np.zeros(8), {"chunk": 4, "context": 1, "scale": -2}, "scale"),
        (np.zeros(8), {"chunk": 4, "context": 1, "scale": float("nan")}, "scale"),
        (np.zeros(8), {"chunk": 4, "context": 1, "scale": "2"}, "scale"),
        (np.zeros(8), {"chunk": 6, "context": 1, "align": 4}, "multiple of align"),
        (np.zeros(8), {"chunk": 4, "context": 1, "scale": Fraction(1, 4)}, "align × scale"),
        (np.zeros(10), {"chunk": 4, "context": 1, "scale": Fraction(1, 4), "align": 4}, "N × scale"),
        (np.zeros((2, 0)), {"chunk": 4, "context": 1}, "at least one position"),
        (np.float32(1.0), {"chunk": 4, "context": 1}, "numpy array"),
        ([1.0, 2.0], {"chunk": 4, "context": 1}, "numpy array"),
    ],
)
def test_apply_chunked_rejects_bad_arguments(x, kwargs, match):
    with pytest.raises(InputError, match=match):
        apply_chunked(lambda v: v, x, **kwargs)


def test_apply_chunked_checks_what_fn_returns():
    with pytest.raises(RuntimeError, match="expected"):
        apply_chunked(lambda v: v[..., :-1], np.zeros(100), chunk=10, context=2)


# --- the ONNX vocoder -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocoder_path(tmp_path_factory) -> Path:
    """A tiny random V3-layout generator (widths 32 → 4), exported as ``vocoder.onnx``.

    The weights get unit gain (``N(0, 1/fan_in)``) instead of the training init's ``N(0, 0.01)``: with
    the latter, frames 4 or more away change the output by < 1e-6, so a context a few frames short of
    the receptive field would still pass the 1e-5 equality checks below.
    """
    torch = pytest.importorskip("torch")
    from strata.train.nets.hifigan_model import Generator, HiFiGANConfig, export_generator
    from torch import nn

    torch.manual_seed(0)
    gen = Generator(HiFiGANConfig(upsample_initial_channel=32))
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
                fan_in = m.weight.shape[1 if isinstance(m, nn.Conv1d) else 0] * m.weight.shape[2]
                m.weight = torch.randn_like(m.weight) / math.sqrt(fan_in)  # through weight norm's right_inverse
    return export_generator(gen, tmp_path_factory.mktemp("vocoder") / "vocoder.onnx")


def _vocoder(path: Path, **kwargs) -> HifiGanVocoder:
    return HifiGanVocoder.load(path, providers=[CPU], threads=1, **kwargs)


def _mel(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((80, frames), dtype=np.float32) - 4


def test_load_reads_the_metadata(vocoder_path):
    from strata.train.nets.hifigan_model import HiFiGANConfig, receptive_field

    voc = _vocoder(vocoder_path)
    assert (voc.receptive_field, voc.n_mels, voc.hop, voc.provider) == (12, 80, 256, "cpu")
    assert voc.receptive_field == receptive_field(HiFiGANConfig.v3()) and voc.chunk_frames == 512
    assert _vocoder(vocoder_path, receptive_field=20, chunk_frames=64).receptive_field == 20


@pytest.mark.parametrize("frames", [1, 5, 16, 40, 41, 53, 64, 200])
def test_chunked_equals_unchunked(vocoder_path, frames):
    """chunk_frames = 16 with 12 frames of context: several calls from 41 frames on (1, 5, 16, 40: one call)."""
    mel = _mel(frames, seed=frames)
    whole = _vocoder(vocoder_path, chunk_frames=UNCHUNKED)(mel)
    voc = _vocoder(vocoder_path, chunk_frames=16)
    spy = _Spy(voc.net)
    chunked = HifiGanVocoder(spy, voc.receptive_field, 16)(mel)
    assert chunked.shape == whole.shape == (frames * 256,) and chunked.dtype == np.float32
    assert np.abs(whole).max() > 0.05  # a real signal, not silence
    assert np.abs(chunked - whole).max() <= 1e-5
    assert len(spy.lengths) == (1 if frames <= 16 + 2 * 12 else math.ceil(frames / 16))
    assert max(spy.lengths) <= 16 + 2 * 12


def test_too_little_context_is_seen(vocoder_path):
    """Three frames short of the receptive field, the seams differ: the equality test above can fail."""
    mel = _mel(200)
    whole = _vocoder(vocoder_path, chunk_frames=UNCHUNKED)(mel)
    short = _vocoder(vocoder_path, chunk_frames=16, receptive_field=9)(mel)
    assert np.abs(short - whole).max() > 1e-4


def test_output_is_clipped_float32():
    """tanh keeps the generator inside (−1, 1); the clip guards other graphs (e.g. without the final tanh)."""
    def net(mel: np.ndarray) -> np.ndarray:
        return np.full((1, 1, mel.shape[-1] * 256), -3.0, np.float32)

    loud = HifiGanVocoder(net, receptive_field=2, chunk_frames=4, remove_dc=False, refine=0)
    audio = loud(_mel(9))
    assert audio.dtype == np.float32 and audio.shape == (9 * 256,) and (audio == -1).all()


def test_dc_offset_is_removed():
    """The network's offset goes (codec.vocoder.dc); its tone stays, whatever the chunking."""
    def net(mel: np.ndarray) -> np.ndarray:
        t = np.arange(mel.shape[-1] * 256)  # a window's own time axis: only the tone's phase per call differs
        return (0.3 + 0.5 * np.sin(2 * np.pi * t / 128)).astype(np.float32)[None, None]

    mel = _mel(40)
    raw = HifiGanVocoder(net, receptive_field=0, chunk_frames=UNCHUNKED, remove_dc=False, refine=0)(mel)
    clean = HifiGanVocoder(net, receptive_field=0, chunk_frames=UNCHUNKED, refine=0)(mel)
    assert raw.mean() == pytest.approx(0.3, abs=1e-3) and abs(clean.mean()) < 1e-3
    np.testing.assert_allclose(clean, raw - 0.3, atol=2e-3)
    chunked = HifiGanVocoder(net, receptive_field=0, chunk_frames=8, refine=0)(mel)  # 8 frames: 2048 samples
    np.testing.assert_allclose(chunked, clean, atol=1e-6)


@pytest.mark.parametrize(
    ("mel", "match"),
    [
        (np.zeros(80, np.float32), "80, frames"),
        (np.zeros((1, 80, 8), np.float32), "80, frames"),
        (np.zeros((40, 8), np.float32), "80, frames"),
        (np.zeros((80, 0), np.float32), "80, frames"),
        (np.full((80, 8), np.nan, np.float32), "NaN"),
        (np.full((80, 8), -np.inf, np.float32), "NaN"),
        (np.full((80, 8), 1e300), "NaN"),
        (np.zeros((80, 8), np.complex64), "real"),
        (np.full((80, 8), "a"), "real"),
    ],
)
def test_bad_mels_are_refused(vocoder_path, mel, match):
    with pytest.raises(InputError, match=match):
        _vocoder(vocoder_path)(mel)


def test_bad_settings_are_refused(vocoder_path):
    with pytest.raises(InputError, match="chunk_frames"):
        _vocoder(vocoder_path, chunk_frames=0)
    with pytest.raises(InputError, match="receptive_field"):
        _vocoder(vocoder_path, receptive_field=-1)


def test_model_without_receptive_field(vocoder_path, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(vocoder_path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelIntegrityError, match="receptive_field"):
        _vocoder(bare)
    voc = _vocoder(bare, receptive_field=12)
    assert (voc.n_mels, voc.hop) == (80, 256)  # read from the graph's input and the default hop
    with pytest.raises(ModelIntegrityError, match="cannot load"):
        _vocoder(tmp_path / "missing.onnx")


MEMORY_SCRIPT = """
import json, re, sys
import numpy as np
from strata.runtime import CPU
from strata.vocoder.hifigan import HifiGanVocoder

def peak_kib():  # this process's own high-water mark (ru_maxrss would include the parent's, see the test)
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", f.read()).group(1))

path, frames, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
voc = HifiGanVocoder.load(path, providers=[CPU], threads=1, chunk_frames=chunk)
mel = np.random.default_rng(0).standard_normal((80, frames), dtype=np.float32) - 4
voc(mel[:, : voc.chunk_frames + 2 * voc.receptive_field])  # warm up on one full window
before = peak_kib()
audio = voc(mel)
print(json.dumps({"growth_kib": peak_kib() - before, "bytes": audio.nbytes, "torch": "torch" in sys.modules}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_ten_minutes_in_bounded_memory(vocoder_path):
    """10 minutes (51 680 frames at 86.13 frames/s) in a fresh torch-free process: peak RSS grows < output + 48 MiB.

    The output is 51 680 × 256 = 13 230 080 float32 samples = 50.5 MiB, the bound 98.5 MiB. Unchunked, the
    tiny generator's last stage alone holds [1, 4, 13 230 080] float32 tensors of 201.9 MiB each, at least two
    at once (an MRF's input stays alive while each residual block computes its output): ≥ 454 MiB with the
    output (onnxruntime measured 1.5 GiB). Chunked (512 + 2 × 12 frames per call) such a tensor is 2.1 MiB;
    the measured growth is about the output alone (≈ 66 MiB).

    The peak is the child's VmHWM, not ``ru_maxrss``: on Linux ``ru_maxrss`` carries over the high-water
    mark of the memory image that ``exec`` replaced, i.e. the forked pytest process with torch loaded,
    which hides any growth below that size.
    """
    frames = 51_680
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(vocoder_path), str(frames), "512"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    growth_mib, out_mib = result["growth_kib"] / 1024, result["bytes"] / 2**20
    print(f"\npeak RSS growth {growth_mib:.1f} MiB for {out_mib:.1f} MiB of audio")
    assert result["bytes"] == frames * 256 * 4
    assert not result["torch"]
    assert growth_mib < out_mib + 48


def test_refinement_is_on_by_default_and_per_call(vocoder_path):
    """The served vocoder refines (codec.vocoder.refine); refine= per call or per instance; 0 is the raw network."""
    from dataclasses import replace

    from strata.frontend.audio import log_mel
    from strata.vocoder.refine import DEFAULT_ITERATIONS, refine

    voc = _vocoder(vocoder_path)
    assert voc.refine == DEFAULT_ITERATIONS > 0 and _vocoder(vocoder_path, refine=3).refine == 3
    mel = _mel(60)
    raw = voc(mel, refine=0)
    np.testing.assert_array_equal(raw, replace(voc, refine=0)(mel))
    three = voc(mel, refine=3)
    np.testing.assert_array_equal(three, _vocoder(vocoder_path, refine=3)(mel))
    np.testing.assert_allclose(three, np.clip(refine(raw, mel, 3), -1, 1), atol=1e-6)  # DC removal comes first
    assert np.abs(three - raw).max() > 1e-3
    default = voc(mel)
    np.testing.assert_array_equal(default, voc(mel, refine=DEFAULT_ITERATIONS))
    assert np.abs(log_mel(default) - mel).mean() < np.abs(log_mel(raw) - mel).mean()
    assert (voc.iterations(1), voc.iterations(2), voc.iterations(2, 0), voc.iterations(9, 5)) == (0, 8, 0, 5)
    one_frame = voc(_mel(1))  # 256 samples: too few for the STFT, so not refined (and no error)
    np.testing.assert_array_equal(one_frame, voc(_mel(1), refine=0))


@pytest.mark.parametrize("value", [-1, 33, 1.5, True, "2", None])
def test_bad_refine_is_refused(vocoder_path, value):
    voc = _vocoder(vocoder_path)
    if value is not None:
        with pytest.raises(InputError, match="refine"):
            voc(_mel(8), refine=value)
    with pytest.raises(InputError, match="refine"):
        HifiGanVocoder(voc.net, voc.receptive_field, refine=value)


def test_refinement_needs_the_frontend_mel():
    """Another mel layout cannot be refined against (the STFT and filterbank are the frontend's): refine=0 only."""
    def net(mel: np.ndarray) -> np.ndarray:
        return np.zeros((1, 1, mel.shape[-1] * 128), np.float32)

    with pytest.raises(InputError, match="pass refine=0"):
        HifiGanVocoder(net, receptive_field=0, n_mels=40, hop=128)
    voc = HifiGanVocoder(net, receptive_field=0, n_mels=40, hop=128, refine=0)
    assert voc(np.zeros((40, 5), np.float32)).shape == (640,)
    with pytest.raises(InputError, match="pass refine=0"):
        voc(np.zeros((40, 5), np.float32), refine=2)
