"""The asynchronous client: the same methods as :class:`~client.Client`, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


class AsyncClient:
    """A Strata server, used from asyncio (or trio, through httpx/anyio).

    ::

        async with AsyncClient("http://127.0.0.1:8000") as strata:
            streams = await asyncio.gather(*(strata.compress(p) for p in paths))
            async for image in strata.progressive(streams[0]):
                ...

    Arguments as :class:`~client.Client` (``transport`` is an ``httpx.AsyncBaseTransport``).
    """

    def __init__(self, base_url: str | httpx.URL = DEFAULT_BASE_URL, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._requests = RequestBuilder(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(transport=transport, timeout=self._requests.timeout)

    async def _send(self, call: Call[T]) -> T:
        with transport_errors():
            response = await self._http.send(call.request)
        return call.parse(response)

    async def compress(self, image: ImageInput, *, layers: int | None = None, model: str | None = None) -> Compressed:
        """See :meth:`client.Client.compress`."""
        return await self._send(self._requests.compress(image, model, layers))

    async def decompress(self, stream: StreamInput, *, layers: int | None = None, format: str = "png",
                         partial: bool = False) -> DecodedImage:
        """See :meth:`client.Client.decompress`."""
        return await self._send(self._requests.decompress(stream, layers, format, partial))

    async def encode(self, image: ImageInput, *, layers: int | None = None, model: str | None = None,
                     format: str | None = None) -> Codes:
        """See :meth:`client.Client.encode`."""
        return await self._send(self._requests.encode(image, model, layers, format))

    async def decode(self, codes: Codes, *, layers: int | None = None, format: str = "png") -> DecodedImage:
        """See :meth:`client.Client.decode`."""
        return await self._send(self._requests.decode(codes, layers, format))

    async def progressive(self, stream: StreamInput, *, format: str = "png") -> AsyncIterator[DecodedImage]:
        """See :meth:`client.Client.progressive`."""
        first = await self.decompress(stream, layers=1, format=format)
        yield first
        for k in progressive_layers(first):
            yield await self.decompress(stream, layers=k, format=format)

    async def compress_audio(self, data: AudioInput, *, layers: int | None = None,
                             model: str | None = None) -> CompressedAudio:
        """See :meth:`client.Client.compress_audio`."""
        return await self._send(self._requests.compress_audio(data, model, layers))

    async def decompress_audio(self, stream: StreamInput, *, layers: int | None = None, vocoder: str | None = None,
                               partial: bool = False, refine: int | None = None) -> bytes:
        """See :meth:`client.Client.decompress_audio`."""
        return await self._send(self._requests.decompress_audio(stream, layers, vocoder, partial, refine))

    async def aiter_decompress_audio(self, stream: StreamInput, *, layers: int | None = None,
                                     vocoder: str | None = None, partial: bool = False, refine: int | None = None,
                                     chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """See :meth:`client.Client.iter_decompress_audio`."""
        request = self._requests.stream_audio(stream, layers, vocoder, partial, refine)
        with transport_errors():
            response = await self._http.send(request, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                raise_for_error(response)
            with transport_errors():
                async for chunk in response.aiter_bytes(chunk_size):
                    yield chunk
        finally:
            await response.aclose()

    async def decompress_audio_mel(self, stream: StreamInput, *, layers: int | None = None,
                                   partial: bool = False) -> Any:
        """See :meth:`client.Client.decompress_audio_mel`."""
        return await self._send(self._requests.decompress_audio_mel(stream, layers, partial))

    async def encode_audio(self, data: AudioInput, *, layers: int | None = None, model: str | None = None,
                           format: str | None = None) -> AudioCodes:
        """See :meth:`client.Client.encode_audio`."""
        return await self._send(self._requests.encode_audio(data, model, layers, format))

    async def decode_audio(self, codes: AudioCodes, *, layers: int | None = None, vocoder: str | None = None,
                           refine: int | None = None) -> bytes:
        """See :meth:`client.Client.decode_audio`."""
        return await self._send(self._requests.decode_audio(codes, layers, vocoder, refine))

    async def decode_audio_mel(self, codes: AudioCodes, *, layers: int | None = None) -> Any:
        """See :meth:`client.Client.decode_audio_mel`."""
        return await self._send(self._requests.decode_audio_mel(codes, layers))

    async def models(self) -> list[ModelInfo]:
        """See :meth:`client.Client.models`."""
        return await self._send(self._requests.models())

    async def model(self, name: str) -> ModelInfo:
        """See :meth:`client.Client.model`."""
        return await self._send(self._requests.model(name))

    async def health(self) -> Health:
        """See :meth:`client.Client.health`."""
        return await self._send(self._requests.health())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
