"""Body formats of the image and audio routes: ``.npy`` and JSON code stacks, decoded images
(PNG, WebP, ``.npy``) and decoded sounds (16-bit WAV, or the log-mel as ``.npy``).

``.npy`` bodies are parsed by hand from their header (never ``allow_pickle``): the dtype must be
an integer type, the shape 3-D with no negative dimension, and the byte count (computed without
overflow) must match the header exactly before any array is made, so a header claiming a huge
shape allocates nothing.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from typing import Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field, ValidationError
from strata.audio import AudioCodes
from strata.frontend.audio import write_wav
from strata.frontend.image import write_image
from strata.image import ImageCodes
from strata.server.errors import InvalidCodesError, InvalidRequestError

ImageFormat = Literal["png", "webp", "npy"]
CodesFormat = Literal["npy", "json"]
AudioOutput = Literal["wav", "mel"]
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "npy": "application/x-npy", "json": "application/json",
               "wav": "audio/wav", "mel": "application/x-npy"}


class CodesDocument(BaseModel):
    """The JSON form of a code stack (``images:encode?format=json`` output, ``images:decode`` input)."""

    model: str = Field(max_length=64, description="model that made the codes")
    height: int = Field(ge=1, le=2**31 - 1, description="original image height in pixels")
    width: int = Field(ge=1, le=2**31 - 1, description="original image width in pixels")
    layers: int | None = Field(None, ge=0, description="number of layers in `codes` (optional on input)")
    codes: list = Field(description="integer codes [layers][rows][columns]; rows = ceil(height / factor)")


class AudioCodesDocument(BaseModel):
    """The JSON form of a sound's code stack (``audio:encode?format=json`` output, ``audio:decode`` input)."""

    model: str = Field(max_length=64, description="model that made the codes")
    samples: int = Field(ge=1, le=2**31 - 1, description="length of the sound in samples at `sample_rate`")
    sample_rate: int = Field(22050, ge=1, le=2**31 - 1, description="sample rate of the codec (22050)")
    layers: int | None = Field(None, ge=0, description="number of layers in `codes` (optional on input)")
    codes: list = Field(description="integer codes [layers][rows][columns]; columns = ceil(samples / 1024)")


def dump_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """An integer ``[L, h, w]`` array from ``.npy`` bytes; :class:`InvalidCodesError` otherwise."""
    f = io.BytesIO(data)
    try:
        with warnings.catch_warnings():  # the header is a Python literal: odd escapes only warn
            warnings.simplefilter("ignore")
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise InvalidCodesError(f".npy format version {version} is not supported (1.0 or 2.0)")
    except InvalidCodesError:
        raise
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError, …
        raise InvalidCodesError(f"body is not a valid .npy array: {type(e).__name__}: {e}") from None
    if dtype.hasobject or dtype.kind not in "iu":
        raise InvalidCodesError(f"codes must have an integer dtype, got {dtype}")
    if len(shape) != 3:
        raise InvalidCodesError(f"codes must be a 3-D [layers, rows, columns] array, got shape {shape}")
    if any(isinstance(n, bool) or n < 0 for n in shape):
        raise InvalidCodesError(f".npy header announces shape {shape}: dimensions must be integers ≥ 0")
    count = math.prod(shape)  # Python ints: a header of huge dimensions cannot overflow the byte count
    offset = f.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise InvalidCodesError(
            f".npy header announces {shape} {dtype} ({count * dtype.itemsize} bytes), body has {len(data) - offset}"
        )
    try:  # only an empty array with a dimension numpy cannot index (≥ 2**63) gets here and fails
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return array.reshape(shape, order="F" if fortran else "C")
    except ValueError as e:
        raise InvalidCodesError(f".npy header announces shape {shape}, which numpy cannot hold: {e}") from None


DocumentT = TypeVar("DocumentT", CodesDocument, AudioCodesDocument)


def codes_from_json(data: bytes, schema: type[DocumentT] = CodesDocument) -> DocumentT:
    """Parse and check a JSON code document (the array itself is checked by :func:`codes_array`)."""
    try:
        return schema.model_validate_json(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:5])
        raise InvalidCodesError(f"invalid JSON codes document: {problems}") from None
    except (ValueError, RecursionError) as e:
        raise InvalidCodesError(f"body is not valid JSON: {e}") from None


def codes_array(nested: list) -> np.ndarray:
    """An integer ``[L, h, w]`` array from nested lists; :class:`InvalidCodesError` otherwise."""
    try:
        array = np.asarray(nested)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise InvalidCodesError(f"codes are not a rectangular integer array: {e}") from None
    if array.dtype.kind not in "iu" or array.ndim != 3:
        raise InvalidCodesError(f"codes must be integers [layers, rows, columns], got {array.dtype} {array.shape}")
    return array


def document_codes(doc: CodesDocument | AudioCodesDocument, query: dict[str, object]) -> np.ndarray:
    """The code array of a JSON codes document, once no query parameter of ``query`` (name → value, ``None``
    when not given) contradicts the document's field of that name and its ``layers`` matches the array."""
    for name, given in query.items():
        inside = getattr(doc, name)
        if given is not None and given != inside:
            raise InvalidRequestError(f"query parameter {name}={given!r} contradicts the body's {inside!r}")
    array = codes_array(doc.codes)
    if doc.layers is not None and doc.layers != array.shape[0]:
        raise InvalidCodesError(f"the body says layers={doc.layers} but its codes hold {array.shape[0]}")
    return array


def check_codes(array: np.ndarray, codebook_sizes: tuple[int, ...], grid: tuple[int, int],
                what: str = "image") -> np.ndarray:
    """``array`` as int64 after checking its layer count, grid and code range against a model."""
    layers = array.shape[0]
    if not 1 <= layers <= len(codebook_sizes):
        raise InvalidCodesError(f"codes hold {layers} layers; the model takes 1..{len(codebook_sizes)}")
    if tuple(array.shape[1:]) != tuple(grid):
        raise InvalidCodesError(f"codes of grid {tuple(array.shape[1:])} do not fit the {what}: expected {grid}")
    for layer in range(layers):
        lo, hi = int(array[layer].min()), int(array[layer].max())
        if lo < 0 or hi >= codebook_sizes[layer]:
            raise InvalidCodesError(
                f"layer {layer + 1} has codes in {lo}..{hi}; valid codes are 0..{codebook_sizes[layer] - 1}"
            )
    return array.astype(np.int64)


def codes_payload(codes: ImageCodes | AudioCodes, fmt: CodesFormat, codebook_size: int) -> bytes:
    """Encode-route output: ``.npy`` (int16 when the codes fit, else int32) or the JSON document."""
    if fmt == "npy":
        dtype = np.int16 if codebook_size <= np.iinfo(np.int16).max + 1 else np.int32
        return dump_npy(codes.codes.astype(dtype))
    if isinstance(codes, AudioCodes):
        size = {"samples": codes.samples, "sample_rate": codes.sample_rate}
    else:
        size = {"height": codes.size[0], "width": codes.size[1]}
    doc = {"model": codes.model, **size, "layers": codes.layers, "codes": codes.codes.tolist()}
    return json.dumps(doc, separators=(",", ":")).encode()


def audio_payload(samples_or_mel: np.ndarray, output: AudioOutput, sample_rate: int) -> bytes:
    """A decoded sound: 16-bit PCM WAV of float ``[T]`` samples, or a log-mel float32 ``[80, frames]`` as ``.npy``."""
    if output == "mel":
        return dump_npy(np.asarray(samples_or_mel, dtype=np.float32))
    return write_wav(samples_or_mel, sample_rate)


def image_payload(image: np.ndarray, fmt: ImageFormat) -> bytes:
    """A decoded ``uint8 [H, W, 3]`` image as PNG, WebP or ``.npy``."""
    return dump_npy(image) if fmt == "npy" else write_image(image, fmt)
