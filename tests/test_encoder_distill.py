"""The distilled light analysis network (``strata train encoder`` / ``strata export encoder``): crops and loss
masks, a run that resumes, an export that keeps the model's weights hash and streams, refusals, and the
``encoder=`` choice of the library and the service."""

import json
import shutil

import numpy as np
import pytest
from strata.errors import InputError
from strata.image import ImageCodec
from strata.registry import Registry

from tests.conftest import synthetic_image

torch = pytest.importorskip("torch")


def _tiny_paths(tiny_registry):
    root = tiny_registry.root.parent
    return root / "data", root / "checkpoints" / "tiny-image" / "checkpoint.pt"


def _config(tiny_registry, **kw):
    from strata.train.encoder import EncoderTrainConfig

    data, teacher = _tiny_paths(tiny_registry)
    settings = dict(teacher=str(teacher), data=str(data), enc_channels=(4, 6, 16), enc_blocks=(0, 0, 1), steps=12,
                    batch=2, crop=32, margin=1, eval_every=6, val_crop=32, amp=False, warmup=2)
    return EncoderTrainConfig(**{**settings, **kw})


@pytest.fixture(scope="module")
def distilled(tiny_registry, tmp_path_factory):
    """A short distillation run of the tiny model's analysis network, stopped once and resumed."""
    from strata.train.encoder import train

    run = tmp_path_factory.mktemp("distil") / "run"
    cfg = _config(tiny_registry)
    torch.set_num_threads(1)
    train(cfg, run, max_minutes=1e-9)  # stops after the first validation …
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 6
    best = train(cfg, run, resume=True)  # … and resumes from last.pt to the end
    return run, best


def test_crops_mask_only_the_sides_inside_the_image():
    from strata.train.encoder import LatentCrops

    image = np.zeros((64, 96, 3), np.uint8)
    latent = np.arange(2 * 8 * 12, dtype=np.float32).reshape(2, 8, 12)
    crops = LatentCrops([image], [latent], crop=32, factor=8, margin=1, seed=0, edge=0.5)
    seen_edge = seen_inside = False
    for _ in range(40):
        x, y, mask = crops.sample(1)
        assert x.shape == (1, 3, 32, 32) and y.shape == (1, 2, 4, 4) and mask.shape == (1, 1, 4, 4)
        r, q = divmod(int(y[0, 0, 0, 0]), 12)  # the latent's top-left cell
        np.testing.assert_array_equal(y[0].numpy(), latent[:, r : r + 4, q : q + 4])
        m = mask[0, 0].numpy()
        assert m[0, 1:3].all() == (r == 0) and m[-1, 1:3].all() == (r + 4 == 8)  # a side on the border counts
        assert m[1:3, 0].all() == (q == 0) and m[1:3, -1].all() == (q + 4 == 12)
        assert m[1:3, 1:3].all()  # the middle always counts
        seen_edge |= r == 0
        seen_inside |= 0 < r < 4
    assert seen_edge and seen_inside
    with pytest.raises(ValueError, match="margin"):
        LatentCrops([image], [latent], crop=32, factor=8, margin=2, seed=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        LatentCrops([image], [latent], crop=30, factor=8, margin=1, seed=0)


def test_student_starts_from_the_teachers_linear_path_and_logs_against_it(distilled, tiny_registry):
    from strata.export.image import load_checkpoint

    run, best = distilled
    model, cfg, ckpt = load_checkpoint(best)
    assert cfg.net.enc_channels == (4, 6, 16) and cfg.net.enc_blocks == (0, 0, 1)
    assert ckpt["encoder"]["teacher"].endswith("checkpoint.pt") and len(ckpt["teacher_psnr"]) == 4
    teacher, _, _ = load_checkpoint(_tiny_paths(tiny_registry)[1])
    for name, p in teacher.g_s.state_dict().items():  # only g_a trains
        torch.testing.assert_close(model.g_s.state_dict()[name], p)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [6, 12]
    assert all(len(r["delta_psnr"]) == 4 and np.isfinite(r["latent_mse"]) for r in records)


def test_export_adds_the_light_network_and_keeps_streams(distilled, tiny_registry, tmp_path):
    from strata.export.encoder import export_light_analysis

    models = tmp_path / "models"
    shutil.copytree(tiny_registry.root, models)
    entry = export_light_analysis(distilled[1], models, "tiny-image", checkpoints_dir=tmp_path / "ckpt")
    before = tiny_registry.entry("tiny-image")
    assert entry.weights_sha256 == before.weights_sha256  # the decoder's files are unchanged
    assert entry.files["analysis_light"].path == "tiny-image/analysis.light.onnx"
    assert entry.extra["analysis_light"]["enc_channels"] == [4, 6, 16]
    registry = Registry(models)
    assert ImageCodec.encoders(registry.entry("tiny-image")) == ("full", "light")
    assert ImageCodec.encoders(before) == ("full",)
    light = ImageCodec.load(registry, "tiny-image", encoder="light")
    full = ImageCodec.load(registry, "tiny-image")
    image = synthetic_image(48, 64, seed=7)
    stream = light.compress(image)
    for k in range(1, full.layers + 1):  # any decoder of the model reads the light encoder's streams
        np.testing.assert_array_equal(full.decompress(stream, k), light.decompress(stream, k))
    assert full.compress(image) == ImageCodec.load(tiny_registry, "tiny-image").compress(image)
    from strata.export.encoder import load_light_analysis

    g_a = load_light_analysis(tmp_path / "ckpt" / "tiny-image" / "analysis_light.pt")  # ONNX parity
    x = np.random.default_rng(1).random((1, 3, 32, 48), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(light.analysis(x), g_a(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)


def test_export_refusals(distilled, tiny_registry, tmp_path):
    from strata.export.encoder import export_light_analysis

    models = tmp_path / "models"
    shutil.copytree(tiny_registry.root, models)
    teacher = _tiny_paths(tiny_registry)[1]
    with pytest.raises(ValueError, match="not a distilled-encoder checkpoint"):
        export_light_analysis(teacher, models, "tiny-image")
    ckpt = torch.load(distilled[1], map_location="cpu", weights_only=False)
    ckpt["model"]["quantizer.embed"] = ckpt["model"]["quantizer.embed"] + 1.0  # not the registered codebooks
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    with pytest.raises(ValueError, match="not distilled from model 'tiny-image'"):
        export_light_analysis(other, models, "tiny-image")
    assert "analysis_light" not in Registry(models).entry("tiny-image").files


def test_encoder_errors(tiny_registry):
    with pytest.raises(InputError, match="no light analysis"):
        ImageCodec.load(tiny_registry, "tiny-image", encoder="light")
    with pytest.raises(InputError, match="encoder must be one of"):
        ImageCodec.load(tiny_registry, "tiny-image", encoder="fast")


def test_cli_train_encoder_refusals(tiny_registry, tmp_path, capsys):
    from strata.cli import main

    data, teacher = _tiny_paths(tiny_registry)
    base = ["train", "encoder", "--data", str(data), "--run", str(tmp_path / "run")]
    assert main(base) == 1
    assert "--teacher is required" in capsys.readouterr().err
    assert main([*base, "--teacher", str(teacher), "--enc-channels", "4,6"]) == 1
    assert "three comma-separated integers" in capsys.readouterr().err
    assert main([*base, "--teacher", str(teacher), "--enc-blocks", "0,-1,1"]) == 1
    assert ">= 0" in capsys.readouterr().err
    assert main([*base, "--teacher", str(tmp_path / "missing.pt")]) == 1
    assert not (tmp_path / "run" / "last.pt").exists()


def test_service_encodes_with_the_light_network_where_asked(distilled, tiny_registry, tmp_path):
    pytest.importorskip("fastapi")
    from strata.client import Client
    from strata.export.encoder import export_light_analysis
    from strata.server.main import create_app

    from tests.conftest import running_server, server_settings

    models = tmp_path / "models"
    shutil.copytree(tiny_registry.root, models)
    export_light_analysis(distilled[1], models, "tiny-image")
    registry = Registry(models)
    image = synthetic_image(48, 64, seed=8)
    for encoder in ("light", "full"):
        expected = ImageCodec.load(registry, "tiny-image", encoder=encoder).compress(image)
        app = create_app(server_settings(registry, image_encoder=encoder))
        with running_server(app) as url, Client(url, timeout=60) as client:
            assert client.compress(image).data == expected


def test_models_sharing_the_analysis_network_share_the_light_one(distilled, tiny_registry, tmp_path):
    from strata.export.encoder import export_light_analysis
    from strata.export.prior import refit_prior

    models = tmp_path / "models"
    shutil.copytree(tiny_registry.root, models)
    refit_prior(models, "tiny-image", "tiny-image-ec", tiny_registry.root.parent / "data", rounds=1,
                rdo_lambda=0.05, log=lambda _: None)
    export_light_analysis(distilled[1], models, "tiny-image")
    registry = Registry(models)
    ec = registry.entry("tiny-image-ec")
    assert ec.files["analysis_light"] == registry.entry("tiny-image").files["analysis_light"]
    assert ec.weights_sha256 != registry.entry("tiny-image").weights_sha256  # its own prior
    image = synthetic_image(40, 48, seed=2)
    light = ImageCodec.load(registry, "tiny-image-ec", encoder="light")  # sha256-verified
    np.testing.assert_array_equal(ImageCodec.load(registry, "tiny-image-ec").decompress(light.compress(image)),
                                  light.decode(light.encode(image)))
