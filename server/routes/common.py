"""Pieces shared by the ``/v1/images:*`` and ``/v1/audio:*`` routes: query parameters, the
``X-Strata-*`` response headers, the layer check, stream parsing and the OpenAPI documentation helpers.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Query
from strata import bitstream
from strata.bitstream import Modality
from strata.errors import LayersError
from strata.server.config import Settings
from strata.server.deps import JSON
from strata.server.errors import WrongModalityError

LayersQuery = Annotated[int | None, Query(description="number of residual layers, 1..L (default: all)")]
PartialQuery = Annotated[bool, Query(description="decode the complete layers of a cut stream")]

BINARY = {"schema": {"type": "string", "format": "binary"}}


class LayeredCodec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def layers(self) -> int: ...


def header_doc(description: str, kind: str = "string") -> dict:
    """OpenAPI description of one response header."""
    return {"description": description, "schema": {"type": kind}}


MODEL_HEADER = header_doc("name of the model used", "string")
LAYERS_HEADER = header_doc("number of layers coded / decoded", "integer")
STREAM_LAYERS_HEADER = header_doc("complete layers present in the stream", "integer")
BYTES_HEADER = header_doc("stream length in bytes", "integer")


def body_doc(media_types: tuple[str, ...], description: str, json_schema: dict | None = None) -> dict:
    """``openapi_extra`` documenting a raw request body of one of ``media_types``."""
    content = {t: ({"schema": json_schema} if t == JSON and json_schema else BINARY) for t in media_types}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def check_layers(layers: int | None, codec: LayeredCodec) -> None:
    """Refuse a ``layers`` parameter outside ``1..codec.layers`` (422 ``invalid_layers``) on the event loop."""
    if layers is not None and not 1 <= layers <= codec.layers:
        raise LayersError(f"layers must be an integer in 1..{codec.layers} for model {codec.name!r}, got {layers}")


def strata_headers(model: str, layers: int, fields: dict[str, str] | None = None) -> dict[str, str]:
    """The ``X-Strata-*`` headers every route answers with: model, layers, then ``fields``."""
    return {"X-Strata-Model": model, "X-Strata-Layers": str(layers), **(fields or {})}


DECOMPRESS_ROUTES = {Modality.IMAGE: "/v1/images:decompress", Modality.AUDIO: "/v1/audio:decompress"}


def parse_stream(data: bytes, settings: Settings, modality: Modality, partial: bool = False) -> bitstream.Stream:
    """Parse a stream under the service's limits; one of another modality is 422 ``wrong_modality``, naming
    the route that takes it."""
    limits = bitstream.StreamLimits(max_pixels=settings.max_pixels, max_samples=settings.max_audio_samples)
    stream = bitstream.parse(data, limits, partial=partial)
    found = stream.header.modality
    if found is not modality:
        raise WrongModalityError(f"this is an {found.name.lower()} stream; send it to {DECOMPRESS_ROUTES[found]}")
    return stream
