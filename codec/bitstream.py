"""The Strata bitstream, format v1: one header, then one chunk per layer.

Layout (little-endian)::

    offset  size  field
    0       4     magic  b"STRA"
    4       1     format version (1)
    5       2     header length N: bytes from offset 7 up to and including the header CRC
    7       1     modality (0 = image, 1 = audio)
    8       1     model name length n (1..64), then n bytes of ASCII name
    .       8     first 8 bytes of the model weights' sha256 (see ``strata.registry``)
    .       4+4   original size: image (height, width); audio (samples, sample rate)
    .       2+2   code grid (rows, columns) of every layer
    .       2+2   padding: image (bottom rows, right columns) in pixels; audio (0, zero samples at the end)
    .       1     layers present k (1..64)
    .       k×8   per layer: chunk byte length (u32), chunk CRC32 (u32)
    7+N-4   4     CRC32 of every byte before it (magic included)
    7+N     …     chunk 1, chunk 2, …, chunk k (entropy-coded layers, in order)

A prefix of layers is a valid stream: :func:`truncate` keeps the first ``k``
chunks and rewrites the layer count and CRC. :func:`parse` never trusts its
input; every failure raises a distinct :class:`~strata.errors.BitstreamError`
subclass (see :mod:`strata.errors`), and sizes are checked against
:class:`StreamLimits` before the caller allocates anything.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, replace

from strata.errors import (
    BadMagicError,
    ChunkCorruptedError,
    HeaderError,
    LayersError,
    StreamLimitError,
    TrailingDataError,
    TruncatedStreamError,
    UnsupportedVersionError,
)

MAGIC = b"STRA"
VERSION = 1
MAX_LAYERS = 64
MAX_NAME = 64
WEIGHTS_PREFIX = 8

_PRELUDE = struct.Struct("<4sBH")
_GEOMETRY = struct.Struct("<8sIIHHHHB")
_CHUNK = struct.Struct("<II")
_CRC = struct.Struct("<I")


class Modality(enum.IntEnum):
    IMAGE = 0
    AUDIO = 1


@dataclass(frozen=True)
class StreamLimits:
    """Largest sizes a decoder accepts; checked before any allocation."""

    max_pixels: int = 64 * 1024 * 1024  # image height × width
    max_samples: int = 22_050 * 60 * 60  # audio samples (1 hour at 22.05 kHz)
    max_sample_rate: int = 384_000


@dataclass(frozen=True)
class StreamHeader:
    """Everything the header says. ``chunks`` holds (byte length, CRC32) per layer."""

    modality: Modality
    model: str
    weights: bytes  # first WEIGHTS_PREFIX bytes of the weights sha256
    size: tuple[int, int]  # image (height, width) / audio (samples, rate)
    grid: tuple[int, int]  # code map (rows, columns)
    padding: tuple[int, int]
    chunks: tuple[tuple[int, int], ...]

    @property
    def layers(self) -> int:
        return len(self.chunks)

    @property
    def payload_bytes(self) -> int:
        return sum(length for length, _ in self.chunks)

    def to_bytes(self) -> bytes:
        name = self.model.encode("ascii")
        body = (
            bytes([int(self.modality), len(name)])
            + name
            + _GEOMETRY.pack(self.weights, *self.size, *self.grid, *self.padding, self.layers)
            + b"".join(_CHUNK.pack(n, crc) for n, crc in self.chunks)
        )
        head = _PRELUDE.pack(MAGIC, VERSION, len(body) + _CRC.size) + body
        return head + _CRC.pack(zlib.crc32(head))


@dataclass(frozen=True)
class Stream:
    """A parsed stream: its header and the bytes of the chunks that are present."""

    header: StreamHeader
    chunks: tuple[bytes, ...]  # may be fewer than header.layers when parsed with partial=True

    @property
    def layers(self) -> int:
        """Layers that can be decoded (complete chunks)."""
        return len(self.chunks)

    @property
    def intact_layers(self) -> int:
        """Leading layers whose chunks pass their CRC32: the most layers a decode of this stream can use."""
        for layer, (data, (_, crc)) in enumerate(zip(self.chunks, self.header.chunks, strict=False)):
            if zlib.crc32(data) != crc:
                return layer
        return len(self.chunks)

    def chunk(self, layer: int) -> bytes:
        """The bytes of ``layer`` (0-based), checked against the header's CRC32."""
        data = self.chunks[layer]
        if zlib.crc32(data) != self.header.chunks[layer][1]:
            raise ChunkCorruptedError(f"layer {layer + 1} chunk fails its CRC32: the stream is corrupted")
        return data


def pack(header: StreamHeader, chunks: list[bytes]) -> bytes:
    """Serialise a stream; ``header.chunks`` is recomputed from ``chunks``."""
    _validate(header, len(chunks))
    header = replace(header, chunks=tuple((len(c), zlib.crc32(c)) for c in chunks))
    return header.to_bytes() + b"".join(chunks)


def _validate(h: StreamHeader, layers: int) -> None:
    if not 1 <= layers <= MAX_LAYERS:
        raise LayersError(f"a stream holds 1..{MAX_LAYERS} layers, got {layers}")
    try:
        name = h.model.encode("ascii")
    except UnicodeEncodeError:
        raise HeaderError(f"model name must be ASCII: {h.model!r}") from None
    if not 1 <= len(name) <= MAX_NAME:
        raise HeaderError(f"model name must be 1..{MAX_NAME} bytes: {h.model!r}")
    if len(h.weights) != WEIGHTS_PREFIX:
        raise HeaderError(f"weights hash prefix must be {WEIGHTS_PREFIX} bytes")
    fields = {"size": (h.size, 2**32), "grid": (h.grid, 2**16), "padding": (h.padding, 2**16)}
    for name, (values, bound) in fields.items():
        if len(values) != 2 or not all(0 <= int(v) < bound for v in values):
            raise HeaderError(f"{name} {values} does not fit the header (each value in 0..{bound - 1})")


def parse(data: bytes, limits: StreamLimits | None = None, partial: bool = False) -> Stream:
    """Parse and check a stream.

    Args:
        data: the stream bytes.
        limits: size limits (defaults to :class:`StreamLimits()`).
        partial: accept a stream cut short (progressive download): keep the
            complete chunks present. At least one complete chunk is required.

    Raises:
        BadMagicError, UnsupportedVersionError, HeaderError, StreamLimitError,
        TruncatedStreamError, TrailingDataError (see :mod:`strata.errors`).
    """
    limits = limits or StreamLimits()
    data = bytes(data)
    if not data or data[:4] != MAGIC[: len(data[:4])]:
        raise BadMagicError(f"not a Strata stream: expected magic {MAGIC!r}, got {data[:4]!r}")
    if len(data) < _PRELUDE.size:
        raise TruncatedStreamError(f"stream of {len(data)} bytes is shorter than the {_PRELUDE.size}-byte prelude")
    _, version, header_len = _PRELUDE.unpack_from(data)
    if version != VERSION:
        raise UnsupportedVersionError(f"stream format version {version} is not supported (this build reads {VERSION})")
    end = _PRELUDE.size + header_len
    minimum = 2 + 1 + _GEOMETRY.size + _CRC.size
    if not minimum <= header_len <= minimum + MAX_NAME + MAX_LAYERS * _CHUNK.size:
        raise HeaderError(f"header length {header_len} is out of range")
    if len(data) < end:
        raise TruncatedStreamError(f"stream of {len(data)} bytes ends inside its {end}-byte header")
    (crc,) = _CRC.unpack_from(data, end - _CRC.size)
    if zlib.crc32(data[: end - _CRC.size]) != crc:
        raise HeaderError("header fails its CRC32: the stream is corrupted")
    header = _parse_header(data[_PRELUDE.size : end - _CRC.size])
    _check_limits(header, limits)

    chunks, offset = [], end
    for layer, (length, _) in enumerate(header.chunks):
        if offset + length > len(data):
            if partial and chunks:
                break
            raise TruncatedStreamError(
                f"layer {layer + 1} chunk needs {length} bytes at offset {offset}, the stream has {len(data)} bytes"
            )
        chunks.append(data[offset : offset + length])
        offset += length
    if len(chunks) == header.layers and offset != len(data):
        raise TrailingDataError(f"{len(data) - offset} bytes follow the last layer chunk")
    return Stream(header, tuple(chunks))


def _parse_header(body: bytes) -> StreamHeader:
    modality_id, name_len = body[0], body[1]
    try:
        modality = Modality(modality_id)
    except ValueError:
        raise HeaderError(f"unknown modality {modality_id}") from None
    if not 1 <= name_len <= MAX_NAME or len(body) < 2 + name_len + _GEOMETRY.size:
        raise HeaderError(f"model name length {name_len} is out of range")
    raw_name = body[2 : 2 + name_len]
    if not raw_name.isascii() or not raw_name.decode().isprintable():
        raise HeaderError("model name is not printable ASCII")
    weights, s0, s1, g0, g1, p0, p1, layers = _GEOMETRY.unpack_from(body, 2 + name_len)
    table = 2 + name_len + _GEOMETRY.size
    if not 1 <= layers <= MAX_LAYERS or len(body) != table + layers * _CHUNK.size:
        held = (len(body) - table) // _CHUNK.size
        raise HeaderError(f"header announces {layers} layers but holds {held} chunk entries")
    chunks = tuple(_CHUNK.unpack_from(body, table + i * _CHUNK.size) for i in range(layers))
    if min(s0, s1, g0, g1) == 0:
        raise HeaderError(f"zero size in header: size {(s0, s1)}, grid {(g0, g1)}")
    return StreamHeader(modality, raw_name.decode(), weights, (s0, s1), (g0, g1), (p0, p1), chunks)


def _check_limits(h: StreamHeader, limits: StreamLimits) -> None:
    if h.modality is Modality.IMAGE and h.size[0] * h.size[1] > limits.max_pixels:
        raise StreamLimitError(
            f"stream claims a {h.size[0]}×{h.size[1]} image, over the limit of {limits.max_pixels} pixels"
        )
    if h.modality is Modality.AUDIO and (h.size[0] > limits.max_samples or h.size[1] > limits.max_sample_rate):
        raise StreamLimitError(
            f"stream claims {h.size[0]} samples at {h.size[1]} Hz, over the limits "
            f"({limits.max_samples} samples, {limits.max_sample_rate} Hz)"
        )


def truncate(data: bytes, layers: int) -> bytes:
    """The stream cut to its first ``layers`` chunks, with the header rewritten.

    The result decodes exactly as the original decoded with ``layers`` layers.
    """
    stream = parse(data, limits=StreamLimits(max_pixels=2**64, max_samples=2**64, max_sample_rate=2**64))
    if not 1 <= layers <= stream.layers:
        raise LayersError(f"layers must be in 1..{stream.layers} (layers present), got {layers}")
    kept = [stream.chunk(i) for i in range(layers)]
    return pack(stream.header, kept)
