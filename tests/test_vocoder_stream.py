"""Streaming decode: DC removal and refinement in pieces equal the whole-signal functions bit for bit, the
vocoder's and the codec's streams equal their one-shot results, and the service's chunked WAV equals the
one-shot WAV byte for byte with its work budget released at the end."""

import dataclasses

import httpx
import numpy as np
import pytest
from strata.chunking import apply_chunked
from strata.errors import InputError
from strata.frontend.audio import DEFAULT_MEL, log_mel, pcm16, wav_header, write_wav
from strata.vocoder.dc import remove_dc
from strata.vocoder.refine import frames_for, refine
from strata.vocoder.stream import DcStream, RefineStream

from tests.conftest import synthetic_sound


def pieces_of(x: np.ndarray, rng: np.random.Generator, most: int) -> list[np.ndarray]:
    """``x`` cut at random places (empty pieces and single samples included)."""
    cuts = np.sort(rng.integers(0, x.size + 1, size=rng.integers(1, most)))
    return np.split(x, cuts)


def run(stage, pieces: list[np.ndarray]) -> np.ndarray:
    out = [stage.push(p) for p in pieces]
    return np.concatenate([*out, stage.finish()])


@pytest.mark.parametrize("n", [1, 255, 256, 1000, 5 * 256 + 17, 40_000])
def test_dc_stream_equals_remove_dc(n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 0.1 + np.linspace(-0.3, 0.2, n)).astype(np.float32)
    expected = remove_dc(x.copy())
    for _ in range(3):
        np.testing.assert_array_equal(run(DcStream(n), pieces_of(x, rng, 40)), expected)


def test_dc_stream_holds_back_only_its_lookahead():
    stage = DcStream(256 * 100)
    out = stage.push(np.zeros(256 * 50, np.float32))
    assert out.size == 256 * (50 - stage.lookahead)  # five frames wait for the means after them
    with pytest.raises(InputError, match="announced"):
        stage.finish()
    with pytest.raises(InputError, match="more than"):
        stage.push(np.zeros(256 * 51, np.float32))


@pytest.mark.parametrize("iterations", [1, 3])
def test_refine_stream_equals_refine(iterations):
    rng = np.random.default_rng(iterations)
    n = 256 * 700 + 100
    x = (rng.standard_normal(n) * 0.05).astype(np.float32)
    target = log_mel(synthetic_sound(n / DEFAULT_MEL.sample_rate, seed=3)[:n])
    assert target.shape[1] == frames_for(n)
    expected = refine(x, target, iterations, block_frames=64)
    for _ in range(2):
        stage = RefineStream(target, n, iterations, block_frames=64)
        np.testing.assert_array_equal(run(stage, pieces_of(x, rng, 30)), expected)


def test_refine_stream_checks():
    target = np.zeros((80, frames_for(1000)), np.float32)
    with pytest.raises(InputError, match="log-mel"):
        RefineStream(target[:, :-1], 1000, 2)
    with pytest.raises(InputError, match="more than"):
        RefineStream(target, 100, 2)
    stage = RefineStream(target, 1000, 2)
    with pytest.raises(InputError, match="announced"):
        stage.finish()


def test_vocoder_stream_equals_the_whole_signal_pipeline(tiny_audio_codec):
    """Windows, DC removal, refinement and clipping in pieces give what the whole-signal steps give."""
    voc = dataclasses.replace(tiny_audio_codec.vocoder, chunk_frames=48)  # several windows
    mel = log_mel(synthetic_sound(8.0, seed=4))
    for iterations in (0, 2):
        pieces = list(voc.stream(mel, iterations))
        assert len(pieces) >= (2 if iterations else 8)  # refinement gives whole 512-frame blocks
        whole = apply_chunked(lambda w: voc.net(w[None])[0, 0], mel.astype(np.float32), chunk=48,
                              context=voc.receptive_field, scale=voc.hop).astype(np.float32)
        remove_dc(whole, voc.hop)
        if iterations:
            whole = refine(whole, mel, iterations, in_place=True)
        np.clip(whole, -1.0, 1.0, out=whole)
        np.testing.assert_array_equal(np.concatenate(pieces), whole)
        np.testing.assert_array_equal(voc(mel, iterations), whole)


def test_codec_iter_decode_pieces_are_decode(tiny_audio_codec):
    codec = tiny_audio_codec
    codec_small = dataclasses.replace(codec.vocoder, chunk_frames=32)
    sound = synthetic_sound(8.0, seed=6)
    codes = codec.encode(sound)
    original = codec.vocoder
    codec.vocoder = codec_small
    try:
        pieces = list(codec.iter_decode(codes, 3))
        assert len(pieces) >= 2 and sum(p.size for p in pieces) == sound.size
        np.testing.assert_array_equal(np.concatenate(pieces), codec.decode(codes, 3))
    finally:
        codec.vocoder = original
    griffin = list(codec.iter_decode(codes, vocoder="griffinlim"))
    assert len(griffin) == 1 and griffin[0].size == sound.size
    with pytest.raises(InputError, match="refine"):
        codec.iter_decode(codes, vocoder="griffinlim", refine=2)


def test_first_samples_come_before_the_synthesis_network_has_decoded_the_whole_mel(tiny_audio_codec, monkeypatch):
    """g_s runs window by window as the vocoder reads the mel (a PendingArray): the first samples of a long sound
    need only its first windows, and the samples equal the one-shot decode's."""
    import strata.audio

    codec = tiny_audio_codec
    sound = synthetic_sound(12.0, seed=9)
    codes = codec.encode(sound)
    monkeypatch.setattr(strata.audio, "CHUNK_FRAMES", 64)  # g_s windows of 64 frames: ~16 of them
    calls = []
    synthesis = codec.synthesis
    monkeypatch.setattr(codec, "synthesis", lambda x: calls.append(x.shape[-1]) or synthesis(x))
    voc = dataclasses.replace(codec.vocoder, chunk_frames=32)
    monkeypatch.setattr(codec, "vocoder", voc)
    mel = codec.decode_mel(codes, 3)  # the whole mel first, then the vocoder on an array: the unchained path
    assert isinstance(mel, np.ndarray) and len(calls) == -(-mel.shape[1] // 64)
    expected = voc(mel, 2)[: sound.size]
    calls.clear()
    windows = -(-mel.shape[1] // 64)
    pieces = codec.iter_decode(codes, 3, refine=0)  # refinement works on 512-frame blocks: it would wait for 8
    first = next(pieces)
    assert first.size and len(calls) <= 2, (len(calls), windows)
    rest = list(pieces)
    assert len(calls) == windows
    np.testing.assert_array_equal(np.concatenate([first, *rest]), voc(mel, 0)[: sound.size])
    calls.clear()
    pieces = list(codec.iter_decode(codes, 3, refine=2))
    np.testing.assert_array_equal(np.concatenate(pieces), expected)


def test_pending_array_reads_its_source_on_demand():
    from strata.chunking import PendingArray

    pulled = []

    def source():
        for i in range(5):
            pulled.append(i)
            yield np.full((2, 3), i, dtype=np.float32)

    a = PendingArray((2, 15), np.float32, source())
    assert a[..., 0:2].tolist() == [[0, 0], [0, 0]] and pulled == [0]
    assert a[:, 2:7].tolist() == [[0, 1, 1, 1, 2]] * 2 and pulled == [0, 1, 2]
    assert a[:, 0:1].tolist() == [[0], [0]] and pulled == [0, 1, 2]  # stored: earlier positions stay readable
    np.testing.assert_array_equal(np.asarray(a), np.repeat(np.arange(5, dtype=np.float32), 3)[None].repeat(2, 0))
    with pytest.raises(TypeError, match="slices of its last axis"):
        a[0]
    short = PendingArray((2, 7), np.float32, iter([np.zeros((2, 3), np.float32)]))
    with pytest.raises(RuntimeError, match="ended after 3 of 7"):
        np.asarray(short)
    wrong = PendingArray((2, 7), np.float32, iter([np.zeros((3, 3), np.float32)]))
    with pytest.raises(RuntimeError, match="does not continue"):
        wrong[:, 0:1]

    def refuse(piece: np.ndarray) -> None:
        raise ValueError("checked")

    with pytest.raises(ValueError, match="checked"):
        PendingArray((2, 3), np.float32, iter([np.zeros((2, 3), np.float32)]), check=refuse)[:, 0:1]


def test_wav_in_pieces_is_write_wav():
    x = (np.random.default_rng(0).uniform(-1.3, 1.3, 5001)).astype(np.float32)
    assert wav_header(x.size, 22050) + pcm16(x[:1234]) + pcm16(x[1234:]) == write_wav(x, 22050)


def test_service_streams_the_same_wav_and_releases_its_budget(tiny_av_registry, tiny_audio_codec):
    pytest.importorskip("fastapi")
    from strata.server.main import create_app

    from tests.conftest import running_server, server_settings

    app = create_app(server_settings(tiny_av_registry))
    sound = synthetic_sound(3.0, seed=8)
    stream = tiny_audio_codec.compress(sound)
    with running_server(app) as base:
        url = f"{base}/v1/audio:decompress"
        one_shot = httpx.post(url, params={"layers": 3, "refine": 2}, content=stream, timeout=60)
        with httpx.stream("POST", url, params={"layers": 3, "refine": 2, "stream": "true"}, content=stream,
                          timeout=60) as response:
            assert response.status_code == 200
            assert response.headers.get("transfer-encoding") == "chunked"
            assert "content-length" not in response.headers
            assert response.headers["x-strata-refine"] == one_shot.headers["x-strata-refine"] == "2"
            assert response.headers["x-strata-samples"] == str(sound.size)
            chunks = list(response.iter_raw())
        assert len(chunks) >= 2 and b"".join(chunks) == one_shot.content
        assert app.state.pool.admitted_work == 0.0 and app.state.pool.waiting == 0
        bad = httpx.post(url, params={"stream": "true", "output": "mel"}, content=stream, timeout=60)
        assert bad.status_code == 422 and "output=wav" in bad.text
        broken = httpx.post(url, params={"stream": "true", "layers": 9}, content=stream, timeout=60)
        assert broken.status_code == 422  # checked before the answer starts: a status, not a cut-off body
        assert app.state.pool.admitted_work == 0.0


def test_sdk_iterates_over_the_streamed_wav(live_av_server, tiny_audio_codec):
    import anyio
    from strata.client import AsyncClient, Client, InvalidStreamError

    stream = tiny_audio_codec.compress(synthetic_sound(2.0, seed=12))
    with Client(live_av_server, timeout=60) as client:
        whole = client.decompress_audio(stream, layers=2, refine=1)
        chunks = list(client.iter_decompress_audio(stream, layers=2, refine=1, chunk_size=4096))
        assert len(chunks) > 1 and b"".join(chunks) == whole
        with pytest.raises(InvalidStreamError):
            next(client.iter_decompress_audio(b"STRA not a stream"))

    async def main() -> bytes:
        async with AsyncClient(live_av_server, timeout=60) as client:
            return b"".join([c async for c in client.aiter_decompress_audio(stream, layers=2, refine=1)])

    assert anyio.run(main) == whole
