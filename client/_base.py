"""The one request/response layer shared by :class:`~client.Client` and :class:`~client.AsyncClient`.

Each API method is a :class:`Call`: an ``httpx.Request`` built here, and the function that
turns the ``httpx.Response`` into a typed result or raises the matching
:mod:`~strata.client._exceptions` error. The clients only *send* calls (sync or async), so the two
never duplicate request building or parsing.
"""

from __future__ import annotations

import importlib.util
import io
import json
import numbers
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from strata.client._exceptions import (
    StrataConnectionError,
    StrataTimeoutError,
    UnexpectedResponseError,
    error_class,
)
from strata.client._types import AudioCodes, Codes, Compressed, CompressedAudio, DecodedImage, Health, ModelInfo

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)  # decoding a large image on a busy CPU takes seconds
API_KEY_ENV = "STRATA_API_KEY"
IMAGE_FORMATS = ("png", "webp", "npy")
CODES_FORMATS = ("npy", "json")
VOCODERS = ("hifigan", "vocos", "griffinlim")
OCTET, NPY, JSON = "application/octet-stream", "application/x-npy", "application/json"

ImageInput = Any  # bytes | str | os.PathLike | numpy uint8 [H, W, 3]
AudioInput = Any  # bytes | str | os.PathLike (WAV, FLAC or OGG)
StreamInput = Any  # bytes | Compressed | CompressedAudio | str | os.PathLike


def has_numpy() -> bool:
    return importlib.util.find_spec("numpy") is not None


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request and the parser of its response."""

    request: httpx.Request
    parse: Callable[[httpx.Response], T]


# ------------------------------------------------------------------------------------- inputs
def sniff(data: bytes) -> str:
    """Content-Type of image bytes from their magic number (octet-stream when unknown)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return OCTET


def sniff_audio(data: bytes) -> str:
    """Content-Type of sound bytes from their magic number (octet-stream when unknown: the server decides)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith(b"fLaC"):
        return "audio/flac"
    if data.startswith(b"OggS"):
        return "audio/ogg"
    return OCTET


def _read_path(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def image_body(image: ImageInput) -> tuple[bytes, str]:
    """``(bytes, content type)`` of an image given as bytes, a path or a numpy ``uint8 [H, W, 3]`` array."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        data = _read_path(image)
    elif hasattr(image, "__array_interface__"):  # a numpy array: send it as lossless PNG
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    else:
        raise TypeError(f"image must be bytes, a path or a numpy array, got {type(image).__name__}")
    return data, sniff(data)


def audio_body(sound: AudioInput) -> tuple[bytes, str]:
    """``(bytes, content type)`` of a sound given as bytes or a path (WAV, FLAC or OGG; any rate)."""
    if isinstance(sound, (bytes, bytearray, memoryview)):
        data = bytes(sound)
    elif isinstance(sound, (str, os.PathLike)):
        data = _read_path(sound)
    else:
        raise TypeError(f"sound must be bytes or a path to a WAV/FLAC/OGG file, got {type(sound).__name__}")
    return data, sniff_audio(data)


def stream_body(stream: StreamInput) -> bytes:
    if isinstance(stream, (Compressed, CompressedAudio)):
        return stream.data
    if isinstance(stream, (bytes, bytearray, memoryview)):
        return bytes(stream)
    if isinstance(stream, (str, os.PathLike)):
        return _read_path(stream)
    raise TypeError(f"stream must be bytes, Compressed, CompressedAudio or a path, got {type(stream).__name__}")


def _check_refine(refine: int | None) -> dict[str, str]:
    """The ``refine`` query parameter (none when ``None``): a number of iterations, an integer >= 0."""
    if refine is None:
        return {}
    if isinstance(refine, bool) or not isinstance(refine, numbers.Integral) or refine < 0:
        raise ValueError(f"refine must be an integer >= 0 (iterations; 0: the network's raw output), got {refine!r}")
    return {"refine": str(int(refine))}  # the upper bound (32) is the server's to say, as for layers


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _vocoder(vocoder: str | None) -> dict[str, str]:
    """The ``vocoder`` query parameter (none: the server uses the model's default vocoder)."""
    return {} if vocoder is None else {"vocoder": _check_choice("vocoder", vocoder, VOCODERS)}


def _codes_format(format: str | None) -> str:
    """The codes format asked for; by default ``.npy`` when numpy is installed, else JSON."""
    return _check_choice("format", format or ("npy" if has_numpy() else "json"), CODES_FORMATS)


def _params(**values: Any) -> dict[str, str]:
    """Query parameters without the ``None`` ones (booleans as ``true``/``false``)."""
    out = {}
    for key, value in values.items():
        if value is not None:
            out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _codes_body(codes: Codes | AudioCodes, **sizes: Any) -> tuple[dict[str, str], bytes, str]:
    """Query parameters, body and content type of a code stack sent to be decoded: ``.npy`` with the model and
    ``sizes`` as query parameters when numpy is installed, else the JSON document (which holds them)."""
    if has_numpy():
        return _params(model=codes.model, **sizes), codes.to_npy(), NPY
    return {}, json.dumps(codes.to_json(), separators=(",", ":")).encode(), JSON


# ------------------------------------------------------------------------------------ outputs
def raise_for_error(response: httpx.Response) -> None:
    """Raise the :class:`StrataAPIError` subclass for an error response; nothing on success."""
    if response.is_success:
        return
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code, message = body["code"], str(body.get("message", message))
    elif response.text:
        message = response.text[:200]
    cls = error_class(response.status_code, code)
    raise cls(message, code=code, status=response.status_code, request=response.request, response=response)


def _unexpected(response: httpx.Response, what: str) -> UnexpectedResponseError:
    return UnexpectedResponseError(f"unexpected response: {what}", code="unexpected_response",
                                   status=response.status_code, request=response.request, response=response)


def _header(response: httpx.Response, name: str, kind: Callable[[str], T]) -> T:
    try:
        return kind(response.headers[name])
    except (KeyError, ValueError) as e:
        raise _unexpected(response, f"missing or malformed {name} header") from e


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError) as e:
        raise _unexpected(response, "body is not JSON") from e


def parse_compressed(response: httpx.Response) -> Compressed:
    raise_for_error(response)
    return Compressed(
        data=response.content,
        model=_header(response, "X-Strata-Model", str),
        layers=_header(response, "X-Strata-Layers", int),
        bpp=_header(response, "X-Strata-Bpp", float),
        width=_header(response, "X-Strata-Width", int),
        height=_header(response, "X-Strata-Height", int),
    )


def image_parser(fmt: str) -> Callable[[httpx.Response], DecodedImage]:
    def parse(response: httpx.Response) -> DecodedImage:
        raise_for_error(response)
        stream_layers = response.headers.get("X-Strata-Stream-Layers")
        return DecodedImage(
            data=response.content,
            format=fmt,
            layers=_header(response, "X-Strata-Layers", int),
            model=_header(response, "X-Strata-Model", str),
            width=_header(response, "X-Strata-Width", int),
            height=_header(response, "X-Strata-Height", int),
            stream_layers=int(stream_layers) if stream_layers and stream_layers.isdigit() else None,
        )

    return parse


def _npy_array(response: httpx.Response) -> Any:
    import numpy as np

    try:
        return np.load(io.BytesIO(response.content), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _unexpected(response, "body is not a .npy array") from e


CodesT = TypeVar("CodesT", Codes, AudioCodes)


def _codes_parser(fmt: str, cls: type[CodesT],
                  fields: tuple[tuple[str, str], tuple[str, str]]) -> Callable[[httpx.Response], CodesT]:
    """Parser of an ``encode`` answer into ``cls(array, model, <two size fields>, layers)``; ``fields``: the
    JSON key and the response header of each size field (``.npy`` bodies carry them in headers)."""

    def parse(response: httpx.Response) -> CodesT:
        raise_for_error(response)
        if fmt == "npy":
            array = _npy_array(response)
            return cls(array, _header(response, "X-Strata-Model", str),
                       *(_header(response, header, int) for _, header in fields), int(array.shape[0]))
        doc = _json(response)
        try:
            array = doc["codes"]
            if has_numpy():
                import numpy as np

                array = np.asarray(array, dtype=np.int64)
            return cls(array, str(doc["model"]), *(int(doc[key]) for key, _ in fields), int(doc["layers"]))
        except (KeyError, TypeError, ValueError) as e:
            raise _unexpected(response, f"codes document lacks or mangles {e}") from e

    return parse


def codes_parser(fmt: str) -> Callable[[httpx.Response], Codes]:
    return _codes_parser(fmt, Codes, (("height", "X-Strata-Height"), ("width", "X-Strata-Width")))


def parse_compressed_audio(response: httpx.Response) -> CompressedAudio:
    raise_for_error(response)
    return CompressedAudio(
        data=response.content,
        layers=_header(response, "X-Strata-Layers", int),
        bytes=len(response.content),
        kbps=_header(response, "X-Strata-Kbps", float),
        seconds=_header(response, "X-Strata-Seconds", float),
        model=_header(response, "X-Strata-Model", str),
        samples=_header(response, "X-Strata-Samples", int),
        sample_rate=_header(response, "X-Strata-Sample-Rate", int),
    )


def parse_wav(response: httpx.Response) -> bytes:
    """The WAV bytes of a decoded sound."""
    raise_for_error(response)
    if not (response.content[:4] == b"RIFF" and response.content[8:12] == b"WAVE"):
        raise _unexpected(response, "body is not a WAV file")
    return response.content


def parse_mel(response: httpx.Response) -> Any:
    """A decoded log-mel: a numpy float32 ``[80, frames]`` array when numpy is installed, else the ``.npy`` bytes."""
    raise_for_error(response)
    if not has_numpy():
        return response.content
    return _npy_array(response)


def audio_codes_parser(fmt: str) -> Callable[[httpx.Response], AudioCodes]:
    return _codes_parser(fmt, AudioCodes, (("samples", "X-Strata-Samples"), ("sample_rate", "X-Strata-Sample-Rate")))


def _model_info(d: Any) -> ModelInfo:
    return ModelInfo(
        name=str(d["name"]), modality=str(d["modality"]), layers=int(d["layers"]),
        codebook_sizes=tuple(int(k) for k in d["codebook_sizes"]), factor=int(d["factor"]),
        bits_per_layer=tuple(float(b) for b in d.get("bits_per_layer", ())),
        bpp_per_layer=tuple(float(b) for b in d.get("bpp_per_layer", ())),
        description=str(d.get("description", "")), weights_sha256=str(d["weights_sha256"]),
        default=bool(d.get("default", False)),
        kbps_per_layer=tuple(float(k) for k in d.get("kbps_per_layer") or ()),
        sample_rate=int(d["sample_rate"]) if d.get("sample_rate") is not None else None,
        quantizer=str(d.get("quantizer", "rvq")), top_layers=int(d.get("top_layers") or 0),
        vocoders=tuple(str(v) for v in d.get("vocoders") or ()),
        default_vocoder=str(d["default_vocoder"]) if d.get("default_vocoder") is not None else None,
        default_refine={str(k): int(v) for k, v in (d.get("default_refine") or {}).items()},
    )


def parse_models(response: httpx.Response) -> list[ModelInfo]:
    raise_for_error(response)
    try:
        return [_model_info(d) for d in _json(response)]
    except (KeyError, TypeError, ValueError) as e:
        raise _unexpected(response, f"model list lacks or mangles {e}") from e


def parse_model(response: httpx.Response) -> ModelInfo:
    raise_for_error(response)
    try:
        return _model_info(_json(response))
    except (KeyError, TypeError, ValueError) as e:
        raise _unexpected(response, f"model lacks or mangles {e}") from e


def parse_health(response: httpx.Response) -> Health:
    raise_for_error(response)
    d = _json(response)
    if not isinstance(d, dict):
        raise _unexpected(response, "readiness body is not an object")
    return Health(str(d.get("status")), d.get("provider"), tuple(str(m) for m in d.get("models", ())))


# ---------------------------------------------------------------------------------- requests
class RequestBuilder:
    """Builds the :class:`Call` of every API method for one server."""

    def __init__(self, base_url: str | httpx.URL = DEFAULT_BASE_URL, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT) -> None:
        try:
            base = httpx.URL(str(base_url))
        except httpx.InvalidURL as e:  # e.g. an unclosed IPv6 bracket or a non-numeric port
            raise ValueError(f"base_url {str(base_url)!r} is not a valid URL: {e}") from None
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"base_url must be an http(s) URL, got {str(base_url)!r}")
        if base.port is not None and not 0 < base.port < 65536:  # httpx accepts any number; sockets wrap it
            raise ValueError(f"base_url port must be in 1..65535, got {base.port} in {str(base_url)!r}")
        self.base_url = str(base.copy_with(path=base.path.rstrip("/") + "/", query=None, fragment=None))
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                content: bytes | None = None, content_type: str | None = None) -> httpx.Request:
        headers = {"Accept": "*/*"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if content_type:
            headers["Content-Type"] = content_type
        url = self.base_url + path.lstrip("/")
        return httpx.Request(method, url, params=params, headers=headers, content=content,
                             extensions={"timeout": self.timeout.as_dict()})

    def _upload(self, path: str, body: tuple[bytes, str], **params: Any) -> httpx.Request:
        """A POST of ``body`` (bytes, content type) with the query ``params`` (``None`` ones left out)."""
        data, kind = body
        return self.request("POST", path, params=_params(**params), content=data, content_type=kind)

    def compress(self, image: ImageInput, model: str | None = None, layers: int | None = None) -> Call[Compressed]:
        return Call(self._upload("v1/images:compress", image_body(image), model=model, layers=layers),
                    parse_compressed)

    def decompress(self, stream: StreamInput, layers: int | None = None, format: str = "png",
                   partial: bool = False) -> Call[DecodedImage]:
        fmt = _check_choice("format", format, IMAGE_FORMATS)
        req = self.request("POST", "v1/images:decompress",
                           params=_params(layers=layers, format=fmt, partial=partial or None),
                           content=stream_body(stream), content_type=OCTET)
        return Call(req, image_parser(fmt))

    def encode(self, image: ImageInput, model: str | None = None, layers: int | None = None,
               format: str | None = None) -> Call[Codes]:
        fmt = _codes_format(format)
        return Call(self._upload("v1/images:encode", image_body(image), model=model, layers=layers, format=fmt),
                    codes_parser(fmt))

    def decode(self, codes: Codes, layers: int | None = None, format: str = "png") -> Call[DecodedImage]:
        fmt = _check_choice("format", format, IMAGE_FORMATS)
        if not isinstance(codes, Codes):
            raise TypeError(f"codes must be a Codes (from encode), got {type(codes).__name__}")
        extra, content, kind = _codes_body(codes, height=codes.height, width=codes.width)
        req = self.request("POST", "v1/images:decode", params={**_params(layers=layers, format=fmt), **extra},
                           content=content, content_type=kind)
        return Call(req, image_parser(fmt))

    # -- audio -------------------------------------------------------------------------------------
    def compress_audio(self, sound: AudioInput, model: str | None = None,
                       layers: int | None = None) -> Call[CompressedAudio]:
        return Call(self._upload("v1/audio:compress", audio_body(sound), model=model, layers=layers),
                    parse_compressed_audio)

    def decompress_audio(self, stream: StreamInput, layers: int | None = None, vocoder: str | None = None,
                         partial: bool = False, refine: int | None = None) -> Call[bytes]:
        params = {**_vocoder(vocoder), "output": "wav", **_check_refine(refine)}
        return Call(self._audio_decompress(stream, layers, partial, params), parse_wav)

    def stream_audio(self, stream: StreamInput, layers: int | None = None, vocoder: str | None = None,
                     partial: bool = False, refine: int | None = None) -> httpx.Request:
        """The request of a WAV sent as it is decoded (``stream=true``); read its body in chunks."""
        params = {**_vocoder(vocoder), "output": "wav", "stream": "true",
                  **_check_refine(refine)}
        return self._audio_decompress(stream, layers, partial, params)

    def decompress_audio_mel(self, stream: StreamInput, layers: int | None = None,
                             partial: bool = False) -> Call[Any]:
        return Call(self._audio_decompress(stream, layers, partial, {"output": "mel"}), parse_mel)

    def _audio_decompress(self, stream: StreamInput, layers: int | None, partial: bool,
                          output: dict[str, str]) -> httpx.Request:
        return self.request("POST", "v1/audio:decompress",
                            params={**_params(layers=layers, partial=partial or None), **output},
                            content=stream_body(stream), content_type=OCTET)

    def encode_audio(self, sound: AudioInput, model: str | None = None, layers: int | None = None,
                     format: str | None = None) -> Call[AudioCodes]:
        fmt = _codes_format(format)
        return Call(self._upload("v1/audio:encode", audio_body(sound), model=model, layers=layers, format=fmt),
                    audio_codes_parser(fmt))

    def decode_audio(self, codes: AudioCodes, layers: int | None = None, vocoder: str | None = None,
                     refine: int | None = None) -> Call[bytes]:
        params = {**_vocoder(vocoder), "output": "wav", **_check_refine(refine)}
        return Call(self._audio_decode(codes, layers, params), parse_wav)

    def decode_audio_mel(self, codes: AudioCodes, layers: int | None = None) -> Call[Any]:
        return Call(self._audio_decode(codes, layers, {"output": "mel"}), parse_mel)

    def _audio_decode(self, codes: AudioCodes, layers: int | None, output: dict[str, str]) -> httpx.Request:
        if not isinstance(codes, AudioCodes):
            raise TypeError(f"codes must be an AudioCodes (from encode_audio), got {type(codes).__name__}")
        extra, content, kind = _codes_body(codes, samples=codes.samples, sample_rate=codes.sample_rate)
        return self.request("POST", "v1/audio:decode", params={**_params(layers=layers), **output, **extra},
                            content=content, content_type=kind)

    def models(self) -> Call[list[ModelInfo]]:
        return Call(self.request("GET", "v1/models"), parse_models)

    def model(self, name: str) -> Call[ModelInfo]:
        return Call(self.request("GET", f"v1/models/{quote(name, safe='')}"), parse_model)

    def health(self) -> Call[Health]:
        return Call(self.request("GET", "readyz"), parse_health)


def progressive_layers(first: DecodedImage) -> range:
    """Layer counts still to decode after the 1-layer image ``first``: 2 … layers in the stream."""
    if first.stream_layers is None:
        raise UnexpectedResponseError("the server did not say how many layers the stream holds",
                                      code="unexpected_response", status=200)
    return range(2, first.stream_layers + 1)


# ------------------------------------------------------------------------------ transport errors
def _request_of(error: httpx.HTTPError) -> httpx.Request | None:
    try:
        return error.request
    except RuntimeError:  # httpx raises when the error carries no request
        return None


@contextmanager
def transport_errors() -> Iterator[None]:
    """Translate httpx's transport errors into :class:`StrataTimeoutError` / :class:`StrataConnectionError`."""
    try:
        yield
    except httpx.TimeoutException as e:
        raise StrataTimeoutError(f"request timed out: {e or type(e).__name__}", request=_request_of(e)) from e
    except httpx.TransportError as e:
        raise StrataConnectionError(f"connection failed: {e or type(e).__name__}", request=_request_of(e)) from e
