"""Every shipped model (models/manifest.json), by name, through the CLI, HTTP and the SDK: the same bytes as the
library, every layer count decoding as the library decodes it (images to pixels, sounds to their log-mel), and a
truncated stream decoding as ``--layers k``.

The service runs with the full analysis and float synthesis networks here (``image_encoder="full"``,
``image_precision="float"``, ``audio_precision="float"``) so its streams, pixels and log-mels are the library's.
"""

from __future__ import annotations

import numpy as np
import pytest
from strata.bitstream import truncate
from strata.cli import main
from strata.frontend.image import read_image
from strata.image import ImageCodec
from strata.registry import Registry

from tests.conftest import ROOT, png_bytes, running_server, server_settings, synthetic_image, synthetic_sound

SHIPPED = Registry(ROOT / "models")
IMAGES = SHIPPED.names("image")
SOUNDS = SHIPPED.names("audio")
IMAGE = synthetic_image(48, 72, seed=21)
SOUND = synthetic_sound(1.3, seed=21)


@pytest.mark.parametrize("name", IMAGES)
def test_cli_image_round_trip_by_name(shipped_registry, name, tmp_path):
    codec = ImageCodec.load(shipped_registry, name)
    (tmp_path / "in.png").write_bytes(png_bytes(IMAGE))
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "a.strata"), "--model", name]) == 0
    full = (tmp_path / "a.strata").read_bytes()
    assert full == codec.compress(IMAGE)
    for k in range(1, codec.layers + 1):
        assert main(["decompress", str(tmp_path / "a.strata"), str(tmp_path / f"{k}.png"), "--layers", str(k)]) == 0
        expected = codec.decompress(full, k)
        np.testing.assert_array_equal(read_image((tmp_path / f"{k}.png").read_bytes()), expected)
        (tmp_path / "t.strata").write_bytes(truncate(full, k))
        assert main(["decompress", str(tmp_path / "t.strata"), str(tmp_path / "t.png")]) == 0
        np.testing.assert_array_equal(read_image((tmp_path / "t.png").read_bytes()), expected)


@pytest.mark.parametrize("name", SOUNDS)
def test_cli_audio_round_trip_by_name(shipped_registry, name, tmp_path):
    pytest.importorskip("soundfile")
    from strata.audio import AudioCodec
    from strata.frontend.audio import read_audio

    codec = AudioCodec.load(shipped_registry, name)
    wav = _wav(SOUND)
    (tmp_path / "in.wav").write_bytes(wav)
    assert main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "a.strata"), "--model", name]) == 0
    full = (tmp_path / "a.strata").read_bytes()
    assert full == codec.compress(read_audio(wav, 60.0, rate=22050).samples)
    for k in range(1, codec.layers + 1):
        assert main(["decompress", str(tmp_path / "a.strata"), str(tmp_path / f"{k}.npy"), "--layers", str(k)]) == 0
        expected = codec.decompress_mel(full, k)
        np.testing.assert_array_equal(np.load(tmp_path / f"{k}.npy"), expected)
        (tmp_path / "t.strata").write_bytes(truncate(full, k))
        assert main(["decompress", str(tmp_path / "t.strata"), str(tmp_path / "t.npy")]) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), expected)


def test_http_and_sdk_serve_every_shipped_model(shipped_registry):
    pytest.importorskip("fastapi")
    pytest.importorskip("soundfile")
    from strata.audio import AudioCodec
    from strata.client import Client
    from strata.frontend.audio import read_audio
    from strata.server.main import create_app

    app = create_app(server_settings(shipped_registry, image_precision="float", image_encoder="full",
                                     audio_precision="float"))
    with running_server(app) as url, Client(url, timeout=120) as client:
        listed = {m.name: m for m in client.models()}
        assert set(listed) == set(IMAGES) | set(SOUNDS)
        for name in IMAGES:
            codec = ImageCodec.load(shipped_registry, name)
            assert listed[name].quantizer == codec.entry.quantizer and listed[name].layers == codec.layers
            compressed = client.compress(IMAGE, model=name)
            assert compressed.data == codec.compress(IMAGE), name
            for k in range(1, codec.layers + 1):
                decoded = client.decompress(truncate(compressed.data, k), format="npy").to_array()
                np.testing.assert_array_equal(decoded, codec.decompress(compressed.data, k), err_msg=f"{name} k={k}")
            codes = client.encode(IMAGE, model=name)
            np.testing.assert_array_equal(codes.array, codec.encode(IMAGE).codes)
        for name in SOUNDS:
            codec = AudioCodec.load(shipped_registry, name)
            assert listed[name].quantizer == codec.entry.quantizer
            assert listed[name].vocoders == tuple(v.value for v in codec.vocoders)
            wav = _wav(SOUND)
            stream = client.compress_audio(wav, model=name).data
            assert stream == codec.compress(read_audio(wav, 60.0, rate=22050).samples), name
            for k in range(1, codec.layers + 1):
                mel = client.decompress_audio_mel(truncate(stream, k))
                np.testing.assert_allclose(np.asarray(mel), codec.decompress_mel(stream, k), atol=1e-6,
                                           err_msg=f"{name} k={k}")


def _wav(samples: np.ndarray) -> bytes:
    from strata.frontend.audio import pcm16, wav_header

    return wav_header(samples.size, 22050) + pcm16(samples)
