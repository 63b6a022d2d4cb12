"""``strata train decoder`` and ``strata export decoder``: a registered image model's synthesis network
retrained on its own codes, registered as a new model that makes the same streams and decodes them with
the new network, while the original stays as it was."""

import json
import shutil

import numpy as np
import pytest
import torch
from strata.cli.main import main
from strata.image import ImageCodec
from strata.registry import Registry

from tests.conftest import synthetic_image

pytest.importorskip("torch")


def test_code_crops_align_pixels_with_codes_and_mask_inner_sides():
    from strata.train.decoder import CodeCrops

    image = synthetic_image(64, 96, 0)  # an 8 × 12 code grid
    codes = (np.arange(8 * 12) % 256).reshape(1, 8, 12).astype(np.uint8)
    crops = CodeCrops([image], [codes], crop=4, factor=8, margin=1, seed=0)
    for _ in range(20):
        c, x, mask = crops.sample(3)
        assert c.shape == (1, 3, 4, 4) and c.dtype == np.int64
        assert x.shape == (3, 3, 32, 32) and mask.shape == (3, 1, 32, 32)
        for i in range(3):
            r, q = divmod(int(c[0, i, 0, 0]), 12)  # the code value is its own grid position
            assert np.array_equal(c[0, i], codes[0, r : r + 4, q : q + 4])
            expect = torch.from_numpy(image[r * 8 : r * 8 + 32, q * 8 : q * 8 + 32]).permute(2, 0, 1).float() / 255
            assert torch.equal(x[i], expect)
            m = mask[i, 0]
            assert bool(m[0, 16]) == (r == 0) and bool(m[-1, 16]) == (r + 4 == 8)  # image borders stay in
            assert bool(m[16, 0]) == (q == 0) and bool(m[16, -1]) == (q + 4 == 12)
            assert not m[:8].any() if r else m[:8, 8:24].all()  # inner sides: one cell (8 pixels) out
            assert bool(m[8:24, 8:24].all())  # the inside always counts


def test_code_crops_refuse_settings_that_leave_nothing():
    from strata.train.decoder import CodeCrops

    image, codes = synthetic_image(64, 64, 0), np.zeros((1, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="margin"):
        CodeCrops([image], [codes], crop=4, factor=8, margin=2, seed=0)
    with pytest.raises(ValueError, match="at least 72 pixels"):
        CodeCrops([image], [codes], crop=9, factor=8, margin=1, seed=0)


@pytest.fixture(scope="module")
def trained(tiny_registry, tmp_path_factory):
    from strata.train.decoder import DecoderTrainConfig, train

    root = tiny_registry.root.parent
    run = tmp_path_factory.mktemp("dec") / "run"
    cfg = DecoderTrainConfig(model="tiny-image", checkpoint=str(root / "checkpoints" / "tiny-image" / "checkpoint.pt"),
                             models=str(tiny_registry.root), data=str(root / "data"), steps=4, batch=2, crop=6,
                             eval_every=2, warmup=1, lr=1e-3, threads=1)
    train(cfg, run)
    return run, cfg


def test_training_starts_from_the_registered_network_and_logs_against_it(trained, tiny_registry):
    from strata.train.data import load_images

    run, cfg = trained
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    start = torch.load(run / "best.pt", weights_only=False)["start_psnr"]
    for r in records:
        assert np.allclose(r["delta_psnr"], np.array(r["psnr"]) - start)
    # the starting score is the registered ONNX network's own, on the same codes (its weights are float16-rounded)
    codec = ImageCodec.load(tiny_registry, "tiny-image")
    val = load_images(tiny_registry.root.parent / "data" / "val")
    se = np.zeros(codec.layers)
    for im in val:
        codes = codec.encode(im)
        for k in range(1, codec.layers + 1):
            se[k - 1] += np.sum((codec.decode(codes, k).astype(np.float64) - im) ** 2)
    onnx_psnr = 10 * np.log10(255.0**2 * sum(im.size for im in val) / se)
    assert np.allclose(start, onnx_psnr, atol=0.05)
    cached = np.load(run / "cache" / "codes_train.npz")
    assert len(cached.files) == 2 * 4  # each training image and its mirror image


def test_resume_continues_where_the_run_stopped(trained, tmp_path):
    from strata.train.decoder import DecoderTrainConfig, train

    run, cfg = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    more = DecoderTrainConfig.from_dict({**cfg.to_dict(), "steps": 6})
    train(more, copy, resume=True)
    steps = [json.loads(line)["step"] for line in (copy / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_training_refuses_kodak(tiny_registry, tmp_path):
    from strata.train.decoder import DecoderTrainConfig, train

    kodak = tmp_path / "kodak"
    (kodak / "train").mkdir(parents=True)
    (kodak / "val").mkdir()
    cfg = DecoderTrainConfig(model="tiny-image", checkpoint="unused.pt", models=str(tiny_registry.root),
                             data=str(kodak))
    with pytest.raises(ValueError, match="Kodak"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def exported(trained, tiny_registry, tmp_path_factory):
    """The run's last network exported (copied to best.pt with its step, whatever four steps made of it)."""
    from strata.export.decoder import export_decoder

    run, _ = trained
    root = tmp_path_factory.mktemp("dec-export")
    models = root / "models"
    shutil.copytree(tiny_registry.root, models)
    shutil.copytree(run, root / "run")
    shutil.copyfile(run / "last.pt", root / "run" / "best.pt")
    entry = export_decoder(root / "run", models, "tiny-image-d")
    return Registry(models), entry


def test_the_new_model_makes_the_same_streams_and_decodes_them_with_its_network(exported):
    registry, entry = exported
    old, new = ImageCodec.load(registry, "tiny-image"), ImageCodec.load(registry, "tiny-image-d")
    image = synthetic_image(64, 80, 9)
    a, b = old.compress(image), new.compress(image)
    assert len(a) - len("tiny-image") == len(b) - len("tiny-image-d")
    assert np.array_equal(old.decompress_codes(a).codes, new.decompress_codes(b).codes)
    assert not np.array_equal(old.decompress(a), new.decompress(b))  # four steps at 1e-3 moved the network
    assert np.array_equal(new.decompress(b), new.decode(new.encode(image)))
    with pytest.raises(Exception, match="tiny-image"):
        new.decompress(a)  # a stream names its model
    original = registry.entry("tiny-image")
    assert entry.weights_sha256 != original.weights_sha256
    assert entry.files["synthesis"].path == "tiny-image-d/synthesis.onnx"
    assert {r: f for r, f in entry.files.items() if r != "synthesis"} == \
        {r: f for r, f in original.files.items() if r not in ("synthesis", "synthesis_int8")}
    assert entry.bits_per_layer == original.bits_per_layer
    info = entry.extra["synthesis_retrained"]
    assert info["from"] == "tiny-image" and info["step"] == 4 and info["chosen_on"] == "data/val"


def test_the_new_network_is_the_trained_one(exported, trained):
    from strata.train.decoder import load_synthesis

    registry, entry = exported
    run, cfg = trained
    g_s, _ = load_synthesis(cfg.checkpoint)
    g_s.load_state_dict(torch.load(run / "last.pt", weights_only=False)["model"])
    g_s.eval()
    latent = np.random.default_rng(0).normal(size=(1, 8, 5, 6)).astype(np.float32)
    codec = ImageCodec.load(registry, "tiny-image-d")
    with torch.no_grad():
        ref = g_s(torch.from_numpy(latent)).numpy()
    assert np.abs(codec.synthesis(latent) - ref).max() < 2e-2  # float16-rounded weights


def test_export_refuses_taken_names_and_unfinished_runs(exported, trained, tmp_path):
    from strata.export.decoder import export_decoder

    registry, _ = exported
    run, _ = trained
    with pytest.raises(ValueError, match="already registered"):
        export_decoder(run, registry.root, "tiny-image")
    with pytest.raises(ValueError, match="no decoder run"):
        export_decoder(tmp_path, registry.root, "other")
    started = tmp_path / "run"
    shutil.copytree(run, started)
    state = torch.load(started / "best.pt", weights_only=False)
    state["step"] = 0
    torch.save(state, started / "best.pt")
    with pytest.raises(ValueError, match="started from"):
        export_decoder(started, registry.root, "other")


def test_export_and_resume_refuse_another_kind_of_run(trained, tiny_registry, tmp_path, capsys):
    """A folder of another trainer (its own config.json and best.pt) is named, not crashed on."""
    from strata.errors import ModelIntegrityError
    from strata.export.decoder import export_decoder
    from strata.train.decoder import DecoderTrainConfig, train

    run, cfg = trained
    other = tmp_path / "encoder-run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"teacher": "t.pt", "steps": 10}))
    shutil.copyfile(run / "best.pt", other / "best.pt")
    with pytest.raises(ValueError, match=r"decoder run \(unknown fields teacher; missing checkpoint, model\)"):
        export_decoder(other, tiny_registry.root, "other")
    with pytest.raises(ValueError, match="not the config"):
        DecoderTrainConfig.from_dict({"model": "m"})
    assert main(["train", "decoder", "--data", str(tmp_path), "--run", str(other), "--resume"]) == 1
    assert "not the config of a strata train decoder run" in capsys.readouterr().err
    # a best.pt that is not a decoder checkpoint
    wrong = tmp_path / "wrong"
    shutil.copytree(run, wrong)
    torch.save({"model": {}, "config": {}}, wrong / "best.pt")
    with pytest.raises(ModelIntegrityError, match="lacks step, start_psnr"):
        export_decoder(wrong, tiny_registry.root, "other")
    torch.save({"model": {}, "config": {}}, wrong / "last.pt")
    with pytest.raises(ModelIntegrityError, match="lacks"):
        train(cfg, wrong, resume=True)


def test_cli_refuses_a_new_run_without_its_model(tmp_path, capsys):
    assert main(["train", "decoder", "--data", str(tmp_path), "--run", str(tmp_path / "r")]) == 1
    assert "--model and --checkpoint are required" in capsys.readouterr().err
    assert main(["export", "decoder", "--run", str(tmp_path), "--as", "x"]) == 1
    assert "no decoder run" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_cli_help_states_the_trainers_own_defaults(kind, capsys):
    from strata.train.decoder import DecoderTrainConfig
    from strata.train.encoder import EncoderTrainConfig

    cfg = {"encoder": EncoderTrainConfig(teacher="t"), "decoder": DecoderTrainConfig(model="m", checkpoint="c")}[kind]
    with pytest.raises(SystemExit):
        main(["train", kind, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, value in (("--steps", cfg.steps), ("--lr", f"{cfg.lr:g}"), ("--threads", cfg.threads),
                        ("--eval-every", cfg.eval_every)):
        assert f"(default {value})" in text.split(flag, 2)[-1].split("--", 1)[0], flag
