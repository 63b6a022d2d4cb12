"""The audio export (``strata.export.audio``): the manifest entry, the vocoder outside the weights hash,
parity of the exported mel transforms with their torch twins, and the receptive-field probe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from strata.audio import AudioCodec  # noqa: E402
from strata.cli.main import main  # noqa: E402
from strata.entropy.prior import CodePrior  # noqa: E402
from strata.errors import ModelIntegrityError, WeightsMismatchError  # noqa: E402
from strata.export.audio import export_audio_model, load_audio_checkpoint, measure_receptive_field  # noqa: E402
from strata.registry import (  # noqa: E402
    MANIFEST,
    REQUIRED_ROLES,
    SERVING_ROLES,
    FileRef,
    Registry,
    sha256_file,
    weights_hash,
)
from strata.runtime import CPU, OnnxNet  # noqa: E402
from strata.train.audio import AudioTrainConfig  # noqa: E402

from tests.conftest import synthetic_sound  # noqa: E402

SOUND = synthetic_sound(1.2, seed=4)


@pytest.fixture
def models(tiny_audio_registry, tmp_path) -> Path:
    """A private copy of the tiny audio models folder, free to damage."""
    return Path(shutil.copytree(tiny_audio_registry.root, tmp_path / "models"))


def _edit_manifest(models: Path, edit) -> None:
    doc = json.loads((models / MANIFEST).read_text())
    edit(doc["models"]["tiny-audio"])
    (models / MANIFEST).write_text(json.dumps(doc, indent=2))


# ------------------------------------------------------------------------------------------ manifest


def test_manifest_entry(tiny_audio_registry):
    reg = tiny_audio_registry
    e = reg.entry("tiny-audio")
    assert reg.default("audio").name == "tiny-audio" and reg.names("audio") == ["tiny-audio"]
    assert (e.modality, e.factor, e.layers, e.codebook_sizes, e.latent_dim) == ("audio", 4, 4, (16,) * 4, 8)
    assert e.description == "test audio model"
    x = e.extra
    assert (x["sample_rate"], x["hop"], x["n_mels"], x["freq_factor"]) == (22050, 256, 80, 8)
    rf = x["receptive_field"]
    assert set(rf) == {"analysis", "synthesis"}
    assert all(isinstance(v, int) and v > 0 for v in rf.values()), rf
    assert len(x["contexts"]) == 4 and set(x["contexts"]) <= {"none", "above", "parent"}
    assert x["contexts"][0] != "parent"  # layer 1 has no parent layer
    prior = CodePrior.load(reg.path(e, "prior"))
    assert [layer.kind for layer in prior.layers] == x["contexts"]
    assert all(layer.kind == "none" for layer in CodePrior.load(reg.path(e, "prior_static")).layers)
    assert AudioTrainConfig.from_dict(x["config"]).rvq.codebook_size == 16
    assert x["train_step"] == 0

    assert set(REQUIRED_ROLES["audio"]) <= set(e.files)
    assert not {"checkpoint", "vocoder_checkpoint"} & set(e.files)  # training files are not served
    assert not list(reg.root.rglob("*.pt"))
    kept = reg.root.parent / "checkpoints" / "tiny-audio"
    assert (kept / "checkpoint.pt").is_file() and (kept / "vocoder.pt").is_file()
    for role, ref in e.files.items():
        assert ref.path.startswith("tiny-audio/")
        assert sha256_file(reg.root / ref.path) == ref.sha256, role
    # the weights hash covers the four serving files, not the vocoder
    assert e.weights_sha256 == weights_hash(e.files, ("analysis", "synthesis", "codebooks", "prior"))
    assert "vocoder" not in SERVING_ROLES["audio"] and "vocoder" in REQUIRED_ROLES["audio"]


def test_vocoder_is_required(models):
    _edit_manifest(models, lambda m: m["files"].pop("vocoder"))
    with pytest.raises(ModelIntegrityError, match="vocoder"):
        Registry(models)


def test_vocoder_swap_keeps_streams(tiny_audio_codec, models, tmp_path):
    """A new vocoder.onnx with its sha256 updated in the manifest: same weights hash, old streams decode."""
    from strata.export.vocoder import export_vocoder
    from strata.train.nets.hifigan_model import Generator, HiFiGANConfig

    stream = tiny_audio_codec.compress(SOUND)
    torch.manual_seed(1)
    cfg = HiFiGANConfig(upsample_initial_channel=16)
    torch.save({"generator": Generator(cfg).state_dict(), "config": cfg.to_dict(), "step": 0}, tmp_path / "g.pt")
    other = export_vocoder(tmp_path / "g.pt", tmp_path / "other-vocoder").onnx
    target = models / "tiny-audio" / "vocoder.onnx"
    assert sha256_file(other) != sha256_file(target)
    shutil.copyfile(other, target)

    with pytest.raises(ModelIntegrityError, match="vocoder.onnx"):  # the file no longer matches its pin
        AudioCodec.load(Registry(models), "tiny-audio")
    _edit_manifest(models, lambda m: m["files"]["vocoder"].update(sha256=sha256_file(target)))
    reg = Registry(models)
    assert reg.entry("tiny-audio").weights_sha256 == tiny_audio_codec.entry.weights_sha256
    swapped = AudioCodec.load(reg, "tiny-audio")
    assert swapped.compress(SOUND) == stream
    np.testing.assert_array_equal(swapped.decompress_mel(stream), tiny_audio_codec.decompress_mel(stream))
    new_wave, old_wave = swapped.decompress(stream), tiny_audio_codec.decompress(stream)
    assert new_wave.shape == old_wave.shape == SOUND.shape
    assert np.abs(new_wave - old_wave).max() > 1e-4  # the new vocoder is the one in use


def test_replace_vocoder_through_the_cli(tiny_audio_codec, models, tmp_path, capsys):
    """``strata export audio --vocoder DIR --name NAME`` (no checkpoint) swaps only the vocoder."""
    from strata.cli import main
    from strata.export.vocoder import export_vocoder
    from strata.train.nets.hifigan_model import Generator, HiFiGANConfig

    stream = tiny_audio_codec.compress(SOUND)
    before = Registry(models).entry("tiny-audio")
    torch.manual_seed(2)
    cfg = HiFiGANConfig(upsample_initial_channel=16)
    torch.save({"generator": Generator(cfg).state_dict(), "config": cfg.to_dict(), "step": 7}, tmp_path / "g.pt")
    new = export_vocoder(tmp_path / "g.pt", tmp_path / "new-vocoder")
    vocoder = str(tmp_path / "new-vocoder")
    kept = tmp_path / "checkpoints"
    argv = ["--models", str(models), "export", "audio", "--name", "tiny-audio", "--checkpoints", str(kept),
            "--vocoder", vocoder]
    assert main([*argv, "--description", "new vocoder"]) == 0
    assert "streams are unchanged" in capsys.readouterr().out

    after = Registry(models).entry("tiny-audio")
    assert after.weights_sha256 == before.weights_sha256 and after.description == "new vocoder"
    assert after.files["vocoder"].sha256 == sha256_file(new.onnx) != before.files["vocoder"].sha256
    assert sha256_file(kept / "tiny-audio" / "vocoder.pt") == sha256_file(new.checkpoint)
    assert {r: f for r, f in after.files.items() if not r.startswith("vocoder")} == \
        {r: f for r, f in before.files.items() if not r.startswith("vocoder")}
    swapped = AudioCodec.load(Registry(models), "tiny-audio")
    np.testing.assert_array_equal(swapped.decompress_mel(stream), tiny_audio_codec.decompress_mel(stream))
    assert np.abs(swapped.decompress(stream) - tiny_audio_codec.decompress(stream)).max() > 1e-4

    # A vocoder folder without vocoder.pt removes the stale kept checkpoint; the description stays.
    (tmp_path / "new-vocoder" / "vocoder.pt").unlink()
    assert main(argv) == 0
    capsys.readouterr()
    assert Registry(models).entry("tiny-audio").description == "new vocoder"
    assert not (kept / "tiny-audio" / "vocoder.pt").exists()

    # A file that is not a vocoder is refused before the model is touched.
    bad = tmp_path / "bad-vocoder"
    bad.mkdir()
    (bad / "vocoder.onnx").write_bytes(b"not an onnx model")
    pinned = Registry(models).entry("tiny-audio").files
    assert main([*argv[:-1], str(bad)]) == 1
    assert "vocoder.onnx" in capsys.readouterr().err
    assert Registry(models).entry("tiny-audio").files == pinned
    AudioCodec.load(Registry(models), "tiny-audio")  # still loads, sha256 verified

    # Clear errors: no vocoder.onnx, an unknown model, --layers without a checkpoint, no checkpoint for images.
    assert main([*argv[:-1], str(tmp_path)]) == 1
    assert "no vocoder.onnx" in capsys.readouterr().err
    assert main(["--models", str(models), "export", "audio", "--name", "nope", "--vocoder", vocoder]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main([*argv, "--layers", "2"]) == 1
    assert "--layers, --data and --no-default need --checkpoint" in capsys.readouterr().err
    assert main([*argv, "--no-default"]) == 1
    assert "need --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an image export without a checkpoint is a usage error
        main(["--models", str(models), "export", "image", "--name", "x", "--data", str(tmp_path)])
    assert "--checkpoint" in capsys.readouterr().err


def test_serving_files_are_pinned(tiny_audio_codec, models):
    """analysis.onnx's pinned sha256 changed without the file: refused, whether or not the hash follows."""
    stream = tiny_audio_codec.compress(SOUND)
    fake = "0" * 64
    _edit_manifest(models, lambda m: m["files"]["analysis"].update(sha256=fake))
    with pytest.raises(ModelIntegrityError, match="weights_sha256"):
        Registry(models)

    def rehash(m: dict) -> None:
        files = {k: FileRef(v["path"], v["sha256"]) for k, v in m["files"].items()}
        m["weights_sha256"] = weights_hash(files, SERVING_ROLES["audio"])

    _edit_manifest(models, rehash)
    reg = Registry(models)
    assert reg.entry("tiny-audio").weights_prefix != tiny_audio_codec.entry.weights_prefix
    with pytest.raises(ModelIntegrityError, match="analysis.onnx"):
        AudioCodec.load(reg, "tiny-audio")
    # a codec stamped with those weights refuses the streams of the real ones
    stamped = AudioCodec(
        reg.entry("tiny-audio"),
        tiny_audio_codec.analysis,
        tiny_audio_codec.synthesis,
        tiny_audio_codec.quantizer,
        tiny_audio_codec.prior,
        tiny_audio_codec.vocoder,
    )
    with pytest.raises(WeightsMismatchError):
        stamped.decompress(stream)


def test_export_needs_a_vocoder(tiny_audio_registry, tmp_path):
    root = tiny_audio_registry.root.parent  # conftest layout: data/, mel.pt, vocoder/, models/
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="vocoder.onnx"):
        export_audio_model(root / "mel.pt", tmp_path / "empty", "x", root / "data", tmp_path / "models")
    assert not (tmp_path / "models" / MANIFEST).exists()


def test_export_keeps_other_models(tiny_audio_registry, models):
    root = tiny_audio_registry.root.parent
    entry = export_audio_model(
        root / "mel.pt", root / "vocoder", "tiny-audio-2", root / "data", models, make_default=False
    )
    reg = Registry(models)
    assert reg.names("audio") == ["tiny-audio", "tiny-audio-2"] and reg.default("audio").name == "tiny-audio"
    assert entry.files["analysis"].path == "tiny-audio-2/analysis.onnx"
    a, b = AudioCodec.load(reg, "tiny-audio"), AudioCodec.load(reg, "tiny-audio-2")
    np.testing.assert_array_equal(a.encode(SOUND).codes, b.encode(SOUND).codes)  # same checkpoint, same codes


def test_export_can_share_a_registered_models_vocoders(tiny_audio_registry, models):
    from strata.export.audio import replace_vocoder

    root = tiny_audio_registry.root.parent
    before = (models / "tiny-audio" / "vocoder.onnx").read_bytes()
    entry = export_audio_model(root / "mel.pt", None, "tiny-audio-3", root / "data", models, make_default=False,
                               vocoders_from="tiny-audio")
    assert entry.files["vocoder"] == Registry(models).entry("tiny-audio").files["vocoder"]  # by reference
    assert not (models / "tiny-audio-3" / "vocoder.onnx").exists()
    assert entry.extra["vocoders_from"] == "tiny-audio"
    a, b = AudioCodec.load(Registry(models), "tiny-audio"), AudioCodec.load(Registry(models), "tiny-audio-3")
    assert np.array_equal(a.decompress(a.compress(SOUND)), b.decompress(b.compress(SOUND)))  # same codec, vocoder
    # a vocoder installed later in the new model goes to its own folder: the shared file is left alone
    replace_vocoder(models, "tiny-audio-3", root / "vocoder")
    assert Registry(models).entry("tiny-audio-3").files["vocoder"].path == "tiny-audio-3/vocoder.onnx"
    assert (models / "tiny-audio" / "vocoder.onnx").read_bytes() == before
    AudioCodec.load(Registry(models), "tiny-audio")  # still verifies


def test_export_takes_one_source_of_vocoders(tiny_audio_registry, models):
    root = tiny_audio_registry.root.parent
    with pytest.raises(ValueError, match="either"):
        export_audio_model(root / "mel.pt", root / "vocoder", "x", root / "data", models, vocoders_from="tiny-audio")
    with pytest.raises(ValueError, match="either"):
        export_audio_model(root / "mel.pt", None, "x", root / "data", models)


def test_cli_export_audio_refuses_two_or_no_vocoder_sources(models, capsys):
    assert main(["--models", str(models), "export", "audio", "--name", "x", "--checkpoint", "c.pt"]) == 1
    assert "--vocoder DIR, or --vocoders-from" in capsys.readouterr().err
    assert main(["--models", str(models), "export", "audio", "--name", "tiny-audio",
                 "--vocoders-from", "tiny-audio"]) == 1
    assert "with --checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ ONNX vs torch


def test_onnx_matches_the_exported_checkpoint(tiny_audio_registry):
    """checkpoint.pt (float16-stored weights, through load_audio_checkpoint) computes what the ONNX graphs do."""
    reg = tiny_audio_registry
    e = reg.entry("tiny-audio")
    ckpt_path = reg.root.parent / "checkpoints" / "tiny-audio" / "checkpoint.pt"
    raw = torch.load(ckpt_path, map_location="cpu", weights_only=False)["model"]
    assert raw["g_a.net.1.weight"].dtype == torch.float16 and raw["g_s.mean"].dtype == torch.float16
    assert raw["quantizer.embed"].dtype == torch.float32
    model, cfg, ckpt = load_audio_checkpoint(ckpt_path)
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert cfg == AudioTrainConfig.from_dict(e.extra["config"]) and ckpt["step"] == 0

    rng = np.random.default_rng(0)
    mel = (rng.standard_normal((2, 80, 64)) * 2 - 6).astype(np.float32)
    latent = rng.standard_normal((2, 8, 10, 16)).astype(np.float32)
    with torch.no_grad():
        y_torch = model.g_a(torch.from_numpy(mel)).numpy()
        x_torch = model.g_s(torch.from_numpy(latent)).numpy()
    y_onnx = OnnxNet.load(reg.path(e, "analysis"), [CPU], threads=1)(mel)
    x_onnx = OnnxNet.load(reg.path(e, "synthesis"), [CPU], threads=1)(latent)
    assert y_onnx.shape == y_torch.shape == (2, 8, 10, 16) and x_onnx.shape == x_torch.shape == (2, 80, 64)
    assert np.abs(y_torch).max() > 0.1 and np.abs(x_torch).max() > 0.1
    np.testing.assert_allclose(y_onnx, y_torch, rtol=0, atol=1e-4)
    np.testing.assert_allclose(x_onnx, x_torch, rtol=0, atol=1e-4)
    with np.load(reg.path(e, "codebooks")) as z:
        np.testing.assert_array_equal(z["codebooks"], model.quantizer.codebooks().numpy())


def test_load_audio_checkpoint_refuses_other_checkpoints(tmp_path):
    path = tmp_path / "image.pt"
    torch.save({"model": {"g_a.net.0.weight": torch.zeros(1)}, "config": {}}, path)
    with pytest.raises(ValueError, match="not a mel codec checkpoint"):
        load_audio_checkpoint(path)


# ------------------------------------------------------------------------------------------ receptive field


def _conv(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """y[n] = Σ_{j = −left..right} w_j x[n + j] along the last axis, zero-padded (positive random taps)."""
    taps = np.random.default_rng(left * 31 + right).uniform(0.5, 1.5, left + right + 1)
    n = x.shape[-1]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)])
    return sum(t * padded[..., j : j + n] for j, t in enumerate(taps))


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((1, 3, n)).astype(np.float32)


@pytest.mark.parametrize(
    ("fn", "factor_in", "factor_out", "expected"),
    [
        (lambda x: _conv(x, 5, 5), 1, 1, 5),  # symmetric: 5 on each side
        (lambda x: _conv(_conv(x, 2, 2), 3, 3), 1, 1, 5),  # stacked convolutions add up
        (lambda x: _conv(x, 0, 3), 1, 1, 3),  # one-sided: the larger side counts
        (lambda x: _conv(x, 7, 1), 1, 1, 7),
        (lambda x: x * 2.0, 1, 1, 0),  # pointwise
        (lambda x: np.zeros_like(x), 1, 1, 0),  # no dependence at all
        # 13 taps, then every 4th output (an encoder: 1 column per 4 frames). Perturbing frame 64 changes the
        # outputs at frames 58..70, i.e. columns 15..17, which cover frames 60..71: 71 − 64 = 7 beyond it.
        (lambda x: _conv(x, 6, 6)[..., ::4], 1, 4, 7),
        # a decoder: each column becomes 4 frames, then 11 taps over frames: column 32 (frames 128..131)
        # reaches frames 123..136, 5 frames beyond its own on each side
        (lambda x: _conv(np.repeat(x, 4, axis=-1), 5, 5), 4, 1, 5),
    ],
)
def test_measure_receptive_field(fn, factor_in, factor_out, expected):
    length = 128 if factor_out == 4 else 64
    assert measure_receptive_field(fn, length, factor_in, factor_out, _noise) == expected
