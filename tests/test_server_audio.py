"""The audio routes end to end: a real uvicorn server serving ``tiny-image`` and ``tiny-audio`` (one models folder),
driven by the SDK and by raw HTTP. Every result must equal the library's (``tiny_audio_codec``) byte for byte.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct

import httpx
import numpy as np
import pytest
import soundfile as sf
from strata import bitstream
from strata.audio import SAMPLE_RATE
from strata.client import AsyncClient, Client, InvalidStreamError, NotFoundError, UnsupportedMediaError
from strata.frontend.audio import read_audio, resample, write_wav
from strata.vocoder.refine import DEFAULT_ITERATIONS

from tests.conftest import (
    HIFIGAN_LSB,
    assert_wav_of,
    flac_bytes,
    png_bytes,
    running_server,
    server_settings,
    synthetic_image,
    synthetic_sound,
)

pytest.importorskip("fastapi")

SOUND = synthetic_sound(1.3, seed=2)
WAV = flac_bytes(SOUND, SAMPLE_RATE, "WAV")  # 16-bit PCM, mono, 22 050 Hz
PNG = png_bytes(synthetic_image(40, 56, seed=5))


def samples_of(data: bytes) -> np.ndarray:
    """What the server feeds the codec: the decoded file, mono, resampled to 22 050 Hz."""
    sound = read_audio(data, 600)
    return resample(sound.samples, sound.sample_rate, SAMPLE_RATE)


def wav_header(rate: int, channels: int, frames: int, bits: int = 16) -> bytes:
    """A PCM WAV file made by hand: RIFF header, ``fmt`` chunk, ``data`` chunk of ``frames`` silent frames."""
    block = channels * bits // 8
    size = frames * block
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, channels, rate, rate * block, block, bits)
    riff = struct.pack("<4sI4s", b"RIFF", 4 + len(fmt) + 8 + size, b"WAVE")
    return riff + fmt + struct.pack("<4sI", b"data", size) + bytes(size)


def nan_wav() -> bytes:
    x = np.zeros(2000, dtype=np.float32)
    x[100] = np.nan
    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def post(url: str, route: str, body: bytes | str, content_type: str | None = None, **params) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(f"{url}/v1/{route}", params=params, content=body, headers=headers, timeout=60)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code and body["message"], body
    return body


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return samples_of(WAV)


@pytest.fixture(scope="module")
def stream(tiny_audio_codec, samples) -> bytes:
    return tiny_audio_codec.compress(samples)


@pytest.fixture(scope="module")
def image_stream(tiny_codec) -> bytes:
    return tiny_codec.compress(synthetic_image(40, 56, seed=5))


@pytest.fixture
def api(live_av_server):
    with Client(live_av_server, timeout=60) as c:
        yield c


# ------------------------------------------------------------------------------------ happy paths
def test_models_and_readiness_list_both_modalities(api, tiny_av_registry) -> None:
    assert api.health().models == ("tiny-audio", "tiny-image")
    image, audio = api.models()
    entry = tiny_av_registry.entry("tiny-audio")
    assert (image.name, image.modality, image.default, image.sample_rate) == ("tiny-image", "image", True, None)
    assert (audio.name, audio.modality, audio.default, audio.sample_rate) == ("tiny-audio", "audio", True, 22050)
    assert audio.layers == entry.layers == 4 and audio.codebook_sizes == entry.codebook_sizes
    assert audio.factor == entry.factor and audio.kbps_per_layer == () and audio.bits_per_layer == ()
    assert api.model("tiny-audio") == audio


@pytest.mark.parametrize("layers", [None, 2])
def test_compress_equals_the_library(api, tiny_audio_codec, samples, layers) -> None:
    result = api.compress_audio(WAV, layers=layers)
    assert result.data == tiny_audio_codec.compress(samples, layers)
    assert (result.model, result.layers, result.bytes, result.samples) == (
        "tiny-audio",
        layers or 4,
        len(result.data),
        samples.size,
    )
    seconds = samples.size / SAMPLE_RATE
    assert result.seconds == round(seconds, 4) and result.sample_rate == SAMPLE_RATE
    assert result.kbps == round(8 * len(result.data) / seconds / 1000, 4)


def test_compress_resamples_and_downmixes(api, tiny_audio_codec) -> None:
    stereo = np.stack([SOUND, 0.5 * SOUND], axis=1)
    stereo = np.stack([resample(stereo[:, c], SAMPLE_RATE, 44100) for c in range(2)], axis=1)
    flac = flac_bytes(stereo, 44100, "FLAC")
    result = api.compress_audio(flac)
    assert result.data == tiny_audio_codec.compress(samples_of(flac))
    assert abs(result.seconds - 1.3) < 1e-3
    ogg = flac_bytes(SOUND, SAMPLE_RATE, "OGG")
    assert api.compress_audio(ogg, layers=1).data == tiny_audio_codec.compress(samples_of(ogg), 1)


@pytest.mark.parametrize(("layers", "vocoder"), [(None, "hifigan"), (1, "hifigan"), (3, "griffinlim")])
def test_decompress_equals_the_library(api, live_av_server, tiny_audio_codec, stream, layers, vocoder) -> None:
    wav = api.decompress_audio(stream, layers=layers, vocoder=vocoder)
    assert_wav_of(wav, tiny_audio_codec.decompress(stream, layers, vocoder=vocoder))
    info = sf.info(io.BytesIO(wav))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 1, "PCM_16", SOUND.size)
    raw = post(live_av_server, "audio:decompress", stream, layers=layers or 4)
    assert raw.headers["content-type"] == "audio/wav"
    assert (raw.headers["x-strata-layers"], raw.headers["x-strata-stream-layers"]) == (str(layers or 4), "4")
    assert raw.headers["x-strata-samples"] == str(SOUND.size) and raw.headers["x-strata-sample-rate"] == "22050"


def int16_of(wav: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(wav), dtype="int16")[0].astype(np.int32)


@pytest.mark.parametrize("refine", [0, 3])
def test_refine_equals_the_library(api, live_av_server, tiny_audio_codec, stream, refine) -> None:
    raw = post(live_av_server, "audio:decompress", stream, refine=refine)
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"] == "audio/wav" and raw.headers["x-strata-refine"] == str(refine)
    assert_wav_of(raw.content, tiny_audio_codec.decompress(stream, refine=refine))
    assert_wav_of(api.decompress_audio(stream, refine=refine), tiny_audio_codec.decompress(stream, refine=refine))
    assert_wav_of(
        api.decompress_audio(stream, layers=2, refine=refine), tiny_audio_codec.decompress(stream, 2, refine=refine)
    )


def test_refine_changes_the_sound(live_av_server, stream) -> None:
    unrefined, refined = (post(live_av_server, "audio:decompress", stream, refine=k) for k in (0, 3))
    assert unrefined.status_code == refined.status_code == 200
    assert np.abs(int16_of(refined.content) - int16_of(unrefined.content)).max() > 10 * HIFIGAN_LSB
    default = post(live_av_server, "audio:decompress", stream)  # DEFAULT_ITERATIONS, neither of the two
    assert np.abs(int16_of(default.content) - int16_of(unrefined.content)).max() > 10 * HIFIGAN_LSB


def test_refine_header(live_av_server, stream) -> None:
    given = post(live_av_server, "audio:decompress", stream, refine=3)
    assert given.status_code == 200 and given.headers["x-strata-refine"] == "3"
    default = post(live_av_server, "audio:decompress", stream)
    assert default.status_code == 200 and default.headers["x-strata-refine"] == str(DEFAULT_ITERATIONS)
    explicit = post(live_av_server, "audio:decompress", stream, vocoder="hifigan")
    assert explicit.headers["x-strata-refine"] == str(DEFAULT_ITERATIONS)
    gl = post(live_av_server, "audio:decompress", stream, vocoder="griffinlim")
    assert gl.status_code == 200 and "x-strata-refine" not in gl.headers
    for params in ({"output": "mel"}, {"output": "mel", "refine": 3}):  # refine is ignored for the mel
        mel = post(live_av_server, "audio:decompress", stream, **params)
        assert mel.status_code == 200 and mel.headers["content-type"] == "application/x-npy"
        assert "x-strata-refine" not in mel.headers


def test_refine_header_for_a_sound_too_short_to_refine(live_av_server, tiny_audio_codec) -> None:
    """256 samples decode to one mel frame, which the vocoder does not refine: the header says 0, not 8."""
    for n, applied in ((256, 0), (257, DEFAULT_ITERATIONS)):
        sound = SOUND[:n]
        compressed = post(live_av_server, "audio:compress", flac_bytes(sound, SAMPLE_RATE, "WAV"))
        assert compressed.status_code == 200, compressed.text
        decoded = post(live_av_server, "audio:decompress", compressed.content)
        assert decoded.status_code == 200 and decoded.headers["x-strata-refine"] == str(applied)
        assert_wav_of(decoded.content, tiny_audio_codec.decompress(compressed.content))


def test_decode_with_refine(live_av_server, tiny_audio_codec, samples) -> None:
    expected = tiny_audio_codec.encode(samples)
    buf = io.BytesIO()
    np.save(buf, expected.codes.astype(np.int16))
    for refine in (0, 3):
        raw = post(
            live_av_server, "audio:decode", buf.getvalue(), "application/x-npy", samples=SOUND.size, refine=refine
        )
        assert raw.status_code == 200, raw.text
        assert raw.headers["x-strata-refine"] == str(refine)
        assert_wav_of(raw.content, tiny_audio_codec.decode(expected, refine=refine))
    raw = post(live_av_server, "audio:decode", buf.getvalue(), "application/x-npy", samples=SOUND.size, layers=2)
    assert raw.headers["x-strata-refine"] == str(DEFAULT_ITERATIONS)
    raw = post(
        live_av_server, "audio:decode", buf.getvalue(), "application/x-npy", samples=SOUND.size, vocoder="griffinlim"
    )
    assert raw.status_code == 200 and "x-strata-refine" not in raw.headers
    raw = post(
        live_av_server, "audio:decode", buf.getvalue(), "application/x-npy", samples=SOUND.size, output="mel", refine=3
    )
    assert raw.status_code == 200 and "x-strata-refine" not in raw.headers


def test_sdk_decode_audio_with_refine(api, live_av_server, tiny_audio_codec, samples) -> None:
    codes = api.encode_audio(WAV)
    expected = tiny_audio_codec.encode(samples)
    assert_wav_of(api.decode_audio(codes, refine=0), tiny_audio_codec.decode(expected, refine=0))
    assert_wav_of(api.decode_audio(codes, layers=1, refine=3), tiny_audio_codec.decode(expected, 1, refine=3))

    async def main() -> None:
        async with AsyncClient(live_av_server, timeout=60) as c:
            assert_wav_of(await c.decode_audio(codes, refine=0), tiny_audio_codec.decode(expected, refine=0))
            stream = tiny_audio_codec.compress(samples)
            assert_wav_of(await c.decompress_audio(stream, refine=3), tiny_audio_codec.decompress(stream, refine=3))

    asyncio.run(main())


def test_compress_decompress_round_trip(api, tiny_audio_codec, samples) -> None:
    compressed = api.compress_audio(WAV, layers=3)
    wav = api.decompress_audio(compressed)  # a CompressedAudio goes back as it came
    assert_wav_of(wav, tiny_audio_codec.decompress(tiny_audio_codec.compress(samples, 3)))


def test_progressive_truncated_and_partial_streams(api, live_av_server, tiny_audio_codec, stream) -> None:
    for k in (1, 2, 3):
        short = bitstream.truncate(stream, k)
        assert_wav_of(api.decompress_audio(short), tiny_audio_codec.decompress(stream, k))
    cut = stream[:-3]  # the last chunk is incomplete: 3 complete layers remain
    raw = post(live_av_server, "audio:decompress", cut, partial="true")
    assert raw.status_code == 200 and raw.headers["x-strata-stream-layers"] == "3"
    assert_wav_of(raw.content, tiny_audio_codec.decompress(stream, 3))
    assert api.decompress_audio(cut, partial=True) == raw.content
    assert_error(post(live_av_server, "audio:decompress", cut), 422, "truncated_stream")


@pytest.mark.parametrize("layers", [None, 2])
def test_mel_output(api, live_av_server, tiny_audio_codec, stream, layers) -> None:
    mel = api.decompress_audio_mel(stream, layers=layers)
    assert mel.dtype == np.float32 and mel.shape == (80, math.ceil(SOUND.size / 256))
    np.testing.assert_array_equal(mel, tiny_audio_codec.decompress_mel(stream, layers))
    raw = post(live_av_server, "audio:decompress", stream, output="mel", vocoder="griffinlim")
    assert raw.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(raw.content)), tiny_audio_codec.decompress_mel(stream))


@pytest.mark.parametrize("layers", [None, 2])
def test_tokens_round_trip_npy(api, tiny_audio_codec, samples, layers) -> None:
    codes = api.encode_audio(WAV, layers=layers)
    expected = tiny_audio_codec.encode(samples, layers)
    assert isinstance(codes.array, np.ndarray) and codes.array.dtype == np.int16
    np.testing.assert_array_equal(codes.array, expected.codes)
    assert (codes.model, codes.samples, codes.sample_rate, codes.layers) == (
        "tiny-audio",
        SOUND.size,
        SAMPLE_RATE,
        layers or 4,
    )
    assert_wav_of(api.decode_audio(codes), tiny_audio_codec.decode(expected))
    assert api.decode_audio(codes, layers=1, vocoder="griffinlim") == write_wav(
        tiny_audio_codec.decode(expected, 1, vocoder="griffinlim"), SAMPLE_RATE
    )
    np.testing.assert_array_equal(api.decode_audio_mel(codes, layers=1), tiny_audio_codec.decode_mel(expected, 1))


def test_tokens_round_trip_json(api, live_av_server, tiny_audio_codec, samples, monkeypatch) -> None:
    expected = tiny_audio_codec.encode(samples)
    raw = post(live_av_server, "audio:encode", WAV, "audio/wav", format="json")
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    doc = raw.json()
    assert doc == {
        "model": "tiny-audio",
        "samples": SOUND.size,
        "sample_rate": 22050,
        "layers": 4,
        "codes": expected.codes.tolist(),
    }
    decoded = post(live_av_server, "audio:decode", raw.content, "application/json", layers=2)
    assert decoded.status_code == 200 and decoded.headers["x-strata-layers"] == "2"
    assert_wav_of(decoded.content, tiny_audio_codec.decode(expected, 2))
    # The SDK without numpy: JSON both ways, nested lists; the mel comes back as .npy bytes.
    monkeypatch.setattr("strata.client._base.has_numpy", lambda: False)
    codes = api.encode_audio(WAV)
    assert codes.array == expected.codes.tolist()
    assert_wav_of(api.decode_audio(codes), tiny_audio_codec.decode(expected))
    mel = api.decode_audio_mel(codes)
    assert isinstance(mel, bytes)
    np.testing.assert_array_equal(np.load(io.BytesIO(mel)), tiny_audio_codec.decode_mel(expected))


def test_async_client(live_av_server, tiny_audio_codec, samples) -> None:
    async def main() -> None:
        async with AsyncClient(live_av_server, timeout=60) as c:
            results = await asyncio.gather(*(c.compress_audio(WAV, layers=k) for k in (1, 2, 3, 4)))
            assert [r.data for r in results] == [tiny_audio_codec.compress(samples, k) for k in (1, 2, 3, 4)]
            wav = await c.decompress_audio(results[1])
            assert_wav_of(wav, tiny_audio_codec.decompress(results[1].data))
            codes = await c.encode_audio(WAV)
            mel = await c.decode_audio_mel(codes)
            np.testing.assert_array_equal(mel, tiny_audio_codec.decode_mel(tiny_audio_codec.encode(samples)))
            one = await c.decode_audio(codes, layers=1)
            assert_wav_of(one, tiny_audio_codec.decode(tiny_audio_codec.encode(samples), 1))

    asyncio.run(main())


def test_metrics_label_the_audio_routes(api, live_av_server) -> None:
    api.compress_audio(WAV, layers=1)
    post(live_av_server, "audio:compress", b"not audio")
    text = httpx.get(f"{live_av_server}/metrics").text
    assert 'strata_http_requests_total{method="POST",route="/v1/audio:compress",status="200"}' in text
    assert 'strata_http_requests_total{method="POST",route="/v1/audio:compress",status="415"}' in text
    assert 'strata_http_request_bytes_total{route="/v1/audio:compress"}' in text


def test_openapi_documents_the_audio_routes(live_av_server) -> None:
    spec = httpx.get(f"{live_av_server}/openapi.json").json()
    for route in ("compress", "decompress", "encode", "decode"):
        op = spec["paths"][f"/v1/audio:{route}"]["post"]
        assert op["tags"] == ["audio"]
        for status in ("401", "404", "413", "415", "422", "503"):
            assert op["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }, (route, status)
        headers = op["responses"]["200"]["headers"]
        assert {"X-Strata-Model", "X-Strata-Layers", "X-Strata-Seconds", "X-Strata-Samples"} <= set(headers)
        assert "layers" in {p["name"] for p in op["parameters"]}
    compress = spec["paths"]["/v1/audio:compress"]["post"]
    assert {"X-Strata-Kbps", "X-Strata-Bytes"} <= set(compress["responses"]["200"]["headers"])
    assert {"audio/wav", "audio/flac", "audio/ogg", "application/octet-stream"} <= set(
        compress["requestBody"]["content"]
    )
    decompress = spec["paths"]["/v1/audio:decompress"]["post"]
    assert set(decompress["responses"]["200"]["content"]) == {"audio/wav", "application/x-npy"}
    params = {p["name"]: p for p in decompress["parameters"]}
    assert {"layers", "partial", "vocoder", "output"} <= set(params)
    decode = spec["paths"]["/v1/audio:decode"]["post"]
    assert {"model", "samples", "sample_rate", "vocoder", "output"} <= {p["name"] for p in decode["parameters"]}
    body_schema = decode["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "samples", "sample_rate", "codes"} <= set(body_schema["properties"])
    assert spec["components"]["schemas"]["Vocoder"]["enum"] == ["hifigan", "vocos", "griffinlim"]
    assert params["output"]["schema"]["enum"] == ["wav", "mel"]
    model_info = spec["components"]["schemas"]["ModelInfo"]["properties"]
    assert {"kbps_per_layer", "sample_rate"} <= set(model_info)


def test_openapi_documents_refine(live_av_server) -> None:
    spec = httpx.get(f"{live_av_server}/openapi.json").json()
    for route in ("decompress", "decode"):
        op = spec["paths"][f"/v1/audio:{route}"]["post"]
        refine = {p["name"]: p for p in op["parameters"]}["refine"]
        assert refine["in"] == "query" and not refine.get("required", False)
        assert {"type": "integer", "minimum": 0, "maximum": 32} in refine["schema"]["anyOf"], refine["schema"]
        assert "X-Strata-Refine" in op["responses"]["200"]["headers"]


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("name", "body", "content_type", "status", "code"),
    [
        ("not audio", b"hello, not a sound at all" * 4, None, 415, "unsupported_media"),
        ("an image as audio", PNG, "audio/wav", 415, "unsupported_media"),
        ("image content type", WAV, "image/png", 415, "unsupported_media_type"),
        ("truncated header", WAV[:30], "audio/wav", 415, "unsupported_media"),
        ("empty body", b"", "audio/wav", 422, "empty_body"),
        ("zero-length WAV", wav_header(22050, 1, 0), "audio/wav", 422, "invalid_input"),
        ("NaN samples", nan_wav(), "audio/wav", 422, "invalid_input"),
        ("10 MHz sample rate", wav_header(10_000_000, 1, 100), "audio/wav", 415, "unsupported_media"),
        ("1000 channels", wav_header(22050, 1000, 10), "audio/wav", 415, "unsupported_media"),
        ("9 channels (limit 8)", wav_header(22050, 9, 10), "audio/wav", 415, "unsupported_media"),
    ],
)
@pytest.mark.parametrize("route", ["audio:compress", "audio:encode"])
def test_bad_sounds(live_av_server, route, name, body, content_type, status, code) -> None:
    message = assert_error(post(live_av_server, route, body, content_type), status, code)["message"]
    if "rate" in name:
        assert "10000000 Hz" in message
    if "channels" in name:
        assert "channels" in message


def test_hand_made_wav_is_accepted(live_av_server) -> None:
    ok = post(live_av_server, "audio:compress", wav_header(16000, 2, 4000), "audio/x-wav")
    assert ok.status_code == 200 and ok.headers["x-strata-seconds"] == "0.2500"


@pytest.mark.parametrize(
    ("value", "code"),
    [("0", "invalid_layers"), ("5", "invalid_layers"), ("-1", "invalid_layers"), ("abc", "invalid_request")],
)
@pytest.mark.parametrize("route", ["compress", "decompress", "encode", "decode"])
def test_bad_layers(live_av_server, tiny_audio_codec, samples, stream, route, value, code) -> None:
    codes = tiny_audio_codec.encode(samples).codes.astype(np.int16)
    buf = io.BytesIO()
    np.save(buf, codes)
    body, kind, extra = {
        "compress": (WAV, "audio/wav", {}),
        "encode": (WAV, "audio/wav", {}),
        "decompress": (stream, None, {}),
        "decode": (buf.getvalue(), "application/x-npy", {"samples": SOUND.size}),
    }[route]
    assert_error(post(live_av_server, f"audio:{route}", body, kind, layers=value, **extra), 422, code)


def test_layers_above_those_in_a_truncated_stream(live_av_server, stream) -> None:
    short = bitstream.truncate(stream, 2)
    assert_error(post(live_av_server, "audio:decompress", short, layers=3), 422, "invalid_layers")


@pytest.mark.parametrize(("param", "value"), [("vocoder", "wavenet"), ("output", "mp3"), ("partial", "maybe")])
def test_bad_vocoder_and_output(live_av_server, stream, param, value) -> None:
    body = assert_error(post(live_av_server, "audio:decompress", stream, **{param: value}), 422, "invalid_request")
    assert param in body["message"]


@pytest.mark.parametrize("value", ["-1", "33", "abc", "1.5"])
@pytest.mark.parametrize("route", ["decompress", "decode"])
def test_bad_refine(live_av_server, tiny_audio_codec, samples, stream, route, value) -> None:
    body, kind, extra = _decode_body(tiny_audio_codec, samples, stream, route)
    message = assert_error(
        post(live_av_server, f"audio:{route}", body, kind, refine=value, **extra), 422, "invalid_request"
    )["message"]
    assert "refine" in message


@pytest.mark.parametrize("route", ["decompress", "decode"])
def test_refine_with_griffinlim_is_refused(live_av_server, tiny_audio_codec, samples, stream, route) -> None:
    body, kind, extra = _decode_body(tiny_audio_codec, samples, stream, route)
    response = post(live_av_server, f"audio:{route}", body, kind, vocoder="griffinlim", refine=2, **extra)
    assert "refine" in assert_error(response, 422, "invalid_input")["message"]


def _decode_body(codec, samples, stream, route) -> tuple[bytes, str | None, dict]:
    """Body, content type and extra query parameters of a valid request to ``audio:{route}``."""
    if route == "decompress":
        return stream, None, {}
    buf = io.BytesIO()
    np.save(buf, codec.encode(samples).codes.astype(np.int16))
    return buf.getvalue(), "application/x-npy", {"samples": SOUND.size}


def test_wrong_modality(api, live_av_server, stream, image_stream) -> None:
    body = assert_error(post(live_av_server, "audio:decompress", image_stream), 422, "wrong_modality")
    assert "image stream" in body["message"] and "/v1/images:decompress" in body["message"]
    body = assert_error(post(live_av_server, "images:decompress", stream), 422, "wrong_modality")
    assert "audio stream" in body["message"] and "/v1/audio:decompress" in body["message"]
    with pytest.raises(InvalidStreamError) as e:
        api.decompress_audio(image_stream)
    assert (e.value.status, e.value.code) == (422, "wrong_modality")
    with pytest.raises(InvalidStreamError):
        api.decompress(stream)


def test_unknown_models(api, live_av_server, tiny_audio_codec, samples) -> None:
    body = assert_error(post(live_av_server, "audio:compress", WAV, model="nope"), 404, "unknown_model")
    assert "tiny-audio" in body["message"]
    body = assert_error(post(live_av_server, "audio:encode", WAV, model="tiny-image"), 404, "unknown_model")
    assert "image model" in body["message"]
    body = assert_error(post(live_av_server, "images:compress", PNG, model="tiny-audio"), 404, "unknown_model")
    assert "audio model" in body["message"]
    doc = {"model": "tiny-image", "samples": SOUND.size, "codes": tiny_audio_codec.encode(samples).codes.tolist()}
    assert_error(post(live_av_server, "audio:decode", json.dumps(doc), "application/json"), 404, "unknown_model")
    with pytest.raises(NotFoundError):
        api.compress_audio(WAV, model="nope")


def test_invalid_codes(live_av_server, tiny_audio_codec, samples) -> None:
    codes = tiny_audio_codec.encode(samples).codes
    doc = {"model": "tiny-audio", "samples": SOUND.size, "sample_rate": 22050, "codes": codes.tolist()}
    cases = [
        {**doc, "samples": SOUND.size + 5000},  # a grid of other length
        {**doc, "codes": np.where(codes == codes.max(), 16, codes).tolist()},  # out of the codebook
        {**doc, "sample_rate": 44100},
        {**doc, "layers": 3},
        {k: v for k, v in doc.items() if k != "samples"},
    ]
    for case in cases:
        assert_error(post(live_av_server, "audio:decode", json.dumps(case), "application/json"), 422, "invalid_codes")
    buf = io.BytesIO()
    np.save(buf, codes.astype(np.int16))
    assert_error(post(live_av_server, "audio:decode", buf.getvalue(), "application/x-npy"), 422, "invalid_request")
    assert_error(
        post(live_av_server, "audio:decode", json.dumps(doc), "application/json", samples=7), 422, "invalid_request"
    )
    image_doc = {"model": "tiny-image", "height": 40, "width": 56, "codes": [[[1]]]}
    assert_error(post(live_av_server, "audio:decode", json.dumps(image_doc), "application/json"), 422, "invalid_codes")
    # A .npy header of negative dimensions whose product matches the body (-1·-1·4 int16 = 8 bytes): was a 500.
    header = b"{'descr': '<i2', 'fortran_order': False, 'shape': (-1, -1, 4), }"
    header += b" " * ((63 - 10 - len(header)) % 64) + b"\n"
    negative = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(8)
    body = assert_error(
        post(live_av_server, "audio:decode", negative, "application/x-npy", samples=SOUND.size), 422, "invalid_codes"
    )
    assert "(-1, -1, 4)" in body["message"]


def test_many_channels_at_a_high_rate_are_read_block_by_block(live_av_server, tiny_audio_codec) -> None:
    # 4 s of 8-channel 384 kHz silence: a FLAC of ~14 kB that decodes to 49 MB of float32 (10 minutes: 7 GB from a
    # 2 MB body). The server used to decode it whole, then average and resample it; block by block it holds about
    # the 22 050 Hz mono result (353 kB) plus one block, and gives the same samples.
    import tracemalloc

    rate, seconds = 384_000, 4
    flac = flac_bytes(np.zeros((seconds * rate, 8), np.float32), rate, "FLAC")
    assert len(flac) < 100_000
    expected = tiny_audio_codec.compress(samples_of(flac))
    tracemalloc.start()
    try:
        response = post(live_av_server, "audio:compress", flac, "audio/flac")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert response.content == expected and response.headers["x-strata-seconds"] == f"{seconds:.4f}"
    assert peak < 20 * 2**20, f"reading the sound peaked at {peak / 2**20:.0f} MiB"


# ------------------------------------------------------------------------------- dedicated servers
@pytest.fixture(scope="module")
def short_server(tiny_av_registry):
    app = create_app_for(tiny_av_registry, max_audio_seconds=1.0, max_body_bytes=200_000)
    with running_server(app) as url:
        yield url


def create_app_for(registry, **overrides):
    from strata.server.main import create_app

    return create_app(server_settings(registry, **overrides))


def test_413_too_long(short_server, tiny_audio_codec, samples, stream) -> None:
    for route in ("audio:compress", "audio:encode"):
        body = assert_error(post(short_server, route, WAV, "audio/wav"), 413, "limit_exceeded")
        assert "1 s" in body["message"]
    assert_error(post(short_server, "audio:decompress", stream), 413, "stream_limit_exceeded")
    buf = io.BytesIO()
    np.save(buf, tiny_audio_codec.encode(samples).codes.astype(np.int16))
    assert_error(
        post(short_server, "audio:decode", buf.getvalue(), "application/x-npy", samples=SOUND.size),
        413,
        "limit_exceeded",
    )
    assert_error(post(short_server, "audio:compress", bytes(300_000), "audio/wav"), 413, "body_too_large")
    shorter = flac_bytes(SOUND[:SAMPLE_RATE], SAMPLE_RATE, "WAV")  # exactly at the limit
    assert post(short_server, "audio:compress", shorter, "audio/wav").status_code == 200


def test_image_only_server_answers_404_on_audio_routes(live_server, stream) -> None:
    for route, body in (
        ("audio:compress", WAV),
        ("audio:encode", WAV),
        ("audio:decompress", stream),
        ("audio:decode", b"{}"),
    ):
        message = assert_error(post(live_server, route, body), 404, "unknown_model")["message"]
        assert "no audio model" in message
    with Client(live_server) as c, pytest.raises(NotFoundError):
        c.compress_audio(WAV)
    with Client(live_server) as c:
        assert all(m.modality == "image" for m in c.models())


def _mutations(rng: np.random.Generator, seed: bytes, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        data = bytearray(seed)
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, min(len(data), 200)))] = int(rng.integers(0, 256))  # mostly the headers
        cut = int(rng.integers(1, len(data) + 1)) if rng.random() < 0.3 else len(data)
        out.append(bytes(data[:cut]))
    return out


def test_fuzz_never_500(live_av_server, stream, tiny_audio_codec, samples) -> None:
    rng = np.random.default_rng(4321)
    short = flac_bytes(SOUND[:4000], SAMPLE_RATE, "WAV")
    doc = json.dumps(
        {"model": "tiny-audio", "samples": SOUND.size, "codes": tiny_audio_codec.encode(samples).codes.tolist()}
    ).encode()
    seeds = {
        "audio:compress": short,
        "audio:encode": flac_bytes(SOUND[:4000], SAMPLE_RATE, "FLAC"),
        "audio:decompress": stream,
        "audio:decode": doc,
    }
    params = [
        {},
        {"layers": "2"},
        {"output": "mel"},
        {"vocoder": "griffinlim", "layers": "1"},
        {"partial": "true"},
        {"samples": "0"},
    ]
    statuses = set()
    with httpx.Client(timeout=60) as http:
        for route, seed in seeds.items():
            bodies = [rng.bytes(int(rng.integers(1, 300))) for _ in range(4)] + _mutations(rng, seed, 10)
            for i, body in enumerate(bodies):
                kind = "application/json" if route == "audio:decode" else "application/octet-stream"
                response = http.post(
                    f"{live_av_server}/v1/{route}",
                    content=body,
                    params=params[i % len(params)],
                    headers={"content-type": kind},
                )
                statuses.add(response.status_code)
                assert response.status_code < 500, (route, body[:64], response.text)
                if not response.is_success:
                    assert set(response.json()) == {"code", "message"}
    assert statuses & {415, 422}


def test_unsupported_media_maps_in_the_sdk(api) -> None:
    with pytest.raises(UnsupportedMediaError) as e:
        api.compress_audio(b"definitely not a sound")
    assert (e.value.status, e.value.code) == (415, "unsupported_media")


def test_mel_of_the_original_is_the_frontends(live_av_server, samples) -> None:
    """``audio:mel`` gives the log-mel the codec's frontend computes from the sound (what ``output=mel`` of a
    decoded stream is compared with), and refuses what is not a sound."""
    from strata.frontend.audio import log_mel

    r = post(live_av_server, "audio:mel", WAV, "audio/wav")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    mel = np.load(io.BytesIO(r.content))
    np.testing.assert_array_equal(mel, log_mel(samples).astype(np.float32))
    assert r.headers["X-Strata-Samples"] == str(samples.size) and r.headers["X-Strata-Sample-Rate"] == "22050"
    assert_error(post(live_av_server, "audio:mel", b"not a sound", "audio/wav"), 415, "unsupported_media")
