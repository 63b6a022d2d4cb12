"""The int8 synthesis network (``strata export int8``): registered beside the float one with the weights hash
and the streams unchanged, close to the float decoder, chosen by ``precision=`` and by the service setting."""

import json
import shutil

import numpy as np
import onnx
import pytest
from strata.errors import InputError
from strata.image import ImageCodec
from strata.registry import Registry

from tests.conftest import png_bytes, synthetic_image

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def int8_registry(tiny_registry, tmp_path_factory):
    from strata.export.int8 import export_int8_synthesis

    root = tmp_path_factory.mktemp("int8")
    shutil.copytree(tiny_registry.root, root / "models")
    calibration = root / "train"
    calibration.mkdir()
    for s in range(6):
        (calibration / f"{s}.png").write_bytes(png_bytes(synthetic_image(64, 80, seed=20 + s)))
    export_int8_synthesis(root / "models", "tiny-image", calibration, crops=6)
    return Registry(root / "models")


def test_registered_beside_the_float_network(int8_registry, tiny_registry):
    entry, before = int8_registry.entry("tiny-image"), tiny_registry.entry("tiny-image")
    assert entry.weights_sha256 == before.weights_sha256  # the codes do not depend on g_s
    assert entry.files["synthesis_int8"].path == "tiny-image/synthesis.int8.onnx"
    assert int8_registry.path(entry, "synthesis_int8").is_file()  # sha256-verified
    assert ImageCodec.precisions(entry) == ("float", "int8") and ImageCodec.precisions(before) == ("float",)
    kept = entry.extra["synthesis_int8"]["float_nodes"]
    assert kept and any(name.startswith("/skip/") for name in kept)
    graph = onnx.load(str(int8_registry.path(entry, "synthesis_int8"))).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # it is quantized …
    assert {n.name for n in graph.node if n.op_type == "Conv"} >= set(kept)  # … but not those convolutions


def test_int8_decodes_the_same_streams_closely(int8_registry, tiny_codec):
    image = synthetic_image(48, 64, seed=3)
    stream = tiny_codec.compress(image)
    codec8 = ImageCodec.load(int8_registry, "tiny-image", precision="int8")
    assert codec8.compress(image) == stream  # same encoder
    for k in range(1, tiny_codec.layers + 1):
        a = tiny_codec.decompress(stream, k).astype(int)
        b = codec8.decompress(stream, k).astype(int)
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 3.0  # within a few levels on average


def test_precision_errors(int8_registry, tiny_registry):
    with pytest.raises(InputError, match="no int8 synthesis"):
        ImageCodec.load(tiny_registry, "tiny-image", precision="int8")
    with pytest.raises(InputError, match="precision"):
        ImageCodec.load(int8_registry, "tiny-image", precision="fp16")


def test_float_convolutions_are_the_first_last_and_skip():
    from strata.export.int8 import float_convolutions

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w"], ["a"], name=n) for n in
         ("/skip/skip.0/Conv", "/net/net.0/Conv", "/net/net.2/Conv", "/net/net.9/Conv")], "g", [], [])
    assert float_convolutions(onnx.helper.make_model(graph)) == ["/skip/skip.0/Conv", "/net/net.0/Conv",
                                                                 "/net/net.9/Conv"]


def test_service_decodes_with_int8_where_asked(int8_registry, tiny_codec):
    pytest.importorskip("fastapi")
    from strata.client import Client
    from strata.server.main import create_app

    from tests.conftest import running_server, server_settings

    stream = tiny_codec.compress(synthetic_image(48, 64, seed=4))
    expected = ImageCodec.load(int8_registry, "tiny-image", precision="int8").decompress(stream)
    app = create_app(server_settings(int8_registry, image_precision="int8"))
    with running_server(app) as url, Client(url, timeout=60) as client:
        np.testing.assert_array_equal(client.decompress(stream, format="npy").to_array(), expected)
    doc = json.loads((int8_registry.root / "manifest.json").read_text())
    assert "synthesis_int8" in doc["models"]["tiny-image"]["files"]


def test_export_refuses_a_folder_without_calibration_images(int8_registry, tmp_path):
    from strata.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["--models", str(int8_registry.root), "export", "int8", "--name", "tiny-image",
                 "--calibration", str(tmp_path / "empty")]) == 1
    assert main(["--models", str(int8_registry.root), "export", "int8", "--name", "tiny-image",
                 "--calibration", str(tmp_path / "empty"), "--crops", "0"]) == 1


# ------------------------------------------------------------------------------------------------ audio models


@pytest.fixture(scope="module")
def int8_audio_registry(tiny_av_registry, tiny_audio_registry, tmp_path_factory):
    """The tiny image + audio models, the audio one with an int8 mel synthesis network."""
    from strata.export.int8 import export_int8_synthesis

    root = tmp_path_factory.mktemp("int8-audio")
    shutil.copytree(tiny_av_registry.root, root / "models")
    export_int8_synthesis(root / "models", "tiny-audio", tiny_audio_registry.root.parent / "data", crops=4)
    return Registry(root / "models")


def test_audio_int8_decodes_the_same_streams_closely(int8_audio_registry, tiny_audio_registry, tiny_audio_codec):
    from strata.audio import AudioCodec

    entry, before = int8_audio_registry.entry("tiny-audio"), tiny_audio_registry.entry("tiny-audio")
    assert entry.weights_sha256 == before.weights_sha256 and entry.extra["synthesis_int8"]["crops"] == 4
    assert AudioCodec.precisions(entry) == ("float", "int8") and AudioCodec.precisions(before) == ("float",)
    assert entry.extra["synthesis_int8"]["float_nodes"]  # the first and output convolutions
    sound = (0.3 * np.sin(np.linspace(0, 900, 6000))).astype(np.float32)
    stream = tiny_audio_codec.compress(sound)
    codec8 = AudioCodec.load(int8_audio_registry, "tiny-audio", precision="int8")
    assert codec8.compress(sound) == stream  # the same encoder and streams
    for k in range(1, tiny_audio_codec.layers + 1):
        a, b = tiny_audio_codec.decompress_mel(stream, k), codec8.decompress_mel(stream, k)
        assert a.shape == b.shape and not np.array_equal(a, b)
        assert np.abs(a - b).mean() < 0.05 * np.abs(a).mean()  # close to the float network's log-mel
    assert codec8.decompress(stream).shape == sound.shape
    with pytest.raises(InputError, match="no int8 synthesis"):
        AudioCodec.load(tiny_audio_registry, "tiny-audio", precision="int8")
    with pytest.raises(InputError, match="precision"):
        AudioCodec.load(int8_audio_registry, "tiny-audio", precision="bf16")


def test_service_decodes_sound_with_int8_where_asked(int8_audio_registry, tiny_audio_codec):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from strata.audio import AudioCodec
    from strata.server.main import create_app

    from tests.conftest import server_settings

    stream = tiny_audio_codec.compress((0.3 * np.sin(np.linspace(0, 900, 6000))).astype(np.float32))
    mels = {}
    for precision in ("int8", "float"):
        app = create_app(server_settings(int8_audio_registry, audio_precision=precision))
        with TestClient(app) as client:
            r = client.post("/v1/audio:decompress?output=mel", content=stream)
            assert r.status_code == 200, r.text
            mels[precision] = r.content
    codec8 = AudioCodec.load(int8_audio_registry, "tiny-audio", precision="int8")
    assert mels["int8"] != mels["float"]
    assert codec8.decompress_mel(stream).tobytes() in mels["int8"]


def test_audio_export_refuses_a_folder_without_training_sounds(int8_audio_registry, tmp_path, capsys):
    from strata.cli import main

    from tests.conftest import flac_bytes

    (tmp_path / "empty").mkdir()
    argv = ["--models", str(int8_audio_registry.root), "export", "int8", "--name", "tiny-audio", "--calibration"]
    assert main([*argv, str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "no audio folder" in err and "speech/train" in err
    for s in ("speech", "environment"):  # only clips too short to calibrate on
        (tmp_path / "short" / s / "train").mkdir(parents=True)
        for i in range(3):
            (tmp_path / "short" / s / "train" / f"{i}.flac").write_bytes(flac_bytes(np.zeros(1000, np.float32)))
    assert main([*argv, str(tmp_path / "short")]) == 1
    assert "no calibration clip" in capsys.readouterr().err


def test_cli_decodes_sound_with_int8_where_asked(int8_audio_registry, tmp_path):
    from strata.audio import AudioCodec
    from strata.cli import main

    codec8 = AudioCodec.load(int8_audio_registry, "tiny-audio", precision="int8")
    stream = codec8.compress((0.3 * np.sin(np.linspace(0, 900, 6000))).astype(np.float32))
    (tmp_path / "a.strata").write_bytes(stream)
    models = ["--models", str(int8_audio_registry.root)]
    out = str(tmp_path / "m.npy")
    assert main([*models, "decompress", str(tmp_path / "a.strata"), out, "--precision", "int8"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), codec8.decompress_mel(stream))
    assert main([*models, "decompress", str(tmp_path / "a.strata"), str(tmp_path / "f.npy")]) == 0
    assert not np.array_equal(np.load(tmp_path / "f.npy"), np.load(tmp_path / "m.npy"))  # float by default
