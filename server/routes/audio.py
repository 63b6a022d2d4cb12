"""``/v1/audio:*``: compress / decompress (sound ↔ stream) and encode / decode (sound ↔ codes).

::

    WAV/FLAC/OGG ─►─ read_audio (≤ max_audio_seconds, ≤ max_audio_channels; block by block) ─►─ mono, 22 050 Hz
        ─►─ AudioCodec.encode ─►─ codes ─►─ stream                                   (audio:compress / :encode)
    stream / codes ─►─ AudioCodec.decode_mel ─►─ log-mel [80, frames] ─►─ .npy             (output=mel)
                                             └─►─ Vocos | HiFi-GAN (+ refine) | Griffin-Lim ─►─ 16-bit WAV @ 22 050 Hz

Conventions as the image routes (:mod:`strata.server.routes.images`): the model named by ``model`` is
looked up before the body is read (404; ``audio:decode`` may name it in a JSON body, so it reads
first), ``layers`` is checked on the event loop, everything heavy (decoding the file, resampling,
ONNX, entropy coding, WAV writing) runs in the bounded :class:`~strata.server.pool.InferencePool`, and
every answer carries ``X-Strata-*`` headers. A server whose manifest has no audio model answers
every route here with 404 ``unknown_model``.

Errors peculiar to sound (statuses follow :mod:`strata.frontend.audio`'s exception classes):
not a WAV/FLAC/OGG sound, a sample rate outside 1 000..384 000 Hz or more than
``max_audio_channels`` channels → 415 ``unsupported_media``; no samples or NaN/inf samples → 422
``invalid_input``; longer than ``max_audio_seconds`` → 413 ``limit_exceeded`` (a stream claiming
so → 413 ``stream_limit_exceeded``); an image stream → 422 ``wrong_modality``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from strata.audio import HOP, SAMPLE_RATE, AudioCodec, AudioCodes, Vocoder
from strata.bitstream import Modality
from strata.errors import LimitExceededError
from strata.frontend.audio import log_mel, pcm16, read_audio, wav_header
from strata.server import payloads
from strata.server.config import Settings
from strata.server.cost import NOTHING, Work, sound_seconds
from strata.server.deps import (
    AUDIO_TYPES,
    CODES_TYPES,
    JSON,
    OCTET,
    STREAM_TYPES,
    AudioBody,
    AudioCodecDep,
    AudioModelQuery,
    CodecsDep,
    CodesBody,
    PoolDep,
    SettingsDep,
    StreamBody,
    require_api_key,
    require_audio_model,
)
from strata.server.errors import InvalidCodesError, InvalidRequestError, responses
from strata.server.payloads import MEDIA_TYPES, AudioCodesDocument, AudioOutput, CodesFormat
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
from strata.vocoder.refine import MAX_ITERATIONS

router = APIRouter(prefix="/v1", tags=["audio"], dependencies=[Depends(require_api_key), Depends(require_audio_model)])

VocoderQuery = Annotated[
    Vocoder | None,
    Query(
        description="how the decoded log-mel becomes a waveform (ignored for output=mel): the model's HiFi-GAN, "
        "its Vocos (where the model has one, GET /v1/models lists them), or Griffin-Lim; default: the model's "
        "default vocoder, named in X-Strata-Vocoder"
    ),
]
RefineQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_ITERATIONS,
        description="network vocoders (hifigan, vocos): mel-consistency iterations after the network (0: its raw "
        "output; default: the vocoder's, given back in X-Strata-Refine); each pulls the waveform towards the "
        "decoded log-mel (ignored for output=mel)",
    ),
]
OutputQuery = Annotated[
    AudioOutput,
    Query(
        description="wav: 16-bit PCM WAV at 22 050 Hz; mel: the decoded log-mel spectrogram as .npy float32 "
        "[80, frames]"
    ),
]
StreamQuery = Annotated[
    bool,
    Query(
        description="wav only: send the WAV as it is decoded (chunked transfer: the header, then the samples of "
        "each vocoder window), the same bytes as without; the first bytes come after the first window"
    ),
]
SamplesQuery = Annotated[
    int | None, Query(ge=1, le=2**31 - 1, description="length of the sound in samples (required with .npy codes)")
]
RateQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1, description="sample rate of the codes (22050)")]

SOUND_HEADERS = {
    "X-Strata-Seconds": header_doc("duration of the sound, 4 decimals", "number"),
    "X-Strata-Samples": header_doc("length of the sound in samples at the sample rate", "integer"),
    "X-Strata-Sample-Rate": header_doc("sample rate of the codec (22050)", "integer"),
}
REFINE_HEADER = "X-Strata-Refine"
VOCODER_HEADER = "X-Strata-Vocoder"
VOCODER_DOC = header_doc("output=wav: the vocoder that made the waveform (hifigan, vocos or griffinlim)", "string")
REFINE_DOC = header_doc("output=wav with a network vocoder: the mel-consistency iterations applied (0 for a sound "
                        "of 256 samples or fewer, too short to refine)", "integer")
SOUND_CONTENT = {MEDIA_TYPES["wav"]: BINARY, MEDIA_TYPES["mel"]: BINARY}
AUDIO_BODY = "the sound: WAV, FLAC or OGG (Vorbis, Opus) bytes, any sample rate, channels averaged to mono"


def _sound_headers(model: str, layers: int, codes: AudioCodes, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The ``X-Strata-*`` headers every audio route answers with, plus ``extra``."""
    return strata_headers(
        model,
        layers,
        {
            "X-Strata-Seconds": f"{codes.seconds:.4f}",
            "X-Strata-Samples": str(codes.samples),
            "X-Strata-Sample-Rate": str(codes.sample_rate),
            **(extra or {}),
        },
    )


def _read_sound(data: bytes, settings: Settings) -> np.ndarray:
    """Mono float32 samples at 22 050 Hz of an uploaded sound, under the length and channel limits.

    Decoded, downmixed and resampled block by block: the memory held is that of the result, not of the
    file's channels at its own rate (a small FLAC of 8-channel 384 kHz audio would expand 140-fold)."""
    return read_audio(data, settings.max_audio_seconds, settings.max_audio_channels, rate=SAMPLE_RATE).samples


def _sound_work(data: bytes) -> Work:
    """The work of encoding the sound in ``data`` (its length from the file header; see ``image_work``)."""
    seconds = sound_seconds(data)
    return NOTHING if seconds is None else Work.audio(seconds, decode=False)


def _vocoder_headers(codec: AudioCodec, codes: AudioCodes, vocoder: Vocoder | None,
                     refine: int | None) -> dict[str, str]:
    """``X-Strata-Vocoder`` and, for a network vocoder, ``X-Strata-Refine`` (the iterations its output had)."""
    voc = codec.resolve_vocoder(vocoder)
    net = codec.network(voc)
    frames = -(-codes.samples // HOP)  # the mel the vocoder was given; a single frame is not refined
    return {VOCODER_HEADER: voc.value} | ({REFINE_HEADER: str(net.iterations(frames, refine))} if net else {})


def _render(codec: AudioCodec, codes: AudioCodes, layers: int | None, vocoder: Vocoder | None, refine: int | None,
            output: AudioOutput) -> tuple[bytes, dict[str, str]]:
    """The body and its extra headers (:func:`_vocoder_headers`)."""
    if output == "mel":
        return payloads.audio_payload(codec.decode_mel(codes, layers), "mel", codes.sample_rate), {}
    audio = codec.decode(codes, layers, vocoder, refine)
    return payloads.audio_payload(audio, "wav", codes.sample_rate), _vocoder_headers(codec, codes, vocoder, refine)


@router.post(
    "/audio:compress",
    summary="Compress a sound into a Strata stream",
    response_class=Response,
    responses={
        200: {
            "description": "the stream",
            "content": {OCTET: BINARY},
            "headers": {
                "X-Strata-Model": MODEL_HEADER,
                "X-Strata-Layers": LAYERS_HEADER,
                "X-Strata-Bytes": BYTES_HEADER,
                "X-Strata-Kbps": header_doc(
                    "bit rate of the whole stream (header included) in kbit/s, 4 decimals", "number"
                ),
                **SOUND_HEADERS,
            },
        },
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(AUDIO_TYPES, AUDIO_BODY),
)
async def compress(
    codec: AudioCodecDep, body: AudioBody, pool: PoolDep, settings: SettingsDep, layers: LayersQuery = None
) -> Response:
    check_layers(layers, codec)

    def work() -> tuple[AudioCodes, bytes]:
        codes = codec.encode(_read_sound(body.data, settings), layers)
        return codes, codec.compress_codes(codes)

    codes, data = await pool.run(work, work=_sound_work(body.data))
    kbps = 8 * len(data) / codes.seconds / 1000
    headers = _sound_headers(
        codec.name, codes.layers, codes, {"X-Strata-Bytes": str(len(data)), "X-Strata-Kbps": f"{kbps:.4f}"}
    )
    return Response(data, media_type=OCTET, headers=headers)


@router.post(
    "/audio:decompress",
    summary="Decode a Strata audio stream (all or the first `layers` layers) into a WAV or a log-mel",
    response_class=Response,
    responses={
        200: {
            "description": "the decoded sound",
            "content": SOUND_CONTENT,
            "headers": {
                "X-Strata-Model": MODEL_HEADER,
                "X-Strata-Layers": LAYERS_HEADER,
                "X-Strata-Stream-Layers": STREAM_LAYERS_HEADER,
                **SOUND_HEADERS,
                REFINE_HEADER: REFINE_DOC,
                VOCODER_HEADER: VOCODER_DOC,
            },
        },
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(STREAM_TYPES, "a Strata audio stream (the model is read from its header)"),
)
async def decompress(
    body: StreamBody,
    codecs: CodecsDep,
    pool: PoolDep,
    settings: SettingsDep,
    layers: LayersQuery = None,
    partial: PartialQuery = False,
    vocoder: VocoderQuery = None,
    refine: RefineQuery = None,
    output: OutputQuery = "wav",
    stream: StreamQuery = False,
) -> Response:
    if stream and output != "wav":
        raise InvalidRequestError("stream=true applies to output=wav")
    parsed = await pool.run(parse_stream, body.data, settings, Modality.AUDIO, partial)  # the header: the work
    codec = codecs.audio_for_stream(parsed.header.model)
    samples, rate = parsed.header.size
    work = Work.audio(samples / rate, True, output == "wav")
    if stream:
        return await _streamed_wav(codec, body.data, layers, partial, vocoder, refine, pool, work, parsed.layers)

    def run() -> tuple[AudioCodes, tuple[bytes, dict[str, str]]]:
        codes = codec.decompress_codes(body.data, layers, partial=partial)
        return codes, _render(codec, codes, None, vocoder, refine, output)

    codes, (data, extra) = await pool.run(run, work=work)
    headers = _sound_headers(codes.model, codes.layers, codes, {"X-Strata-Stream-Layers": str(parsed.layers), **extra})
    return Response(data, media_type=MEDIA_TYPES[output], headers=headers)


async def _streamed_wav(codec: AudioCodec, data: bytes, layers: int | None, partial: bool, vocoder: Vocoder | None,
                        refine: int | None, pool: PoolDep, work: Work, present: int) -> StreamingResponse:
    """The WAV of a stream sent as it is decoded: the work is admitted once, the codes and the decoder's checks
    run before the answer starts (so errors keep their status), then each vocoder window's samples go out."""
    admission = pool.admit(work)

    def start() -> tuple[AudioCodes, Iterator[bytes]]:
        codes = codec.decompress_codes(data, layers, partial=partial)
        pieces = codec.iter_decode(codes, None, vocoder, refine)
        return codes, (pcm16(piece) for piece in pieces)

    try:
        codes, chunks = await pool.step(start)
    except BaseException:
        admission.release()
        raise
    extra = _vocoder_headers(codec, codes, vocoder, refine)
    headers = _sound_headers(codes.model, codes.layers, codes, {"X-Strata-Stream-Layers": str(present), **extra})

    async def body() -> AsyncIterator[bytes]:
        try:
            yield wav_header(int(codes.samples), int(codes.sample_rate))
            while (chunk := await pool.step(next, chunks, None)) is not None:
                yield chunk
        finally:
            admission.release()

    return StreamingResponse(body(), media_type=MEDIA_TYPES["wav"], headers=headers)


@router.post(
    "/audio:mel",
    summary="The log-mel spectrogram of a sound, as the codec sees it (to compare with a decoded one)",
    response_class=Response,
    responses={
        200: {
            "description": "log-mel float32 [80, frames] as `.npy`: the sound mono at 22 050 Hz, hop 256 (the "
            "frontend of `audio:encode`; `audio:decompress?output=mel` gives the decoded one)",
            "content": {MEDIA_TYPES["mel"]: BINARY},
            "headers": {"X-Strata-Model": MODEL_HEADER, **SOUND_HEADERS},
        },
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(AUDIO_TYPES, AUDIO_BODY),
)
async def mel(codec: AudioCodecDep, body: AudioBody, pool: PoolDep, settings: SettingsDep) -> Response:
    def work() -> tuple[int, bytes]:
        samples = _read_sound(body.data, settings)
        return len(samples), payloads.audio_payload(log_mel(samples), "mel", SAMPLE_RATE)

    length, data = await pool.run(work, work=_sound_work(body.data))
    headers = {"X-Strata-Model": codec.name, "X-Strata-Seconds": f"{length / SAMPLE_RATE:.4f}",
               "X-Strata-Samples": str(length), "X-Strata-Sample-Rate": str(SAMPLE_RATE)}
    return Response(data, media_type=MEDIA_TYPES["mel"], headers=headers)


@router.post(
    "/audio:encode",
    summary="Encode a sound into its code stack (the tokens, no entropy coding)",
    response_class=Response,
    responses={
        200: {
            "description": "codes [layers, rows, columns] (one column per 1 024 samples): `.npy` (int16, or "
            "int32 for codebooks over 32768) or the JSON document",
            "content": {MEDIA_TYPES["npy"]: BINARY, JSON: {"schema": AudioCodesDocument.model_json_schema()}},
            "headers": {"X-Strata-Model": MODEL_HEADER, "X-Strata-Layers": LAYERS_HEADER, **SOUND_HEADERS},
        },
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(AUDIO_TYPES, AUDIO_BODY),
)
async def encode(
    codec: AudioCodecDep,
    body: AudioBody,
    pool: PoolDep,
    settings: SettingsDep,
    layers: LayersQuery = None,
    format: Annotated[CodesFormat, Query(description="codes format")] = "npy",
) -> Response:
    check_layers(layers, codec)

    def work() -> tuple[AudioCodes, bytes]:
        codes = codec.encode(_read_sound(body.data, settings), layers)
        return codes, payloads.codes_payload(codes, format, max(codec.entry.codebook_sizes))

    codes, data = await pool.run(work, work=_sound_work(body.data))
    return Response(data, media_type=MEDIA_TYPES[format], headers=_sound_headers(codes.model, codes.layers, codes))


@router.post(
    "/audio:decode",
    summary="Decode a sound's code stack (any prefix of layers) into a WAV or a log-mel",
    response_class=Response,
    responses={
        200: {
            "description": "the decoded sound",
            "content": SOUND_CONTENT,
            "headers": {
                "X-Strata-Model": MODEL_HEADER,
                "X-Strata-Layers": LAYERS_HEADER,
                **SOUND_HEADERS,
                REFINE_HEADER: REFINE_DOC,
                VOCODER_HEADER: VOCODER_DOC,
            },
        },
        **responses(401, 404, 413, 415, 422, 503),
    },
    openapi_extra=body_doc(
        CODES_TYPES,
        "codes as `.npy` (integer [layers, rows, columns]; give `samples`, and optionally `model` and "
        "`sample_rate`, as query parameters) or as the JSON document of `audio:encode?format=json` (model, samples "
        "and sample rate taken from the body)",
        AudioCodesDocument.model_json_schema(),
    ),
)
async def decode(
    body: CodesBody,
    codecs: CodecsDep,
    pool: PoolDep,
    settings: SettingsDep,
    model: AudioModelQuery = None,
    samples: SamplesQuery = None,
    sample_rate: RateQuery = None,
    layers: LayersQuery = None,
    vocoder: VocoderQuery = None,
    refine: RefineQuery = None,
    output: OutputQuery = "wav",
) -> Response:
    def parse() -> tuple[AudioCodec, AudioCodes]:
        if body.media_type == JSON:
            doc = payloads.codes_from_json(body.data, AudioCodesDocument)
            array = payloads.document_codes(doc, {"model": model, "samples": samples, "sample_rate": sample_rate})
            name, length, rate = doc.model, doc.samples, doc.sample_rate
        else:
            if samples is None:
                raise InvalidRequestError("the samples query parameter is required with .npy codes")
            array, name, length, rate = payloads.load_npy(body.data), model, samples, sample_rate or SAMPLE_RATE
        codec = codecs.audio_codec(name)
        if rate != SAMPLE_RATE:
            raise InvalidCodesError(f"codes at {rate} Hz; model {codec.name!r} works at {SAMPLE_RATE} Hz")
        if length > settings.max_audio_samples:
            raise LimitExceededError(
                f"sound of {length / SAMPLE_RATE:.1f} s is over the limit of {settings.max_audio_seconds:g} s"
            )
        checked = payloads.check_codes(array, codec.entry.codebook_sizes, codec.grid(length), "sound")
        return codec, AudioCodes(checked, length, rate, codec.name)

    codec, codes = await pool.run(parse)  # the sound's length: the work

    def work() -> tuple[bytes, dict[str, str]]:
        return _render(codec, codes, layers, vocoder, refine, output)

    data, extra = await pool.run(work, work=Work.audio(codes.seconds, True, output == "wav"))
    headers = _sound_headers(codec.name, layers or codes.layers, codes, extra)
    return Response(data, media_type=MEDIA_TYPES[output], headers=headers)
