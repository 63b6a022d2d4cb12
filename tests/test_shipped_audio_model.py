"""Every shipped audio model (models/manifest.json): golden stream, parity, coding, the served vocoder.

The golden stream ``tests/expected/<model>.strata`` is the stream of a fixed synthetic sound, and
``<model>.mel.npy`` its decoded log-mel. Any change that alters the bytes (new weights, another
prior, a format change) fails here: bump the format version or regenerate on purpose with
``STRATA_REGENERATE_GOLDEN=1 pytest tests/test_shipped_audio_model.py``.
"""

import os

import numpy as np
import pytest
from strata.bitstream import parse, truncate
from strata.registry import Registry

from tests.conftest import ROOT, shipped_checkpoint, synthetic_sound

EXPECTED = ROOT / "tests" / "expected"
GOLDEN_SOUND = synthetic_sound(2.5, seed=11)


SHIPPED = Registry(ROOT / "models").names("audio")


def vocoder_owner(codec) -> str:
    """The model whose checkpoints hold the vocoders' weights (a model may share another's vocoder files)."""
    return codec.entry.extra.get("vocoders_from", codec.name)


@pytest.fixture(scope="module", params=SHIPPED)
def codec(shipped_registry, request):
    pytest.importorskip("soundfile")
    from strata.audio import AudioCodec

    return AudioCodec.load(shipped_registry, request.param)


def test_golden_stream(codec):
    stream_path = EXPECTED / f"{codec.name}.strata"
    mel_path = EXPECTED / f"{codec.name}.mel.npy"
    if os.environ.get("STRATA_REGENERATE_GOLDEN") == "1":
        data = codec.compress(GOLDEN_SOUND)
        stream_path.write_bytes(data)
        np.save(mel_path, codec.decompress_mel(data))
    golden = stream_path.read_bytes()
    header = parse(golden).header
    assert header.weights == codec.entry.weights_prefix, (
        "the golden stream was made with other weights: regenerate it on purpose (STRATA_REGENERATE_GOLDEN=1)"
    )
    assert header.size == (GOLDEN_SOUND.size, 22050)
    # Decoding side: entropy decoding is exact, the synthesis network agrees to rounding.
    np.testing.assert_allclose(codec.decompress_mel(golden), np.load(mel_path), atol=1e-3)
    audio = codec.decompress(golden)
    assert audio.shape == GOLDEN_SOUND.shape and audio.dtype == np.float32 and np.isfinite(audio).all()
    # Encoding side: the same sound gives the same bytes (determinism across runs and processes).
    assert codec.compress(GOLDEN_SOUND) == golden


def test_truncated_golden_decodes_as_layers(codec):
    golden = (EXPECTED / f"{codec.name}.strata").read_bytes()
    for k in (1, codec.layers // 2):
        np.testing.assert_array_equal(codec.decompress_mel(truncate(golden, k)), codec.decompress_mel(golden, k))


def test_onnx_matches_torch(codec):
    torch = pytest.importorskip("torch")
    from strata.export.audio import load_audio_checkpoint
    from strata.train.vocoder import load_generator

    model, _, _ = load_audio_checkpoint(shipped_checkpoint(codec.name))
    mel = (np.random.default_rng(0).standard_normal((1, 80, 64)) - 5).astype(np.float32)
    with torch.no_grad():
        y_onnx = codec.analysis(mel)
        np.testing.assert_allclose(y_onnx, model.g_a(torch.from_numpy(mel)).numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(codec.synthesis(y_onnx), model.g_s(torch.from_numpy(y_onnx)).numpy(),
                                   atol=1e-4, rtol=1e-4)
        gen = load_generator(shipped_checkpoint(vocoder_owner(codec), "vocoder.pt"))
        wave_torch = gen(torch.from_numpy(mel)).numpy()
    np.testing.assert_allclose(codec.vocoder.net(mel), wave_torch, atol=1e-3)
    np.testing.assert_allclose(codec.quantizer.codebooks, model.quantizer.codebooks().numpy())


def test_vocos_matches_torch(codec):
    """A shipped Vocos vocoder (``vocoder=vocos``) against its float16 torch weights, up to the STFT head."""
    if codec.vocos is None:
        pytest.skip(f"{codec.name} has no Vocos vocoder")
    torch = pytest.importorskip("torch")
    from strata.train.vocoder import load_generator
    from strata.vocoder.vocos import VocosVocoder

    gen = load_generator(shipped_checkpoint(vocoder_owner(codec), "vocos.pt"))
    mel = (np.random.default_rng(1).standard_normal((80, 48)) - 5).astype(np.float32)
    with torch.no_grad():
        ref = gen(torch.from_numpy(mel)[None])[0, 0].numpy()
    voc = codec.vocos
    raw = VocosVocoder(voc.net, voc.receptive_field, chunk_frames=1000, remove_dc=False, refine=0)
    np.testing.assert_allclose(raw(mel), np.clip(ref, -1, 1), atol=1e-3)


def test_conditional_prior_beats_static_and_coding_is_efficient(codec, shipped_registry):
    from strata.entropy.prior import CodePrior

    static = CodePrior.load(shipped_registry.path(codec.entry, "prior_static"))
    codes = codec.encode(GOLDEN_SOUND).codes
    conditional_bits = codec.prior.cross_entropy_bits(codes).sum()
    assert conditional_bits < static.cross_entropy_bits(codes).sum()
    stream = parse(codec.compress(GOLDEN_SOUND))
    assert 8 * stream.header.payload_bytes <= 1.01 * conditional_bits + 32 * codec.layers  # word padding


def test_layers_improve_the_mel(codec):
    from strata.frontend.audio import log_mel

    data = codec.compress(GOLDEN_SOUND)
    target = log_mel(np.pad(GOLDEN_SOUND, (0, -GOLDEN_SOUND.size % 256)))
    err = []
    for k in (1, codec.layers):
        mel = codec.decompress_mel(data, k)
        n = min(mel.shape[1], target.shape[1])
        err.append(float(np.sqrt(((mel[:, :n] - target[:, :n]) ** 2).mean())))
    assert err[1] < err[0]


def test_served_vocoder_follows_the_mel(codec):
    """The shipped HiFi-GAN with its default refinement lands within 0.15 of the log-mel it is given (mean
    |Δ|; measured 0.11 on this sound, 0.10 on a speech clip), and at most half as far as the raw network."""
    from strata.frontend.audio import log_mel

    x = np.pad(GOLDEN_SOUND, (0, -GOLDEN_SOUND.size % 256))
    mel = log_mel(x)
    raw, served = codec.vocoder(mel, refine=0), codec.vocoder(mel)
    d_raw, d_served = (float(np.abs(log_mel(y) - mel).mean()) for y in (raw, served))
    assert d_served < 0.15 and d_served < 0.5 * d_raw, (d_raw, d_served)
