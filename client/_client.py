"""The synchronous client."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx
from strata.client._base import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    AudioInput,
    Call,
    ImageInput,
    RequestBuilder,
    StreamInput,
    progressive_layers,
    raise_for_error,
    transport_errors,
)
from strata.client._types import AudioCodes, Codes, Compressed, CompressedAudio, DecodedImage, Health, ModelInfo

T = TypeVar("T")


class Client:
    """A Strata server, used synchronously.

    ::

        with Client("http://127.0.0.1:8000") as strata:
            stream = strata.compress("photo.png", layers=4)     # Compressed(data, layers, bpp, …)
            image = strata.decompress(stream, layers=2)         # DecodedImage(data=PNG bytes, …)

    Args:
        base_url: the server's root URL.
        api_key: sent as ``X-API-Key``; defaults to ``$STRATA_API_KEY`` when set.
        timeout: seconds, or an ``httpx.Timeout`` (default: 60 s, 5 s to connect).
        transport: an httpx transport (e.g. ``httpx.MockTransport`` in tests).
    """

    def __init__(self, base_url: str | httpx.URL = DEFAULT_BASE_URL, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._requests = RequestBuilder(base_url, api_key, timeout)
        self._http = httpx.Client(transport=transport, timeout=self._requests.timeout)

    def _send(self, call: Call[T]) -> T:
        with transport_errors():
            response = self._http.send(call.request)
        return call.parse(response)

    def compress(self, image: ImageInput, *, layers: int | None = None, model: str | None = None) -> Compressed:
        """Compress an image (bytes, path or numpy ``uint8 [H, W, 3]``) into a stream of ``layers`` layers."""
        return self._send(self._requests.compress(image, model, layers))

    def decompress(self, stream: StreamInput, *, layers: int | None = None, format: str = "png",
                   partial: bool = False) -> DecodedImage:
        """Decode a stream (all its layers, or the first ``layers``) into a PNG, WebP or ``.npy`` image."""
        return self._send(self._requests.decompress(stream, layers, format, partial))

    def encode(self, image: ImageInput, *, layers: int | None = None, model: str | None = None,
               format: str | None = None) -> Codes:
        """The code stack of an image (``.npy`` transfer when numpy is installed, else JSON)."""
        return self._send(self._requests.encode(image, model, layers, format))

    def decode(self, codes: Codes, *, layers: int | None = None, format: str = "png") -> DecodedImage:
        """Decode a code stack (or its first ``layers`` layers) into an image."""
        return self._send(self._requests.decode(codes, layers, format))

    def progressive(self, stream: StreamInput, *, format: str = "png") -> Iterator[DecodedImage]:
        """The stream decoded with 1, 2, … L layers (L = layers in the stream), one image per step."""
        first = self.decompress(stream, layers=1, format=format)
        yield first
        for k in progressive_layers(first):
            yield self.decompress(stream, layers=k, format=format)

    def compress_audio(self, data: AudioInput, *, layers: int | None = None,
                       model: str | None = None) -> CompressedAudio:
        """Compress a sound (WAV/FLAC/OGG bytes or a path; any rate and channels) into a stream."""
        return self._send(self._requests.compress_audio(data, model, layers))

    def decompress_audio(self, stream: StreamInput, *, layers: int | None = None, vocoder: str | None = None,
                         partial: bool = False, refine: int | None = None) -> bytes:
        """An audio stream (all its layers, or the first ``layers``) decoded to 16-bit WAV bytes at 22 050 Hz.

        ``vocoder``: ``hifigan``, ``vocos`` (where the model has one) or ``griffinlim``; default: the model's
        (:attr:`ModelInfo.default_vocoder`). ``refine``: a network vocoder's mel-consistency iterations (0: the
        network's raw output; default: the vocoder's).
        """
        return self._send(self._requests.decompress_audio(stream, layers, vocoder, partial, refine))

    def iter_decompress_audio(self, stream: StreamInput, *, layers: int | None = None, vocoder: str | None = None,
                              partial: bool = False, refine: int | None = None,
                              chunk_size: int | None = None) -> Iterator[bytes]:
        """:meth:`decompress_audio`'s WAV bytes as the server decodes them: the 44-byte header, then the samples
        window by window (a long sound starts playing, or goes to disk, before it is all decoded).

        Errors the server finds before it starts (a bad stream, layers or refine) raise here, at the first
        ``next``; the joined chunks equal :meth:`decompress_audio`'s bytes.
        """
        request = self._requests.stream_audio(stream, layers, vocoder, partial, refine)
        with transport_errors():
            response = self._http.send(request, stream=True)
        try:
            if not response.is_success:
                response.read()
                raise_for_error(response)
            with transport_errors():
                yield from response.iter_bytes(chunk_size)
        finally:
            response.close()

    def decompress_audio_mel(self, stream: StreamInput, *, layers: int | None = None,
                             partial: bool = False) -> Any:
        """The decoded log-mel ``[80, frames]`` of an audio stream: a numpy float32 array when numpy is
        installed, else the ``.npy`` bytes."""
        return self._send(self._requests.decompress_audio_mel(stream, layers, partial))

    def encode_audio(self, data: AudioInput, *, layers: int | None = None, model: str | None = None,
                     format: str | None = None) -> AudioCodes:
        """The code stack of a sound (``.npy`` transfer when numpy is installed, else JSON)."""
        return self._send(self._requests.encode_audio(data, model, layers, format))

    def decode_audio(self, codes: AudioCodes, *, layers: int | None = None, vocoder: str | None = None,
                     refine: int | None = None) -> bytes:
        """A sound's code stack (or its first ``layers`` layers) decoded to 16-bit WAV bytes."""
        return self._send(self._requests.decode_audio(codes, layers, vocoder, refine))

    def decode_audio_mel(self, codes: AudioCodes, *, layers: int | None = None) -> Any:
        """The log-mel decoded from a sound's code stack (array or ``.npy`` bytes, as ``decompress_audio_mel``)."""
        return self._send(self._requests.decode_audio_mel(codes, layers))

    def models(self) -> list[ModelInfo]:
        """The models the server has loaded."""
        return self._send(self._requests.models())

    def model(self, name: str) -> ModelInfo:
        """One loaded model (:class:`~client.NotFoundError` when unknown)."""
        return self._send(self._requests.model(name))

    def health(self) -> Health:
        """Readiness (``/readyz``); raises :class:`~client.ServiceUnavailableError` while models load."""
        return self._send(self._requests.health())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
