"""``/v1/images:*``: compress / decompress (bytes ↔ stream) and encode / decode (image ↔ codes).

Every handler checks what it can cheaply on the event loop (model name, layer range), then runs
the heavy part (image decoding, ONNX, entropy coding, PNG/WebP encoding) in the bounded
:class:`~strata.server.pool.InferencePool`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from strata.bitstream import Modality
from strata.frontend.image import read_image
from strata.image import ImageCodec, ImageCodes
from strata.server import payloads
from strata.server.cost import NOTHING, Work, image_size
from strata.server.deps import (
    CODES_TYPES,
    IMAGE_TYPES,
    JSON,
    OCTET,
    STREAM_TYPES,
    CodecsDep,
    CodesBody,
    ImageBody,
    ImageCodecDep,
    ImageModelQuery,
    PoolDep,
    SettingsDep,
    StreamBody,
    require_api_key,
)
from strata.server.errors import InvalidRequestError, responses
from strata.server.payloads import MEDIA_TYPES, CodesDocument, CodesFormat, ImageFormat
from strata.server.routes.common import (
    BINARY,
    BYTES_HEADER,
    LAYERS_HEADER,
    MODEL_HEADER,
    STREAM_LAYERS_HEADER,
    LayersQuery,
    PartialQuery,
    body_doc,
    check_layers,
    header_doc,
    parse_stream,
    strata_headers,
)

router = APIRouter(prefix="/v1", tags=["images"], dependencies=[Depends(require_api_key)])

ImageFormatQuery = Annotated[ImageFormat, Query(description="output image format")]
SizeQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1)]

SIZE_HEADERS = {"X-Strata-Width": header_doc("image width in pixels", "integer"),
                "X-Strata-Height": header_doc("image height in pixels", "integer")}
IMAGE_CONTENT = {MEDIA_TYPES[f]: BINARY for f in ("png", "webp", "npy")}


def _strata_headers(model: str, layers: int, size: tuple[int, int],
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """The ``X-Strata-*`` headers every image route answers with, plus ``extra``."""
    return strata_headers(model, layers, {"X-Strata-Height": str(size[0]), "X-Strata-Width": str(size[1]),
                                          **(extra or {})})


def _image_response(image_bytes: bytes, fmt: ImageFormat, model: str, layers: int,
                    size: tuple[int, int], extra: dict[str, str] | None = None) -> Response:
    return Response(image_bytes, media_type=MEDIA_TYPES[fmt], headers=_strata_headers(model, layers, size, extra))


def image_work(data: bytes) -> Work:
    """The work of encoding the image in ``data`` (read from its header; a file that does not open costs
    little: it fails when it runs)."""
    size = image_size(data)
    return NOTHING if size is None else Work.image(size, decode=False)


@router.post(
    "/images:compress",
    summary="Compress an image into a Strata stream",
    response_class=Response,
    responses={
        200: {"description": "the stream", "content": {OCTET: BINARY}, "headers": {
            "X-Strata-Model": MODEL_HEADER, "X-Strata-Layers": LAYERS_HEADER,
            "X-Strata-Bytes": BYTES_HEADER,
            "X-Strata-Bpp": header_doc("bits per pixel of the whole stream (header included), 4 decimals", "number"),
            **SIZE_HEADERS}},
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(IMAGE_TYPES, "the image: PNG, JPEG or WebP bytes"),
)
async def compress(codec: ImageCodecDep, body: ImageBody, pool: PoolDep, settings: SettingsDep,
                   layers: LayersQuery = None) -> Response:
    check_layers(layers, codec)

    def work() -> tuple[tuple[int, int], bytes]:
        image = read_image(body.data, settings.max_pixels)
        return (image.shape[0], image.shape[1]), codec.compress(image, layers)

    (h, w), data = await pool.run(work, work=image_work(body.data))
    headers = _strata_headers(codec.name, layers or codec.layers, (h, w),
                              {"X-Strata-Bytes": str(len(data)), "X-Strata-Bpp": f"{8 * len(data) / (h * w):.4f}"})
    return Response(data, media_type=OCTET, headers=headers)


@router.post(
    "/images:decompress",
    summary="Decode a Strata stream (all or the first `layers` layers) into an image",
    response_class=Response,
    responses={
        200: {"description": "the decoded image", "content": IMAGE_CONTENT, "headers": {
            "X-Strata-Model": MODEL_HEADER, "X-Strata-Layers": LAYERS_HEADER,
            "X-Strata-Stream-Layers": STREAM_LAYERS_HEADER,
            **SIZE_HEADERS}},
        **responses(401, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(STREAM_TYPES, "a Strata stream (the model is read from its header)"),
)
async def decompress(body: StreamBody, codecs: CodecsDep, pool: PoolDep, settings: SettingsDep,
                     layers: LayersQuery = None, format: ImageFormatQuery = "png",
                     partial: PartialQuery = False) -> Response:
    stream = await pool.run(parse_stream, body.data, settings, Modality.IMAGE, partial)  # the header: the work
    codec = codecs.image_for_stream(stream.header.model)

    def work() -> tuple[ImageCodes, bytes]:
        codes = codec.decompress_codes(body.data, layers, partial=partial)
        return codes, payloads.image_payload(codec.decode(codes), format)

    codes, data = await pool.run(work, work=Work.image(stream.header.size, decode=True))
    present = stream.layers
    return _image_response(data, format, codes.model, codes.layers, codes.size,
                           {"X-Strata-Stream-Layers": str(present)})


@router.post(
    "/images:encode",
    summary="Encode an image into its code stack (the tokens, no entropy coding)",
    response_class=Response,
    responses={
        200: {"description": "codes [layers, rows, columns]: `.npy` (int16, or int32 for codebooks over 32768) "
                             "or the JSON document",
              "content": {MEDIA_TYPES["npy"]: BINARY, JSON: {"schema": CodesDocument.model_json_schema()}},
              "headers": {"X-Strata-Model": MODEL_HEADER, "X-Strata-Layers": LAYERS_HEADER, **SIZE_HEADERS}},
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(IMAGE_TYPES, "the image: PNG, JPEG or WebP bytes"),
)
async def encode(codec: ImageCodecDep, body: ImageBody, pool: PoolDep, settings: SettingsDep,
                 layers: LayersQuery = None,
                 format: Annotated[CodesFormat, Query(description="codes format")] = "npy") -> Response:
    check_layers(layers, codec)

    def work() -> tuple[ImageCodes, bytes]:
        codes = codec.encode(read_image(body.data, settings.max_pixels), layers)
        return codes, payloads.codes_payload(codes, format, max(codec.entry.codebook_sizes))

    codes, data = await pool.run(work, work=image_work(body.data))
    headers = _strata_headers(codes.model, codes.layers, codes.size)
    return Response(data, media_type=MEDIA_TYPES[format], headers=headers)


@router.post(
    "/images:decode",
    summary="Decode a code stack (any prefix of layers) into an image",
    response_class=Response,
    responses={
        200: {"description": "the decoded image", "content": IMAGE_CONTENT,
              "headers": {"X-Strata-Model": MODEL_HEADER, "X-Strata-Layers": LAYERS_HEADER, **SIZE_HEADERS}},
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(
        CODES_TYPES,
        "codes as `.npy` (integer [layers, rows, columns]; give model, height and width as query parameters) "
        "or as the JSON document of `images:encode?format=json` (model, height and width taken from the body)",
        CodesDocument.model_json_schema(),
    ),
)
async def decode(body: CodesBody, codecs: CodecsDep, pool: PoolDep,
                 model: ImageModelQuery = None, height: SizeQuery = None, width: SizeQuery = None,
                 layers: LayersQuery = None, format: ImageFormatQuery = "png") -> Response:
    def parse() -> tuple[ImageCodec, ImageCodes]:
        if body.media_type == JSON:
            doc = payloads.codes_from_json(body.data)
            array = payloads.document_codes(doc, {"model": model, "height": height, "width": width})
            name, size = doc.model, (doc.height, doc.width)
        else:
            if height is None or width is None:
                raise InvalidRequestError("height and width query parameters are required with .npy codes")
            array, name, size = payloads.load_npy(body.data), model, (height, width)
        codec = codecs.image_codec(name)
        return codec, ImageCodes(payloads.check_codes(array, codec.entry.codebook_sizes, codec.grid(size)), size,
                                 codec.name)

    codec, codes = await pool.run(parse)  # the codes' size: the work

    def work() -> bytes:
        return payloads.image_payload(codec.decode(codes, layers), format)

    data = await pool.run(work, work=Work.image(codes.size, decode=True))
    return _image_response(data, format, codec.name, layers or codes.layers, codes.size)
