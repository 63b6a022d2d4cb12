import zlib

import numpy as np
import pytest
from strata import bitstream
from strata.bitstream import Modality, StreamHeader, StreamLimits, pack, parse, truncate
from strata.errors import (
    BadMagicError,
    BitstreamError,
    ChunkCorruptedError,
    HeaderError,
    LayersError,
    StreamLimitError,
    TrailingDataError,
    TruncatedStreamError,
    UnsupportedVersionError,
)


def header(**kw) -> StreamHeader:
    base = dict(modality=Modality.IMAGE, model="m1", weights=bytes(range(8)), size=(30, 50), grid=(4, 7),
                padding=(2, 6), chunks=())
    base.update(kw)
    return StreamHeader(**base)


CHUNKS = [b"first layer", b"second", b"third chunk bytes"]


def stream() -> bytes:
    return pack(header(), CHUNKS)


def test_round_trip():
    s = parse(stream())
    assert s.header.model == "m1" and s.header.size == (30, 50) and s.header.grid == (4, 7)
    assert s.header.padding == (2, 6) and s.header.weights == bytes(range(8))
    assert [s.chunk(i) for i in range(3)] == CHUNKS
    assert s.header.chunks[1] == (len(CHUNKS[1]), zlib.crc32(CHUNKS[1]))


def test_layout_starts_with_magic_and_version():
    data = stream()
    assert data[:4] == b"STRA" and data[4] == 1


def test_truncate_rewrites_header():
    cut = truncate(stream(), 2)
    s = parse(cut)
    assert s.header.layers == 2 and list(s.chunks) == CHUNKS[:2]
    assert cut == pack(header(), CHUNKS[:2])
    with pytest.raises(LayersError):
        truncate(stream(), 4)
    with pytest.raises(LayersError):
        truncate(stream(), 0)


def test_partial_keeps_complete_chunks():
    data = stream()
    head = len(data) - sum(map(len, CHUNKS))
    s = parse(data[: head + len(CHUNKS[0]) + 3], partial=True)
    assert s.layers == 1 and s.header.layers == 3
    with pytest.raises(TruncatedStreamError):
        parse(data[: head + len(CHUNKS[0]) + 3])
    with pytest.raises(TruncatedStreamError):  # not even one complete chunk
        parse(data[: head + 2], partial=True)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: b"JUNK" + d[4:], BadMagicError),
        (lambda d: b"", BadMagicError),
        (lambda d: b"<html>", BadMagicError),
        (lambda d: d[:3], TruncatedStreamError),
        (lambda d: d[:4] + bytes([2]) + d[5:], UnsupportedVersionError),
        (lambda d: d[:6], TruncatedStreamError),
        (lambda d: d[:20], TruncatedStreamError),
        (lambda d: d[:-1], TruncatedStreamError),
        (lambda d: d + b"x", TrailingDataError),
        (lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:], HeaderError),
        (lambda d: d[:5] + b"\xff\xff" + d[7:], HeaderError),
    ],
)
def test_errors(mutate, error):
    with pytest.raises(error):
        parse(mutate(stream()))


def test_flipped_chunk_byte_is_detected_on_use():
    data = bytearray(stream())
    data[-3] ^= 0x10
    s = parse(bytes(data))
    assert s.chunk(0) == CHUNKS[0]
    with pytest.raises(ChunkCorruptedError):
        s.chunk(2)


@pytest.mark.parametrize(("layer", "intact"), [(None, 3), (0, 0), (1, 1), (2, 2)])
def test_intact_layers_stop_at_the_first_corrupted_chunk(layer, intact):
    data = bytearray(stream())
    head = len(data) - sum(map(len, CHUNKS))
    if layer is not None:
        data[head + sum(map(len, CHUNKS[:layer]))] ^= 0x01  # first byte of that layer's chunk
    assert parse(bytes(data)).intact_layers == intact
    cut = parse(bytes(data[: head + len(CHUNKS[0]) + len(CHUNKS[1])]), partial=True)
    assert cut.layers == 2 and cut.intact_layers == min(intact, 2)


def test_huge_image_refused_from_header():
    data = pack(header(size=(100_000, 100_000), grid=(12_500, 12_500), padding=(0, 0)), CHUNKS)
    with pytest.raises(StreamLimitError):
        parse(data)
    assert parse(data, StreamLimits(max_pixels=10**10)).header.size == (100_000, 100_000)


def test_audio_limits():
    h = header(modality=Modality.AUDIO, size=(10**9, 22050), grid=(10, 10), padding=(0, 0))
    with pytest.raises(StreamLimitError):
        parse(pack(h, CHUNKS))


def test_rejects_bad_fields_when_writing():
    with pytest.raises(HeaderError):
        pack(header(model="é"), CHUNKS)
    with pytest.raises(HeaderError):
        pack(header(model="x" * 65), CHUNKS)
    with pytest.raises(LayersError):
        pack(header(), [])
    with pytest.raises(HeaderError):
        pack(header(size=(2**32, 1)), CHUNKS)


def test_random_corruption_only_raises_bitstream_errors():
    rng = np.random.default_rng(0)
    data = stream()
    for _ in range(500):
        d = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            d[rng.integers(len(d))] ^= 1 << rng.integers(8)
        cut = bytes(d[: rng.integers(0, len(d) + 1)]) if rng.random() < 0.3 else bytes(d)
        try:
            s = parse(cut, partial=bool(rng.random() < 0.5))
            for i in range(s.layers):
                s.chunk(i)
        except BitstreamError:
            pass
    for _ in range(200):
        junk = rng.integers(0, 256, rng.integers(0, 64)).astype(np.uint8).tobytes()
        with pytest.raises(BitstreamError):
            parse(b"STRA\x01" + junk)


def test_max_layers_constant():
    assert bitstream.MAX_LAYERS == 64
