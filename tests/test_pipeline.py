"""The image pipeline end to end, on the tiny exported model (see conftest)."""

import numpy as np
import pytest
from strata.bitstream import parse, truncate
from strata.errors import (
    ChunkCorruptedError,
    HeaderError,
    InputError,
    LayersError,
    LimitExceededError,
    StreamLimitError,
    StreamModelError,
    TruncatedStreamError,
    UnknownModelError,
    WeightsMismatchError,
)
from strata.image import ImageCodec, ImageCodes

from tests.conftest import synthetic_image

IMG = synthetic_image(37, 53, seed=3)  # not a multiple of the factor


def test_round_trip_matches_codes_path(tiny_codec):
    data = tiny_codec.compress(IMG)
    out = tiny_codec.decompress(data)
    assert out.shape == IMG.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, tiny_codec.decode(tiny_codec.encode(IMG)))
    codes = tiny_codec.decompress_codes(data)
    np.testing.assert_array_equal(codes.codes, tiny_codec.encode(IMG).codes)
    assert codes.size == (37, 53) and codes.codes.shape == (4, 5, 7)


def test_truncation_equals_layers_argument(tiny_codec):
    full = tiny_codec.compress(IMG)
    header_len = len(full) - parse(full).header.payload_bytes
    for k in range(1, tiny_codec.layers + 1):
        by_layers = tiny_codec.decompress(full, layers=k)
        np.testing.assert_array_equal(tiny_codec.decompress(truncate(full, k)), by_layers)
        assert tiny_codec.compress(IMG, k) == truncate(full, k)
        # a stream simply cut after chunk k (progressive download) decodes the same with partial=True
        cut = full[: header_len + sum(n for n, _ in parse(full).header.chunks[:k])]
        np.testing.assert_array_equal(tiny_codec.decompress(cut, partial=True), by_layers)
        if k < tiny_codec.layers:
            with pytest.raises(TruncatedStreamError):
                tiny_codec.decompress(cut)


def test_more_layers_reduce_error(tiny_codec):
    full = tiny_codec.compress(IMG)
    errs = [float(((tiny_codec.decompress(full, k).astype(float) - IMG) ** 2).mean()) for k in (1, 4)]
    assert errs[1] < errs[0]


def test_deterministic_bytes(tiny_codec, tiny_registry):
    other = ImageCodec.load(tiny_registry, "tiny-image")
    assert tiny_codec.compress(IMG) == tiny_codec.compress(IMG) == other.compress(IMG)


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (9, 1), (3, 70)])
def test_odd_sizes(tiny_codec, shape):
    img = synthetic_image(*shape)
    assert tiny_codec.decompress(tiny_codec.compress(img)).shape == img.shape


def test_layer_arguments(tiny_codec):
    data = tiny_codec.compress(IMG, 2)
    for bad in (0, 3, -1, True, 2.0):
        with pytest.raises(LayersError):
            tiny_codec.decompress(data, layers=bad)
    for bad in (0, 5):
        with pytest.raises(LayersError):
            tiny_codec.compress(IMG, bad)


def test_stream_checks(tiny_codec):
    data = bytearray(tiny_codec.compress(IMG))
    data[-2] ^= 0x40
    with pytest.raises(ChunkCorruptedError):
        tiny_codec.decompress(bytes(data))
    assert tiny_codec.decompress(bytes(data), layers=1).shape == IMG.shape  # only the last chunk is damaged


def _restamp(codec, data: bytes, **changes) -> bytes:
    from dataclasses import replace

    from strata.bitstream import pack

    s = parse(data)
    return pack(replace(s.header, **changes), list(s.chunks))


def test_wrong_model_or_weights(tiny_codec):
    data = tiny_codec.compress(IMG)
    with pytest.raises(StreamModelError):
        tiny_codec.decompress(_restamp(tiny_codec, data, model="other-model"))
    with pytest.raises(WeightsMismatchError):
        tiny_codec.decompress(_restamp(tiny_codec, data, weights=b"\0" * 8))
    with pytest.raises(HeaderError):
        tiny_codec.decompress(_restamp(tiny_codec, data, grid=(6, 7)))


def test_huge_claim_refused_before_allocation(tiny_codec):
    data = _restamp(tiny_codec, tiny_codec.compress(IMG), size=(200_000, 200_000), grid=(25_000, 25_000),
                    padding=(0, 0))
    with pytest.raises(StreamLimitError):
        tiny_codec.decompress(data)


def test_decode_validates_codes(tiny_codec):
    codes = tiny_codec.encode(IMG)
    with pytest.raises(InputError):
        tiny_codec.decode(ImageCodes(codes.codes[:, :2], codes.size, codes.model))
    with pytest.raises(InputError):
        tiny_codec.decode(ImageCodes(codes.codes + 100, codes.size, codes.model))
    with pytest.raises(InputError):
        tiny_codec.decode(ImageCodes(codes.codes.astype(np.float32), codes.size, codes.model))
    with pytest.raises(LimitExceededError):
        big = ImageCodes(np.zeros((1, 10_000, 10_000), np.int64), (80_000, 80_000), codes.model)
        tiny_codec.decode(big)


def test_unknown_model(tiny_registry):
    with pytest.raises(UnknownModelError):
        ImageCodec.load(tiny_registry, "nope")


def test_random_corruption_never_crashes(tiny_codec):
    from strata.errors import BitstreamError

    rng = np.random.default_rng(0)
    data = tiny_codec.compress(IMG)
    for _ in range(100):
        d = bytearray(data)
        d[rng.integers(len(d))] ^= 1 << rng.integers(8)
        try:
            out = tiny_codec.decompress(bytes(d))
            assert out.shape == IMG.shape
        except BitstreamError:
            pass
