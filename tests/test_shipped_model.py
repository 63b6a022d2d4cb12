"""The shipped model (models/manifest.json): golden stream, ONNX-vs-torch parity, entropy coding.

The golden stream ``tests/expected/<model>.strata`` is the stream of a fixed synthetic image.
Any change that alters the bytes (new weights, a different prior, a format change) fails here:
bump the format version or regenerate on purpose with ``STRATA_REGENERATE_GOLDEN=1 pytest
tests/test_shipped_model.py``.
"""

import os

import numpy as np
import pytest
from strata.bitstream import parse
from strata.frontend.image import read_image, write_image
from strata.image import ImageCodec

from tests.conftest import ROOT, shipped_checkpoint, synthetic_image

EXPECTED = ROOT / "tests" / "expected"
GOLDEN_IMAGE = synthetic_image(96, 136, seed=11)


@pytest.fixture(scope="module")
def codec(shipped_registry):
    return ImageCodec.load(shipped_registry)


def test_golden_stream(codec):
    stream_path = EXPECTED / f"{codec.name}.strata"
    decoded_path = EXPECTED / f"{codec.name}.png"
    if os.environ.get("STRATA_REGENERATE_GOLDEN") == "1":
        data = codec.compress(GOLDEN_IMAGE)
        stream_path.write_bytes(data)
        decoded_path.write_bytes(write_image(codec.decompress(data)))
    golden = stream_path.read_bytes()
    header = parse(golden).header
    assert header.weights == codec.entry.weights_prefix, (
        "the golden stream was made with other weights: regenerate it on purpose (STRATA_REGENERATE_GOLDEN=1)"
    )
    # Decoding side: entropy decoding is exact, the synthesis network agrees to rounding.
    decoded = codec.decompress(golden)
    expected = read_image(decoded_path.read_bytes())
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
    # Encoding side: the same image gives the same bytes (determinism across runs and processes).
    assert codec.compress(GOLDEN_IMAGE) == golden


def test_onnx_matches_torch(codec):
    torch = pytest.importorskip("torch")
    from strata.export.image import load_checkpoint

    model, _, _ = load_checkpoint(shipped_checkpoint(codec.name))
    x = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    with torch.no_grad():
        y_torch = model.g_a(torch.from_numpy(x)).numpy()
        y_onnx = codec.analysis(x)
        np.testing.assert_allclose(y_onnx, y_torch, atol=1e-4, rtol=1e-4)
        x_torch = model.g_s(torch.from_numpy(y_onnx)).numpy()
    np.testing.assert_allclose(codec.synthesis(y_onnx), x_torch, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(codec.quantizer.codebooks, model.quantizer.codebooks().numpy())


def test_conditional_prior_beats_static_and_coding_is_efficient(codec, shipped_registry):
    from strata.entropy.prior import CodePrior

    static = CodePrior.load(shipped_registry.path(codec.entry, "prior_static"))
    codes = codec.encode(GOLDEN_IMAGE).codes
    conditional_bits = codec.prior.cross_entropy_bits(codes).sum()
    assert conditional_bits < static.cross_entropy_bits(codes).sum()
    stream = parse(codec.compress(GOLDEN_IMAGE))
    coded_bits = 8 * stream.header.payload_bytes
    assert coded_bits <= 1.01 * conditional_bits + 32 * codec.layers  # word padding per chunk


def test_layers_improve_quality(codec):
    data = codec.compress(GOLDEN_IMAGE)
    mse = [float(((codec.decompress(data, k).astype(float) - GOLDEN_IMAGE) ** 2).mean()) for k in (1, codec.layers)]
    assert mse[1] < mse[0]
