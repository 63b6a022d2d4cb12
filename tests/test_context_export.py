"""``strata train context`` and ``strata export context``: context networks trained on a registered image
model's codes, registered as a new model whose streams decode with it while the original stays as it was."""

import json
import shutil

import numpy as np
import pytest
from strata.entropy.context import ContextModel
from strata.errors import StrataError
from strata.image import ImageCodec
from strata.registry import Registry

from tests.conftest import synthetic_image
from tests.test_context import random_net

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(tiny_registry, tmp_path_factory):
    from strata.train.context import ContextTrainConfig, train_context

    run = tmp_path_factory.mktemp("ctx") / "run"
    log: list[str] = []
    cfg = ContextTrainConfig(data=str(tiny_registry.root.parent / "data"), model="tiny-image", epochs=2, hidden=16,
                             batch=64, threads=1)
    model = train_context(cfg, run, models_dir=tiny_registry.root, log=log.append)
    return run, model, log


def test_training_reports_each_layer_and_keeps_only_networks_that_win(trained, tiny_registry):
    run, model, log = trained
    report = json.loads((run / "report.json").read_text())
    assert report["prior_sha256"] == tiny_registry.entry("tiny-image").files["prior"].sha256
    assert model.num_layers == 4 and len(report["layers"]) == 4
    for layer, row in report["layers"].items():
        assert row["kept"] == (row["net_bits"] < row["table_bits"])
        assert (model.nets[int(layer)] is not None) == row["kept"]
        assert (run / f"layer_{layer}.{'npz' if row['kept'] else 'table'}").exists()
    assert log[-1].startswith("all layers:")
    # the reported bits are the integer network's own, the numbers a stream costs
    codes = np.load(run / "codes_val.npz")
    stacks = [codes[k].astype(np.int64) for k in sorted(codes.files, key=lambda s: int(s[1:]))]
    for layer, net in enumerate(model.nets):
        if net is not None:
            bits = sum(float(model.cross_entropy_bits(s[: layer + 1])[layer]) for s in stacks)
            assert bits == pytest.approx(report["layers"][str(layer)]["net_bits"], rel=1e-9)


def test_resume_skips_finished_layers_and_refusals(trained, tiny_registry, tmp_path):
    from strata.train.context import ContextTrainConfig, train_context

    run, model, _ = trained
    data = str(tiny_registry.root.parent / "data")
    log: list[str] = []
    again = train_context(ContextTrainConfig(data=data, model="tiny-image"), run, models_dir=tiny_registry.root,
                          resume=True, log=log.append)
    assert len(log) == 1 and again.to_bytes() == model.to_bytes()
    with pytest.raises(ValueError, match="not empty"):
        train_context(ContextTrainConfig(data=data, model="tiny-image"), run, models_dir=tiny_registry.root)
    kodak = tmp_path / "kodak"
    (kodak / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="Kodak"):
        train_context(ContextTrainConfig(data=str(kodak), model="tiny-image"), tmp_path / "r",
                      models_dir=tiny_registry.root)


@pytest.fixture(scope="module")
def exported(tiny_registry, tmp_path_factory):
    """A run folder holding hand-made networks (deterministic, whatever training would keep), exported."""
    from strata.export.context import export_context

    root = tmp_path_factory.mktemp("ctx-export")
    models = root / "models"
    shutil.copytree(tiny_registry.root, models)
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(tiny_registry.root.parent / "data"),
                                                 "model": "tiny-image", "hidden": 12, "emb_dim": 3, "epochs": 1}))
    ContextModel((random_net(0, 1), random_net(1, 2), None, random_net(3, 4))).save(run / "context.npz")
    entry = export_context(run, models, "tiny-image-cm")
    return Registry(models), entry, run


def test_new_model_adds_its_context_file_to_the_weights_hash(exported, tiny_registry):
    registry, entry, _ = exported
    old = registry.entry("tiny-image")
    assert old == tiny_registry.entry("tiny-image") and registry.defaults["image"] == "tiny-image"
    for role in ("analysis", "synthesis", "codebooks", "prior"):
        assert entry.files[role] == old.files[role]
    assert entry.files["context"].path == "tiny-image-cm/context.npz"
    assert entry.weights_sha256 != old.weights_sha256
    assert entry.extra["context_model"]["from"] == "tiny-image"


def test_streams_round_trip_and_each_model_refuses_the_others(exported, tiny_registry):
    registry, _, _ = exported
    image = synthetic_image(48, 64, seed=5)
    new, old = ImageCodec.load(registry, "tiny-image-cm"), ImageCodec.load(registry, "tiny-image")
    stream = new.compress(image)
    assert stream != old.compress(image)
    for k in range(1, new.layers + 1):
        np.testing.assert_array_equal(new.decompress(stream, k), new.decode(new.encode(image, k)))
        np.testing.assert_array_equal(new.decompress(new.compress(image, k)), new.decompress(stream, k))
    with pytest.raises(StrataError):
        old.decompress(stream)
    with pytest.raises(StrataError):
        new.decompress(old.compress(image))


def test_a_context_file_that_does_not_match_is_refused(exported, tmp_path):
    from strata.errors import ModelIntegrityError
    from strata.export.context import export_context

    registry, entry, run = exported
    models = tmp_path / "models"
    shutil.copytree(registry.root, models)
    with pytest.raises(ValueError, match="already registered"):
        export_context(run, models, "tiny-image-cm")
    # a tampered context file fails its sha256 check when the model loads
    (models / "tiny-image-cm" / "context.npz").write_bytes(b"junk")
    with pytest.raises(ModelIntegrityError):
        ImageCodec.load(Registry(models), "tiny-image-cm")
    # networks for another codebook size
    ContextModel((random_net(0, 1, k=32), None, None, None)).save(run.parent / "other.npz")
    bad_run = tmp_path / "bad"
    bad_run.mkdir()
    shutil.copy(run / "config.json", bad_run / "config.json")
    shutil.copy(run.parent / "other.npz", bad_run / "context.npz")
    with pytest.raises(ModelIntegrityError, match="predicts 32 codes"):
        export_context(bad_run, models, "other")


def test_cli(exported, tiny_registry, tmp_path, capsys):
    from strata.cli import main

    registry, _, run = exported
    models = tmp_path / "models"
    shutil.copytree(tiny_registry.root, models)
    assert main(["--models", str(models), "export", "context", "--run", str(run), "--as", "cli-cm"]) == 0
    assert "registered cli-cm" in capsys.readouterr().out
    assert "cli-cm" in Registry(models).entries
    assert main(["--models", str(models), "export", "context", "--run", str(tmp_path), "--as", "x"]) == 1
    assert main(["--models", str(models), "export", "context", "--run", str(run), "--as", "bad name"]) == 1
    data = str(tiny_registry.root.parent / "data")
    assert main(["--models", str(models), "train", "context", "--data", data, "--run", str(tmp_path / "r")]) == 1
    assert "--model is required" in capsys.readouterr().err
    assert main(["--models", str(models), "train", "context", "--data", data, "--run", str(tmp_path / "r"),
                 "--model", "tiny-image", "--epochs", "0"]) == 1


def test_a_codec_needs_the_context_model_its_manifest_names(exported):
    from strata.errors import ModelIntegrityError
    from strata.export.prior import refit_prior

    registry, _, run = exported
    codec = ImageCodec.load(registry, "tiny-image-cm")
    parts = (codec.entry, codec.analysis, codec.synthesis, codec.quantizer, codec.prior)
    with pytest.raises(ModelIntegrityError, match="context model"):
        ImageCodec(*parts)  # streams would decode to garbage without it
    plain = ImageCodec.load(registry, "tiny-image")
    with pytest.raises(ModelIntegrityError, match="context model"):
        ImageCodec(plain.entry, plain.analysis, plain.synthesis, plain.quantizer, plain.prior, context=codec.context)
    with pytest.raises(ValueError, match="context model trained against its prior"):
        refit_prior(registry.root, "tiny-image-cm", "x", run.parent, rdo_lambda=0.05)


def test_a_refused_run_leaves_no_folder(tiny_registry, tmp_path):
    from strata.train.context import ContextTrainConfig, train_context

    data = str(tiny_registry.root.parent / "data")
    with pytest.raises(StrataError, match="unknown model"):
        train_context(ContextTrainConfig(data=data, model="nope"), tmp_path / "a", models_dir=tiny_registry.root)
    with pytest.raises(ValueError, match="does not exist"):
        train_context(ContextTrainConfig(data=str(tmp_path / "none"), model="tiny-image"), tmp_path / "b",
                      models_dir=tiny_registry.root)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # so a corrected retry needs no --resume
