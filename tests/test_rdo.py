"""Rate–distortion optimised code selection: nearest codes at λ → 0, cheaper streams as λ grows, the decoder
unchanged, every context kind, and the codec's λ setting."""

import dataclasses

import numpy as np
import pytest
from strata.entropy.prior import CodePrior
from strata.errors import InputError, ModelIntegrityError
from strata.image import ImageCodec
from strata.quantize.rdo import code_prices, energy_scales, rd_encode
from strata.quantize.search import ResidualCodebooks

from tests.conftest import synthetic_image, synthetic_sound

RNG = np.random.default_rng(0)
SOUND = synthetic_sound(2.0, seed=12)
BOOKS = ResidualCodebooks(RNG.standard_normal((3, 16, 4)).astype(np.float32))


def fitted_prior(kinds: list[str]) -> CodePrior:
    train = [BOOKS.encode(RNG.standard_normal((1, 4, 12, 10)).astype(np.float32))[:, 0] for _ in range(6)]
    return CodePrior.fit(train, [16] * 3, kinds)


KINDS = [["none", "none", "none"], ["above", "parent", "above"], ["none", "parent", "parent"]]


@pytest.mark.parametrize("kinds", KINDS)
def test_tiny_lambda_gives_the_nearest_codes(kinds):
    prior = fitted_prior(kinds)
    z = RNG.standard_normal((1, 4, 9, 7)).astype(np.float32)
    np.testing.assert_array_equal(rd_encode(BOOKS, prior, z, None, 1e-9), BOOKS.encode(z))
    np.testing.assert_array_equal(rd_encode(BOOKS, prior, z, 2, 0.0), BOOKS.encode(z, 2))


@pytest.mark.parametrize("kinds", [["none", "none", "none"], ["above", "parent", "above"]])
def test_larger_lambda_lowers_the_rate_and_raises_the_error(kinds):
    prior = fitted_prior(kinds)
    z = RNG.standard_normal((1, 4, 16, 16)).astype(np.float32)
    bits, errors = [], []
    for lam in (0.0, 0.2, 1.0):
        codes = rd_encode(BOOKS, prior, z, None, lam)
        bits.append(prior.cross_entropy_bits(codes[:, 0]).sum())
        errors.append(float(((BOOKS.decode(codes) - z) ** 2).sum()))
    assert bits[0] > bits[1] > bits[2]
    assert errors[0] < errors[1] < errors[2]
    # Each layer's choice minimises its own cost: no code is both farther and dearer than the nearest.
    codes = rd_encode(BOOKS, prior, z, 1, 1.0)[0, 0].ravel()
    price = code_prices(prior, 0)
    ctx = prior.contexts(0, codes.reshape(1, 16, 16)).ravel()
    nearest = BOOKS.encode(z, 1)[0, 0].ravel()
    flat = z[0].transpose(1, 2, 0).reshape(-1, 4)
    dist = ((flat[:, None, :] - BOOKS.codebooks[0][None]) ** 2).sum(-1)
    pick = np.arange(len(codes))
    cost_chosen = dist[pick, codes] + price[ctx, codes]
    cost_nearest = dist[pick, nearest] + price[ctx, nearest]
    assert (cost_chosen <= cost_nearest + 1e-4).all()


def test_bad_lambda_and_shapes_are_refused():
    prior = fitted_prior(["none"] * 3)
    z = RNG.standard_normal((1, 4, 4, 4)).astype(np.float32)
    for lam in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="λ"):
            rd_encode(BOOKS, prior, z, None, lam)
    with pytest.raises(InputError, match="latent"):
        rd_encode(BOOKS, prior, np.concatenate([z, z]), None, 0.1)


@pytest.mark.parametrize("kinds", KINDS)
def test_per_layer_scales(kinds):
    prior = fitted_prior(kinds)
    z = RNG.standard_normal((1, 4, 10, 9)).astype(np.float32)
    ones = rd_encode(BOOKS, prior, z, None, 0.5, [1, 1, 1])
    np.testing.assert_array_equal(ones, rd_encode(BOOKS, prior, z, None, 0.5))
    np.testing.assert_array_equal(rd_encode(BOOKS, prior, z, None, 0.5, [0, 0, 0]), BOOKS.encode(z))
    # A layer's scale moves only that layer and the residuals after it: layer 1 at λ, the others nearest.
    mixed = rd_encode(BOOKS, prior, z, None, 0.5, [1, 0, 0])
    np.testing.assert_array_equal(mixed[:1], rd_encode(BOOKS, prior, z, 1, 0.5))
    for bad in ([1, 1], [1, -1, 1], [1, float("nan"), 1], ["a", 1, 1]):
        with pytest.raises(InputError, match="scales"):
            rd_encode(BOOKS, prior, z, None, 0.5, bad)


def test_energy_scales():
    assert energy_scales([8.0, 4.0, 2.0, 1.0]) == (1.0, 1.0, 0.5, 0.25)
    for bad in ([], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError):
            energy_scales(bad)


def test_codec_reads_scales_from_the_manifest(tiny_codec):
    parts = (tiny_codec.analysis, tiny_codec.synthesis, tiny_codec.quantizer, tiny_codec.prior)
    scales = [1.0, 1.0, 0.5, 0.25][: tiny_codec.layers]
    entry = dataclasses.replace(tiny_codec.entry, extra={**tiny_codec.entry.extra, "rdo_lambda": 0.05,
                                                         "rdo_lambda_scales": scales})
    codec = ImageCodec(entry, *parts)
    assert codec.rdo_scales == tuple(scales)
    image = synthetic_image(40, 56, seed=9)
    flat = ImageCodec(dataclasses.replace(entry, extra={**entry.extra, "rdo_lambda_scales": None}), *parts)
    assert flat.rdo_scales is None
    np.testing.assert_array_equal(codec.decode(codec.encode(image)), tiny_codec.decompress(codec.compress(image)))
    bad = dataclasses.replace(entry, extra={**entry.extra, "rdo_lambda_scales": [1.0]})
    with pytest.raises(ModelIntegrityError, match="scales"):
        ImageCodec(bad, *parts)


def test_codec_streams_with_rdo_decode_unchanged_and_keep_prefixes(tiny_codec):
    image = synthetic_image(48, 64, seed=5)
    codec = ImageCodec(tiny_codec.entry, tiny_codec.analysis, tiny_codec.synthesis, tiny_codec.quantizer,
                       tiny_codec.prior, rdo_lambda=0.05)
    assert tiny_codec.rdo_lambda == 0.0 and codec.rdo_lambda == 0.05
    full = codec.compress(image)
    assert len(full) <= len(tiny_codec.compress(image))
    codes = codec.encode(image)
    for k in range(1, codec.layers + 1):
        np.testing.assert_array_equal(tiny_codec.decompress(full, k), codec.decode(codes, k))  # the same decoder
        assert codec.compress(image, k) == tiny_codec.compress_codes(dataclasses.replace(
            codes, codes=codes.codes[:k]))  # a prefix of the RD codes is the RD codes of the prefix


def test_codec_lambda_from_manifest_and_checks(tiny_codec):
    entry = dataclasses.replace(tiny_codec.entry, extra={**tiny_codec.entry.extra, "rdo_lambda": 0.01})
    parts = (tiny_codec.analysis, tiny_codec.synthesis, tiny_codec.quantizer, tiny_codec.prior)
    assert ImageCodec(entry, *parts).rdo_lambda == 0.01
    assert ImageCodec(entry, *parts, rdo_lambda=0.0).rdo_lambda == 0.0  # the argument wins
    for bad in (-0.1, float("nan"), "0.1", True):
        with pytest.raises(InputError, match="rdo_lambda"):
            ImageCodec(tiny_codec.entry, *parts, rdo_lambda=bad)


def test_audio_codec_streams_with_rdo_decode_unchanged(tiny_audio_codec):
    """The mel codec takes the same search: smaller streams, the same decoder, prefixes kept, λ = 0 nearest."""
    from strata.audio import AudioCodec

    c = tiny_audio_codec
    parts = (c.entry, c.analysis, c.synthesis, c.quantizer, c.prior, c.vocoder)
    rdo = AudioCodec(*parts, rdo_lambda=0.5)
    assert c.rdo_lambda == 0.0 and rdo.rdo_lambda == 0.5
    assert AudioCodec(*parts, rdo_lambda=0.0).encode(SOUND).codes.tolist() == c.encode(SOUND).codes.tolist()
    full = rdo.compress(SOUND)
    assert len(full) < len(c.compress(SOUND))
    codes = rdo.encode(SOUND)
    for k in range(1, c.layers + 1):
        np.testing.assert_array_equal(c.decompress_mel(full, k), rdo.decode_mel(codes, k))  # the same decoder
        assert rdo.compress(SOUND, k) == c.compress_codes(dataclasses.replace(codes, codes=codes.codes[:k]))
    entry = dataclasses.replace(c.entry, extra={**c.entry.extra, "rdo_lambda": 0.25})
    assert AudioCodec(entry, *parts[1:]).rdo_lambda == 0.25
    with pytest.raises(InputError, match="rdo_lambda"):
        AudioCodec(*parts, rdo_lambda=-1.0)
