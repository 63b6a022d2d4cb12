"""Tiled inference: bounded memory at any image size, the same output as one call."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from strata.chunking import apply_tiled, receptive_field
from strata.errors import InputError

from tests.conftest import synthetic_image


def box(x: np.ndarray, r: int) -> np.ndarray:
    """A (2r+1)² box sum over the last two axes with zero padding: a convolution of receptive field r."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)])
    out = np.zeros_like(x)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out += p[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    return out


def downsample(x: np.ndarray) -> np.ndarray:
    """A stride-4 network: box filter of radius 3, then every 4th position (a 1/4 scale)."""
    return box(x, 3)[..., ::4, ::4]


def test_receptive_field_is_measured():
    x = np.random.default_rng(0).random((1, 2, 40, 40))
    assert receptive_field(lambda z: box(z, 3), x) == 3
    assert receptive_field(lambda z: box(z, 5), x) == 5
    assert receptive_field(lambda z: z * 2, x) == 0


@pytest.mark.parametrize(("shape", "tile"), [((1, 2, 37, 53), 8), ((2, 1, 64, 16), 12), ((1, 1, 9, 9), 4)])
def test_tiles_equal_one_call_with_enough_context(shape, tile):
    x = np.random.default_rng(1).random(shape)
    np.testing.assert_allclose(apply_tiled(lambda z: box(z, 3), x, tile=tile, context=3), box(x, 3), rtol=1e-12)
    y = np.random.default_rng(2).random((1, 2, 48, 72))
    np.testing.assert_allclose(apply_tiled(downsample, y, tile=8, context=4, scale=Fraction(1, 4), align=4),
                               downsample(y), rtol=1e-12)


def test_too_little_context_shows():
    x = np.random.default_rng(3).random((1, 1, 40, 40))
    assert not np.allclose(apply_tiled(lambda z: box(z, 3), x, tile=8, context=1), box(x, 3))


def test_bad_tiles_are_refused():
    x = np.zeros((1, 1, 8, 8))
    with pytest.raises(InputError, match="chunk"):
        apply_tiled(lambda z: z, x, tile=0, context=0)
    with pytest.raises(InputError, match="two axes"):
        apply_tiled(lambda z: z, np.zeros(20), tile=4, context=0)


def test_image_codec_tiles_match_one_call(tiny_registry):
    """Small tiles everywhere (no one-call shortcut): the same codes, streams and pixels as one call."""
    from strata import ImageCodec

    whole = ImageCodec.load(tiny_registry)
    tiled = ImageCodec.load(tiny_registry, tile=32)
    tiled.one_pass_pixels = 0
    image = synthetic_image(150, 203, 5)
    codes = whole.encode(image)
    np.testing.assert_array_equal(tiled.encode(image).codes, codes.codes)
    assert tiled.compress(image) == whole.compress(image)
    np.testing.assert_array_equal(tiled.decode(codes), whole.decode(codes))
    np.testing.assert_array_equal(tiled.decode(codes, 2), whole.decode(codes, 2))
    with pytest.raises(InputError, match="multiple of 8"):
        ImageCodec.load(tiny_registry, tile=12)


def test_shipped_contexts_cover_the_measured_receptive_fields(shipped_registry):
    from strata import ImageCodec
    from strata.image import contexts, receptive_fields

    codec = ImageCodec.load(shipped_registry)
    measured = receptive_fields(codec.analysis, codec.synthesis, codec.quantizer.dim, codec.factor)
    assert codec.entry.extra["receptive_field"] == measured
    assert (codec.context_a, codec.context_s) == contexts(measured, codec.factor)
    assert codec.context_a > measured["analysis"] and codec.context_s > measured["synthesis"]


def test_search_in_blocks_equals_one_block(monkeypatch):
    from strata.quantize import search

    rng = np.random.default_rng(4)
    books = search.ResidualCodebooks(rng.standard_normal((3, 16, 4)).astype(np.float32))
    latent = rng.standard_normal((1, 4, 13, 11)).astype(np.float32)
    whole = books.encode(latent)
    monkeypatch.setattr(search, "SEARCH_BLOCK", 7)
    np.testing.assert_array_equal(books.encode(latent), whole)


BOUNDED = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from strata import ImageCodec, ImageCodes, Registry
    from strata.bitstream import StreamLimits

    codec = ImageCodec.load(Registry(sys.argv[1]), limits=StreamLimits(max_pixels=4096 * 4096))
    codec.one_pass_pixels = int(sys.argv[2])
    codec.decompress(codec.compress(np.full((64, 64, 3), 9, np.uint8)))  # warm up the sessions
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    side = int(sys.argv[3])
    stream = codec.compress_codes(ImageCodes(np.zeros((1, side // 8, side // 8), np.int64), (side, side), codec.name))
    pixels = codec.decompress(stream)
    assert pixels.shape == (side, side, 3)
    del pixels
    codec.compress(np.full((side, side, 3), 128, np.uint8))
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"{grew:.0f}")
    """
)


@pytest.mark.slow
def test_a_large_image_fits_in_bounded_memory(shipped_registry, tmp_path):
    """A 56-byte stream claiming 2048×2048, and a 2048² image, through the shipped model: peak memory grows by
    the image's own arrays and one tile, not by the networks' activations over the whole image. Measured
    (docs/reliability.md): 4096² grows by about 0.6 GiB tiled against 8.4 GiB in one call."""
    def grown(one_pass_pixels: int) -> float:
        argv = [sys.executable, "-c", BOUNDED, str(shipped_registry.root), str(one_pass_pixels), "2048"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        return float(result.stdout.split()[-1])

    tiled = grown(1 << 20)
    assert tiled < 900, f"peak RSS grew by {tiled:.0f} MiB"  # 0.45 GiB measured; one call: 2.1 GiB


def test_search_leaves_a_channels_last_latent_alone():
    from strata.quantize.search import ResidualCodebooks

    rng = np.random.default_rng(5)
    books = ResidualCodebooks(rng.standard_normal((2, 8, 4)).astype(np.float32))
    latent = np.ascontiguousarray(rng.standard_normal((1, 6, 5, 4)).astype(np.float32)).transpose(0, 3, 1, 2)
    before = latent.copy()
    books.encode(latent)
    np.testing.assert_array_equal(latent, before)
