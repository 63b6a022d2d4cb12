"""The SDK's audio methods against ``httpx.MockTransport``: requests, typed results, error mapping.

No server and no numpy needed (the one numpy test skips without it): these run in the httpx-only venv.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import strata.client as client
from strata.client import (
    AsyncClient,
    AudioCodes,
    Client,
    Codes,
    CompressedAudio,
    InvalidStreamError,
    NotFoundError,
    PayloadTooLargeError,
    UnexpectedResponseError,
    UnsupportedMediaError,
)

from tests.client.conftest import AUDIO_HEADERS, AUDIO_MODEL, AUDIO_STREAM, MEL, WAV, Recorder, error

URL = "http://strata.test:9000"
FLAC = b"fLaC\x00\x00\x00\x22" + b"\x00" * 16
OGG = b"OggS\x00\x02" + b"\x00" * 16


@pytest.fixture
def no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("strata.client._base.has_numpy", lambda: False)


def sync_client(recorder: Recorder, **kw) -> Client:
    return Client(URL, transport=httpx.MockTransport(recorder), **kw)


def test_compress_audio_request_and_result(recorder: Recorder) -> None:
    with sync_client(recorder, api_key="k" * 20) as c:
        result = c.compress_audio(WAV, layers=2, model="tiny-audio")
    req = recorder.last
    assert req.method == "POST" and req.url.path == "/v1/audio:compress"
    assert dict(req.url.params) == {"model": "tiny-audio", "layers": "2"}
    assert req.headers["content-type"] == "audio/wav" and req.headers["x-api-key"] == "k" * 20
    assert req.content == WAV
    assert result == CompressedAudio(
        data=AUDIO_STREAM,
        layers=4,
        bytes=len(AUDIO_STREAM),
        kbps=3.2615,
        seconds=1.3,
        model="tiny-audio",
        samples=28665,
        sample_rate=22050,
    )
    assert len(result) == len(AUDIO_STREAM)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(WAV, "audio/wav"), (FLAC, "audio/flac"), (OGG, "audio/ogg"), (b"ID3\x03 an mp3", "application/octet-stream")],
)
def test_audio_content_type_is_sniffed_from_bytes_and_paths(recorder, tmp_path, data, content_type) -> None:
    path = tmp_path / "sound.bin"
    path.write_bytes(data)
    with sync_client(recorder) as c:
        c.compress_audio(data)
        assert recorder.last.headers["content-type"] == content_type
        c.encode_audio(path, format="json")
        assert recorder.last.headers["content-type"] == content_type and recorder.last.content == data
        c.compress_audio(str(path))
        assert recorder.last.content == data


def test_decompress_audio_params_and_result(recorder: Recorder) -> None:
    stream = CompressedAudio(AUDIO_STREAM, 4, len(AUDIO_STREAM), 3.0, 1.3, "tiny-audio")
    with sync_client(recorder) as c:
        wav = c.decompress_audio(stream, layers=2, vocoder="griffinlim", partial=True)
        assert dict(recorder.last.url.params) == {
            "layers": "2",
            "partial": "true",
            "vocoder": "griffinlim",
            "output": "wav",
        }
        assert recorder.last.headers["content-type"] == "application/octet-stream"
        assert recorder.last.content == AUDIO_STREAM and wav == WAV + b"2"
        assert c.decompress_audio(AUDIO_STREAM) == WAV + b"4"
        assert dict(recorder.last.url.params) == {"output": "wav"}  # no vocoder: the model's default
        c.decompress_audio(AUDIO_STREAM, vocoder="vocos")
        assert dict(recorder.last.url.params) == {"vocoder": "vocos", "output": "wav"}
        with pytest.raises(ValueError, match="vocoder must be one of hifigan, vocos, griffinlim"):
            c.decompress_audio(AUDIO_STREAM, vocoder="melgan")


def test_refine_is_sent_only_when_given(recorder: Recorder, no_numpy) -> None:
    codes = AudioCodes([[[1, 2]], [[3, 4]]], "tiny-audio", 2048, 22050, 2)
    with sync_client(recorder) as c:
        assert c.decompress_audio(AUDIO_STREAM, refine=3) == WAV + b"4"
        assert dict(recorder.last.url.params) == {"output": "wav", "refine": "3"}
        c.decompress_audio(AUDIO_STREAM, layers=2, partial=True, refine=0)  # 0 is a value, not "not given"
        assert dict(recorder.last.url.params) == {
            "layers": "2",
            "partial": "true",
            "output": "wav",
            "refine": "0",
        }
        c.decompress_audio(AUDIO_STREAM, refine=None)
        assert "refine" not in recorder.last.url.params
        c.decode_audio(codes, refine=5)
        assert recorder.last.url.path == "/v1/audio:decode"
        assert dict(recorder.last.url.params) == {"output": "wav", "refine": "5"}
        c.decode_audio(codes, layers=1)
        assert dict(recorder.last.url.params) == {"layers": "1", "output": "wav"}
        c.decompress_audio_mel(AUDIO_STREAM)
        assert "refine" not in recorder.last.url.params

    async def main() -> None:
        async with AsyncClient(URL, transport=httpx.MockTransport(recorder)) as c:
            await c.decompress_audio(AUDIO_STREAM, refine=0)
            assert dict(recorder.last.url.params) == {"output": "wav", "refine": "0"}
            await c.decompress_audio(AUDIO_STREAM)
            assert "refine" not in recorder.last.url.params
            await c.decode_audio(codes, refine=32)
            assert dict(recorder.last.url.params) == {"output": "wav", "refine": "32"}
            await c.decode_audio(codes)
            assert "refine" not in recorder.last.url.params

    asyncio.run(main())


@pytest.mark.parametrize("refine", [-1, True, 1.5, "2"])
def test_bad_refine_is_refused_before_sending(recorder: Recorder, refine) -> None:
    with sync_client(recorder) as c, pytest.raises(ValueError, match="refine"):
        c.decompress_audio(AUDIO_STREAM, refine=refine)
    assert recorder.requests == []


def test_mel_without_numpy_is_npy_bytes(recorder: Recorder, no_numpy) -> None:
    with sync_client(recorder) as c:
        mel = c.decompress_audio_mel(AUDIO_STREAM, layers=1)
        assert dict(recorder.last.url.params) == {"layers": "1", "output": "mel"}
        assert mel == MEL


def test_mel_with_numpy_is_an_array(recorder: Recorder) -> None:
    np = pytest.importorskip("numpy")
    with sync_client(recorder) as c:
        mel = c.decompress_audio_mel(AUDIO_STREAM)
    assert isinstance(mel, np.ndarray) and mel.dtype == np.float32 and mel.shape == (2, 3)
    assert mel.tolist() == [[0.5, -1.0, 2.0], [3.0, 4.0, -5.5]]


def test_encode_decode_audio_as_json_without_numpy(recorder: Recorder, no_numpy) -> None:
    with sync_client(recorder) as c:
        codes = c.encode_audio(WAV, layers=2)
        assert recorder.last.url.path == "/v1/audio:encode"
        assert dict(recorder.last.url.params) == {"layers": "2", "format": "json"}
        assert codes.array == [[[1, 2]], [[3, 4]]]
        assert (codes.model, codes.samples, codes.sample_rate, codes.layers) == ("tiny-audio", 2048, 22050, 2)
        assert codes.seconds == 2048 / 22050
        wav = c.decode_audio(codes, layers=1, vocoder="griffinlim")
        req = recorder.last
        assert req.url.path == "/v1/audio:decode" and req.headers["content-type"] == "application/json"
        assert dict(req.url.params) == {"layers": "1", "vocoder": "griffinlim", "output": "wav"}
        assert (
            json.loads(req.content)
            == codes.to_json()
            == {
                "model": "tiny-audio",
                "samples": 2048,
                "sample_rate": 22050,
                "layers": 2,
                "codes": [[[1, 2]], [[3, 4]]],
            }
        )
        assert wav == WAV + b"1"
        assert c.decode_audio_mel(codes) == MEL
        assert dict(recorder.last.url.params) == {"output": "mel"}


def test_decode_audio_sends_npy_with_numpy(recorder: Recorder) -> None:
    np = pytest.importorskip("numpy")
    codes = AudioCodes(np.array([[[1, 2]], [[3, 4]]], dtype=np.int16), "tiny-audio", 2048, 22050, 2)
    with sync_client(recorder) as c:
        c.decode_audio(codes)
    req = recorder.last
    assert req.headers["content-type"] == "application/x-npy"
    assert dict(req.url.params) == {
        "model": "tiny-audio",
        "samples": "2048",
        "sample_rate": "22050",
        "output": "wav",
    }


def test_client_side_argument_errors_send_nothing(recorder: Recorder) -> None:
    with sync_client(recorder) as c:
        with pytest.raises(ValueError, match="vocoder must be one of hifigan, vocos, griffinlim"):
            c.decompress_audio(AUDIO_STREAM, vocoder="wavenet")
        with pytest.raises(TypeError, match="sound must be bytes or a path"):
            c.compress_audio(12345)
        with pytest.raises(TypeError, match="codes must be an AudioCodes"):
            c.decode_audio(Codes([[[1]]], "tiny-image", 8, 8, 1))
        with pytest.raises(TypeError):
            c.compress_audio(WAV, 2)  # layers is keyword-only
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "unknown_model", NotFoundError),
        (413, "limit_exceeded", PayloadTooLargeError),
        (415, "unsupported_media", UnsupportedMediaError),
        (422, "wrong_modality", InvalidStreamError),
    ],
)
def test_audio_error_mapping(status: int, code: str, cls: type) -> None:
    recorder = Recorder(lambda request: error(status, code, f"message for {code}"))
    with sync_client(recorder) as c:
        for call in (
            lambda: c.compress_audio(WAV),
            lambda: c.decompress_audio(AUDIO_STREAM),
            lambda: c.decompress_audio_mel(AUDIO_STREAM),
        ):
            with pytest.raises(cls) as info:
                call()
            assert (info.value.status, info.value.code) == (status, code)


def test_unexpected_audio_responses() -> None:
    recorder = Recorder(lambda request: httpx.Response(200, content=b"<html>not a wav</html>"))
    with sync_client(recorder) as c:
        with pytest.raises(UnexpectedResponseError, match="not a WAV"):
            c.decompress_audio(AUDIO_STREAM)
        with pytest.raises(UnexpectedResponseError, match="X-Strata-Layers"):
            c.compress_audio(WAV)
    no_kbps = {k: v for k, v in AUDIO_HEADERS.items() if k != "X-Strata-Kbps"}
    recorder = Recorder(lambda request: httpx.Response(200, content=AUDIO_STREAM, headers=no_kbps))
    with sync_client(recorder) as c, pytest.raises(UnexpectedResponseError, match="X-Strata-Kbps"):
        c.compress_audio(WAV)


def test_audio_model_info(recorder: Recorder) -> None:
    with sync_client(recorder) as c:
        info = c.model("tiny-audio")
    assert (info.modality, info.sample_rate, info.kbps_per_layer) == ("audio", 22050, (1.5, 2.5, 3.0, 3.5))
    assert info.factor == AUDIO_MODEL["factor"] and info.bits_per_layer == ()


def test_async_client_audio(recorder: Recorder, no_numpy) -> None:
    async def main() -> None:
        async with AsyncClient(URL, api_key="a" * 20, transport=httpx.MockTransport(recorder)) as c:
            result = await c.compress_audio(WAV, layers=2)
            assert isinstance(result, CompressedAudio) and result.data == AUDIO_STREAM
            assert await c.decompress_audio(result, layers=3) == WAV + b"3"
            assert await c.decompress_audio_mel(result) == MEL
            codes = await c.encode_audio(WAV)
            assert isinstance(codes, AudioCodes) and codes.layers == 2
            assert await c.decode_audio(codes) == WAV + b"4"
            assert await c.decode_audio_mel(codes, layers=1) == MEL

    asyncio.run(main())
    paths = [r.url.path for r in recorder.requests]
    assert paths == [
        "/v1/audio:compress",
        "/v1/audio:decompress",
        "/v1/audio:decompress",
        "/v1/audio:encode",
        "/v1/audio:decode",
        "/v1/audio:decode",
    ]
    assert all(r.headers["x-api-key"] == "a" * 20 for r in recorder.requests)


def test_compressed_audio_saves_and_public_names(tmp_path, recorder: Recorder) -> None:
    with sync_client(recorder) as c:
        c.compress_audio(WAV).save(tmp_path / "a.strata")
    assert (tmp_path / "a.strata").read_bytes() == AUDIO_STREAM
    assert {"CompressedAudio", "AudioCodes"} <= set(client.__all__)
