"""The Vocos vocoder: inverse STFT (torch and streamed numpy), network, training, export parity, serving."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from strata.errors import InputError, ModelIntegrityError
from strata.frontend.audio import hann_window
from strata.train.nets.vocos_model import (
    MultiResolutionDiscriminator,
    VocosConfig,
    VocosGenerator,
    inverse_stft,
    receptive_field,
)
from strata.vocoder.istft import IstftStream, istft

from tests.conftest import server_settings

TINY = VocosConfig(dim=16, intermediate=32, blocks=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stft(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """The frontend's framing: reflect padding of (n_fft − hop)/2, center=False, periodic Hann."""
    pad = (n_fft - hop) // 2
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad, mode="reflect"), n_fft)[::hop]
    return np.fft.rfft(frames * hann_window(n_fft, n_fft), axis=-1).T  # [bins, F]


def test_inverse_of_the_frontend_stft_is_exact():
    x = np.random.default_rng(0).standard_normal(256 * 23)
    spec = _stft(x)
    assert spec.shape == (513, 23)
    np.testing.assert_allclose(istft(spec.real, spec.imag), x, atol=1e-5)
    t = torch.from_numpy(spec)
    got = inverse_stft(t.real.float()[None], t.imag.float()[None], VocosConfig())[0].numpy()
    np.testing.assert_allclose(got, x, atol=1e-5)


def test_streamed_inverse_equals_the_whole_inverse():
    rng = np.random.default_rng(1)
    re, im = rng.standard_normal((2, 513, 40))
    whole = istft(re, im)
    stream, pieces, i = IstftStream(40), [], 0
    for k in (1, 0, 5, 3, 23, 8):
        pieces.append(stream.push(re[:, i : i + k], im[:, i : i + k]))
        i += k
    pieces.append(stream.finish())
    assert np.array_equal(np.concatenate(pieces), whole) and whole.shape == (40 * 256,)
    assert pieces[0].size == 0 and pieces[2].size == 6 * 256 - 384  # final once the next frame's start is known
    torch_out = inverse_stft(torch.from_numpy(re).float()[None], torch.from_numpy(im).float()[None], VocosConfig())
    np.testing.assert_allclose(torch_out[0].numpy(), whole, atol=1e-5)
    assert istft(re[:, :1], im[:, :1]).shape == (256,)


@pytest.mark.parametrize(("n_fft", "hop"), [(1024, 256), (1000, 300), (512, 128)])
def test_inverse_is_exact_and_split_invariant_for_other_sizes(n_fft, hop):
    """Hops that do not divide n_fft take the frame-by-frame overlap-add; both orders add frames in sequence."""
    x = np.random.default_rng(2).standard_normal(hop * 17)
    spec = _stft(x, n_fft, hop)
    whole = istft(spec.real, spec.imag, n_fft, hop)
    np.testing.assert_allclose(whole, x, atol=1e-5)
    stream = IstftStream(17, n_fft, hop)
    pieces = [stream.push(spec.real[:, a:b], spec.imag[:, a:b]) for a, b in ((0, 2), (2, 3), (3, 11), (11, 17))]
    assert np.array_equal(np.concatenate([*pieces, stream.finish()]), whole)


def test_istft_stream_refuses_bad_input():
    s = IstftStream(3)
    with pytest.raises(InputError, match="real and imag"):
        s.push(np.zeros((512, 1)), np.zeros((512, 1)))
    with pytest.raises(InputError, match="4 frames pushed, 3 were announced"):
        s.push(np.zeros((513, 4)), np.zeros((513, 4)))
    with pytest.raises(InputError, match="0 of 3 frames"):
        s.finish()
    with pytest.raises(InputError, match="n_fft"):
        IstftStream(3, n_fft=1001, hop=255)
    with pytest.raises(InputError, match="frames"):
        IstftStream(0)


def test_generator_shapes_and_receptive_field():
    gen = VocosGenerator(TINY).eval()
    mel = torch.randn(2, 80, 30) - 5
    with torch.no_grad():
        assert gen(mel).shape == (2, 1, 30 * 256)
        real, _ = gen.spectrum(mel)
        bumped = mel.clone()
        bumped[:, :, 15] += 3
        real2, _ = gen.spectrum(bumped)
    changed = (real2 - real).abs().amax(dim=(0, 1)) > 0
    rf = receptive_field(TINY)
    assert rf == 9 and changed[15 - rf] and changed[15 + rf]
    assert not changed[: 15 - rf].any() and not changed[15 + rf + 1 :].any()


def test_config_is_checked_and_round_trips():
    assert VocosConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    assert TINY.to_dict()["arch"] == "vocos"
    for bad in ({"kernel": 4}, {"n_fft": 1001}, {"hop": 2048}, {"dim": 0}, {"hop": 255}):
        with pytest.raises(InputError):
            VocosConfig(**bad)


def test_multi_resolution_discriminator():
    d = MultiResolutionDiscriminator(channels=4)
    out = d(torch.randn(2, 1, 8192))
    assert len(out.scores) == 3 and all(s.shape[0] == 2 for s in out.scores)
    assert all(len(f) == 6 for f in out.features)
    with pytest.raises(InputError, match="audio must be"):
        d(torch.randn(2, 8192))


# ----------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def vocos_export(tmp_path_factory) -> Path:
    """A tiny Vocos trained for two steps on synthetic tones (both phases), exported."""
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("onnxruntime")
    from strata.export.vocoder import export_vocoder
    from strata.train.vocoder import VocoderTrainConfig, train

    root = tmp_path_factory.mktemp("vocos-data")
    (root / "speech" / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        t = np.arange(int(0.6 * 22050)) / 22050
        x = 0.3 * np.sin(2 * np.pi * (150 + 30 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / "speech" / "train" / f"clip{i}.flac", x.astype(np.float32), 22050)
    cfg = VocoderTrainConfig(data=str(root), arch="vocos", vocos=TINY, disc="mrd", mrd_channels=4,
                             mpd_channels=(4, 8, 8), segment=4096, batch=2, steps=2, recon_steps=1, eval_every=1,
                             adv_eval_every=1, log_every=1, pesq_clips=0, threads=1)
    run = tmp_path_factory.mktemp("vocos-run")
    train(cfg, run)
    last = torch.load(run / "last.pt", weights_only=False)
    assert last["step"] == 2 and {"mpd", "mrd", "opt_d"} <= last.keys() and "msd" not in last
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log if r["kind"] == "train"] == ["reconstruction", "adversarial"]
    out = export_vocoder(run / "best.pt", tmp_path_factory.mktemp("vocos-export"))
    assert out.arch == "vocos" and out.max_abs_diff < 1e-3
    return out.onnx.parent


def test_exported_vocos_matches_the_torch_network(vocos_export):
    from strata.runtime import CPU
    from strata.train.vocoder import load_generator
    from strata.vocoder.loader import load_vocoder
    from strata.vocoder.vocos import VocosVocoder

    voc = load_vocoder(vocos_export / "vocoder.onnx", [CPU], threads=1)
    assert isinstance(voc, VocosVocoder) and voc.refine == 8 and voc.n_fft == 1024
    assert voc.receptive_field == receptive_field(TINY)
    gen = load_generator(vocos_export / "vocoder.pt")
    mel = (torch.randn(80, 70, generator=torch.Generator().manual_seed(3)) - 5).numpy()
    with torch.no_grad():
        ref = gen(torch.from_numpy(mel)[None])[0, 0].numpy()
    raw = VocosVocoder(voc.net, voc.receptive_field, chunk_frames=1000, remove_dc=False, refine=0)
    np.testing.assert_allclose(raw(mel), np.clip(ref, -1, 1), atol=1e-4)
    # Windows of 16 frames with the receptive field as context give the same samples as one call.
    chunked = VocosVocoder(voc.net, voc.receptive_field, chunk_frames=16, remove_dc=False, refine=0)
    np.testing.assert_allclose(chunked(mel), raw(mel), atol=1e-5)
    # The stream is the one-shot call in pieces, DC removal and refinement included.
    for v in (voc, VocosVocoder(voc.net, voc.receptive_field, chunk_frames=16, refine=2)):
        np.testing.assert_array_equal(np.concatenate(list(v.stream(mel))), v(mel))
    with pytest.raises(InputError, match="log-mel must be"):
        voc(mel[:40])


def test_vocos_loader_refuses_a_hifigan_export(tiny_audio_registry):
    from strata.runtime import CPU
    from strata.vocoder.vocos import VocosVocoder

    entry = tiny_audio_registry.entry("tiny-audio")
    with pytest.raises(ModelIntegrityError, match="not a Vocos export"):
        VocosVocoder.load(tiny_audio_registry.path(entry, "vocoder"), [CPU])


# ------------------------------------------------------------------------------------------------ serving


@pytest.fixture()
def vocos_models(tiny_av_registry, tiny_audio_registry, vocos_export, tmp_path) -> Path:
    """A copy of the tiny image + audio models folder with the tiny Vocos installed beside the HiFi-GAN."""
    from strata.export.audio import replace_vocoder

    models = tmp_path / "models"
    shutil.copytree(tiny_av_registry.root, models)
    entry = replace_vocoder(models, "tiny-audio", vocos_export, checkpoints_dir=tmp_path / "ckpt")
    assert entry.files["vocos"].path == "tiny-audio/vocos.onnx" and "vocoder" in entry.files
    assert (tmp_path / "ckpt" / "tiny-audio" / "vocos.pt").is_file()
    assert entry.weights_sha256 == tiny_audio_registry.entry("tiny-audio").weights_sha256
    return models


def test_codec_decodes_with_either_network(vocos_models, tiny_audio_codec):
    from strata.audio import AudioCodec, Vocoder
    from strata.registry import Registry

    codec = AudioCodec.load(Registry(vocos_models), "tiny-audio")
    assert codec.vocoders == (Vocoder.HIFIGAN, Vocoder.VOCOS, Vocoder.GRIFFINLIM)
    assert codec.default_vocoder is Vocoder.HIFIGAN
    sound = np.sin(np.linspace(0, 900, 5000)).astype(np.float32) * 0.3
    data = tiny_audio_codec.compress(sound)  # streams of the model decode unchanged: same weights hash
    hifi = codec.decompress(data)
    np.testing.assert_array_equal(hifi, tiny_audio_codec.decompress(data))
    vocos = codec.decompress(data, vocoder="vocos")
    assert vocos.shape == sound.shape and not np.array_equal(vocos, hifi)
    mel = codec.decompress_mel(data)
    np.testing.assert_array_equal(vocos, codec.vocos(mel)[: sound.size])
    refined = codec.decompress(data, vocoder="vocos", refine=2)
    np.testing.assert_array_equal(refined, codec.vocos(mel, refine=2)[: sound.size])
    np.testing.assert_array_equal(np.concatenate(list(codec.iter_decode(codec.decompress_codes(data), None,
                                                                        "vocos"))), vocos)


def test_default_vocoder_follows_the_manifest(vocos_models, vocos_export, tmp_path):
    from strata.audio import AudioCodec, Vocoder
    from strata.export.audio import replace_vocoder
    from strata.registry import Registry

    entry = replace_vocoder(vocos_models, "tiny-audio", vocos_export, make_default=True)
    assert entry.extra["vocoder"] == "vocos"
    codec = AudioCodec.load(Registry(vocos_models), "tiny-audio")
    assert codec.default_vocoder is Vocoder.VOCOS
    data = codec.compress(np.sin(np.linspace(0, 900, 5000)).astype(np.float32) * 0.3)
    np.testing.assert_array_equal(codec.decompress(data), codec.decompress(data, vocoder="vocos"))
    # A manifest naming a default it cannot serve is refused when the model loads.
    manifest = json.loads((vocos_models / "manifest.json").read_text())
    del manifest["models"]["tiny-audio"]["files"]["vocos"]
    (vocos_models / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="names vocos its default vocoder but has no vocos file"):
        AudioCodec.load(Registry(vocos_models), "tiny-audio")


def test_set_default_vocoder_changes_only_the_default(vocos_models, tiny_av_registry, capsys):
    from strata.audio import AudioCodec, Vocoder
    from strata.cli.main import main
    from strata.export.audio import set_default_vocoder
    from strata.registry import Registry

    before = Registry(vocos_models).entry("tiny-audio")
    entry = set_default_vocoder(vocos_models, "tiny-audio", "vocos")
    assert entry.extra["vocoder"] == "vocos"
    assert (entry.files, entry.weights_sha256) == (before.files, before.weights_sha256)
    codec = AudioCodec.load(Registry(vocos_models), "tiny-audio")
    assert codec.default_vocoder is Vocoder.VOCOS and codec.vocos.refine == 8  # refined like HiFi-GAN by default
    data = codec.compress(np.sin(np.linspace(0, 900, 5000)).astype(np.float32) * 0.3)
    np.testing.assert_array_equal(codec.decompress(data), codec.decompress(data, vocoder="vocos", refine=8))
    assert main(["--models", str(vocos_models), "export", "audio", "--name", "tiny-audio",
                 "--set-default-vocoder", "hifigan"]) == 0
    assert "now decodes with hifigan" in capsys.readouterr().out
    assert AudioCodec.load(Registry(vocos_models), "tiny-audio").default_vocoder is Vocoder.HIFIGAN
    # Refused: a network the model lacks, an image model, other export flags beside it.
    with pytest.raises(ValueError, match="has no vocos network"):
        set_default_vocoder(tiny_av_registry.root, "tiny-audio", "vocos")
    with pytest.raises(ValueError, match="unknown vocoder 'wavenet'"):
        set_default_vocoder(vocos_models, "tiny-audio", "wavenet")
    image = next(n for n in Registry(vocos_models).names() if Registry(vocos_models).entry(n).modality == "image")
    with pytest.raises(ValueError, match="only audio models have a vocoder"):
        set_default_vocoder(vocos_models, image, "vocos")
    assert main(["--models", str(vocos_models), "export", "audio", "--name", "tiny-audio",
                 "--set-default-vocoder", "vocos", "--layers", "2"]) != 0
    assert "drop --layers" in capsys.readouterr().err


def test_default_iterations_come_from_the_manifest(vocos_models, vocos_export, capsys):
    from strata.audio import AudioCodec, Vocoder, default_iterations
    from strata.cli.main import main
    from strata.errors import ModelIntegrityError
    from strata.export.audio import set_default_vocoder
    from strata.registry import Registry

    assert main(["--models", str(vocos_models), "export", "audio", "--name", "tiny-audio",
                 "--set-default-vocoder", "vocos", "--default-refine", "3"]) == 0
    assert "vocos and 3 refinement iterations" in capsys.readouterr().out
    entry = Registry(vocos_models).entry("tiny-audio")
    assert entry.extra["refine"] == {"vocos": 3}
    codec = AudioCodec.load(Registry(vocos_models), "tiny-audio")
    assert (codec.vocos.refine, codec.vocoder.refine) == (3, 8)  # HiFi-GAN keeps the library's 8
    assert AudioCodec.load(Registry(vocos_models), "tiny-audio", vocos_refine=1).vocos.refine == 1  # the caller's
    sound = np.sin(np.linspace(0, 900, 5000)).astype(np.float32) * 0.3
    data = codec.compress(sound)
    np.testing.assert_array_equal(codec.decompress(data), codec.decompress(data, vocoder="vocos", refine=3))
    set_default_vocoder(vocos_models, "tiny-audio", "hifigan", refine=5)  # a second network's count is added
    assert Registry(vocos_models).entry("tiny-audio").extra["refine"] == {"vocos": 3, "hifigan": 5}
    for bad in (-1, 33, True):
        with pytest.raises(ValueError, match="0..32"):
            set_default_vocoder(vocos_models, "tiny-audio", "vocos", refine=bad)
    with pytest.raises(ValueError, match="Griffin-Lim takes no"):
        set_default_vocoder(vocos_models, "tiny-audio", "griffinlim", refine=2)
    assert main(["--models", str(vocos_models), "export", "audio", "--name", "tiny-audio",
                 "--default-refine", "2"]) != 0
    assert "goes with --set-default-vocoder" in capsys.readouterr().err
    broken = dataclasses.replace(entry, extra={**entry.extra, "refine": {"vocos": "many"}})
    with pytest.raises(ModelIntegrityError, match="extra.refine.vocos"):
        default_iterations(broken, Vocoder.VOCOS)
    with pytest.raises(ModelIntegrityError, match="extra.refine must map"):
        default_iterations(dataclasses.replace(entry, extra={"refine": [3]}), Vocoder.VOCOS)
    with pytest.raises(ModelIntegrityError, match="names 'Vocos', not one of its network vocoders"):
        default_iterations(dataclasses.replace(entry, extra={"refine": {"Vocos": 3}}), Vocoder.HIFIGAN)
    # A replaced network loses the count chosen for the old one; the other network keeps its own.
    from strata.export.audio import replace_vocoder

    assert "vocos" not in replace_vocoder(vocos_models, "tiny-audio", vocos_export).extra["refine"]
    assert Registry(vocos_models).entry("tiny-audio").extra["refine"] == {"hifigan": 5}


def test_export_audio_refuses_a_vocos_as_the_main_vocoder(vocos_export, tmp_path):
    from strata.export.audio import export_audio_model

    with pytest.raises(ValueError, match="is a Vocos network"):
        export_audio_model(tmp_path / "missing.pt", vocos_export, "x", tmp_path, tmp_path / "models")


def test_http_names_and_uses_the_vocoder(vocos_models):
    from fastapi.testclient import TestClient
    from strata.registry import Registry
    from strata.server.main import create_app

    app = create_app(server_settings(Registry(vocos_models)))
    with TestClient(app) as client:
        info = client.get("/v1/models/tiny-audio").json()
        assert info["vocoders"] == ["hifigan", "vocos", "griffinlim"] and info["default_vocoder"] == "hifigan"
        assert info["default_refine"] == {"hifigan": 8, "vocos": 8}
        from strata.client._base import _model_info  # the SDK reads it

        assert _model_info(info).default_refine == {"hifigan": 8, "vocos": 8}
        wav = _wav_bytes(np.sin(np.linspace(0, 900, 5000)).astype(np.float32) * 0.3)
        stream = client.post("/v1/audio:compress", content=wav).content
        default = client.post("/v1/audio:decompress", content=stream)
        assert default.status_code == 200 and default.headers["x-strata-vocoder"] == "hifigan"
        vocos = client.post("/v1/audio:decompress", params={"vocoder": "vocos", "refine": 1}, content=stream)
        assert vocos.status_code == 200 and vocos.headers["x-strata-vocoder"] == "vocos"
        assert vocos.headers["x-strata-refine"] == "1" and vocos.content != default.content
        streamed = client.post("/v1/audio:decompress", params={"vocoder": "vocos", "refine": 1, "stream": "true"},
                               content=stream)
        assert streamed.content == vocos.content
        gl = client.post("/v1/audio:decompress", params={"vocoder": "griffinlim"}, content=stream)
        assert gl.headers["x-strata-vocoder"] == "griffinlim" and "x-strata-refine" not in gl.headers
        bad = client.post("/v1/audio:decompress", params={"vocoder": "melgan"}, content=stream)
        assert bad.status_code == 422 and "vocoder" in bad.text


def test_http_refuses_vocos_for_a_model_without_one(tiny_av_registry):
    from fastapi.testclient import TestClient
    from strata.server.main import create_app

    app = create_app(server_settings(tiny_av_registry))
    with TestClient(app) as client:
        assert client.get("/v1/models/tiny-audio").json()["vocoders"] == ["hifigan", "griffinlim"]
        wav = _wav_bytes(np.sin(np.linspace(0, 900, 5000)).astype(np.float32) * 0.3)
        stream = client.post("/v1/audio:compress", content=wav).content
        r = client.post("/v1/audio:decompress", params={"vocoder": "vocos"}, content=stream)
        assert r.status_code in (400, 422) and "has no vocos vocoder" in r.text


def _wav_bytes(samples: np.ndarray) -> bytes:
    from strata.frontend.audio import pcm16, wav_header

    return wav_header(samples.size, 22050) + pcm16(samples)


def test_eval_audio_reports_both_networks(vocos_models, vocos_export, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from strata.eval.audio import CODEC, CODEC_HIFIGAN, CODEC_VOCOS, TRUE_MEL, VOCOS, VOCOS_REFINED, evaluate_audio
    from strata.export.audio import replace_vocoder
    from strata.registry import Registry

    from tests.conftest import flac_bytes, synthetic_sound

    data = tmp_path / "data"
    for split in ("speech", "environment"):
        (data / split / "test").mkdir(parents=True)
        (data / split / "test" / "a.flac").write_bytes(flac_bytes(synthetic_sound(1.0, 3)))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Opus: not what this test is about
    r = evaluate_audio(Registry(vocos_models), data, tmp_path / "out", model="tiny-audio", log=lambda _: None)
    assert r.default_vocoder == "hifigan" and r.vocos_sha256 is not None
    assert {CODEC, CODEC_VOCOS, VOCOS, VOCOS_REFINED} <= set(r.systems()) and CODEC_HIFIGAN not in r.systems()
    assert len(r.series(CODEC_VOCOS)) == len(r.series(CODEC)) and r.point(VOCOS, TRUE_MEL) is not None
    replace_vocoder(vocos_models, "tiny-audio", vocos_export, make_default=True)
    r = evaluate_audio(Registry(vocos_models), data, tmp_path / "out2", model="tiny-audio", log=lambda _: None)
    assert r.default_vocoder == "vocos" and CODEC_HIFIGAN in r.systems() and CODEC_VOCOS not in r.systems()


def test_cli_refuses_arch_flags_that_do_not_fit(tmp_path, capsys):
    from strata.cli import main
    from strata.train.vocoder import VocoderTrainConfig

    base = ["train", "vocoder", "--data", str(tmp_path), "--run", str(tmp_path / "run")]
    assert main([*base, "--arch", "vocos", "--balanced-upsampling"]) == 1
    assert "--balanced-upsampling applies to --arch hifigan" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(VocoderTrainConfig(data=str(tmp_path)).to_dict()))
    assert main([*base, "--resume", "--arch", "vocos"]) == 1
    assert "--arch vocos cannot change a run being resumed (it trains hifigan)" in capsys.readouterr().err
