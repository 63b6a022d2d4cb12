"""Export into an existing models folder: other models are kept, a broken manifest is refused."""

import shutil

import pytest
from strata.errors import ModelIntegrityError
from strata.registry import MANIFEST, Registry

pytest.importorskip("torch")
from strata.export.image import export_image_model  # noqa: E402


@pytest.fixture
def sources(tiny_registry):
    root = tiny_registry.root.parent  # conftest layout: data/, ckpt.pt, models/
    return root / "ckpt.pt", root / "data"


def test_export_keeps_other_models(tiny_registry, sources, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_registry.root, models)
    ckpt, data = sources
    export_image_model(ckpt, "tiny-image-2", data, models, make_default=False)
    reg = Registry(models)
    assert reg.names() == ["tiny-image", "tiny-image-2"]
    assert reg.default("image").name == "tiny-image"


def test_export_refuses_a_broken_manifest(sources, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST).write_text("{broken")
    ckpt, data = sources
    with pytest.raises(ModelIntegrityError):
        export_image_model(ckpt, "tiny-image", data, models)
    assert (models / MANIFEST).read_text() == "{broken"


def test_export_keeps_a_prefix_of_the_layers(tiny_registry, sources, tmp_path):
    """``layers=2`` of a 4-layer model: the first two codebooks, the same codes and images for k ≤ 2."""
    import numpy as np
    import torch
    from strata.export.image import load_checkpoint
    from strata.image import ImageCodec

    from tests.conftest import synthetic_image

    models = tmp_path / "models"
    ckpt, data = sources
    entry = export_image_model(ckpt, "tiny-2", data, models, layers=2, checkpoints_dir=tmp_path / "checkpoints")
    assert entry.layers == 2 and entry.codebook_sizes == (16, 16) and len(entry.extra["contexts"]) == 2
    full = ImageCodec.load(tiny_registry)
    cut = ImageCodec.load(Registry(models), "tiny-2")
    np.testing.assert_array_equal(cut.quantizer.codebooks, full.quantizer.codebooks[:2])
    image = synthetic_image(48, 64, 3)
    np.testing.assert_array_equal(cut.encode(image).codes, full.encode(image, 2).codes)
    np.testing.assert_array_equal(cut.decompress(cut.compress(image)), full.decode(full.encode(image, 2)))
    with pytest.raises(ValueError, match="1..2"):
        cut.encode(image, 3)
    # The compact checkpoint (kept outside the models folder, not in the manifest) is a 2-layer model in its
    # own right (config and quantizer state agree).
    assert not list(models.rglob("*.pt")) and "checkpoint" not in entry.files
    model, cfg, _ = load_checkpoint(tmp_path / "checkpoints" / "tiny-2" / "checkpoint.pt")
    assert cfg.rvq.layers == model.quantizer.layers == 2
    assert model.quantizer.embed.shape[0] == model.quantizer.cluster_size.shape[0] == 2
    assert torch.equal(model.quantizer.codebooks(), torch.from_numpy(cut.quantizer.codebooks))


@pytest.mark.parametrize("layers", [0, 5, -1])
def test_export_refuses_a_layer_count_it_does_not_have(sources, tmp_path, layers):
    ckpt, data = sources
    with pytest.raises(ValueError, match="integer in 1..4"):
        export_image_model(ckpt, "tiny-x", data, tmp_path / "models", layers=layers)
    assert not (tmp_path / "models" / "manifest.json").exists()


def test_export_onnx_refuses_a_graph_that_differs_from_its_network(tmp_path):
    """export_onnx runs the exported graph and compares it with the torch network before anything is registered."""
    torch = pytest.importorskip("torch")
    from strata.export.common import ExportParityError, export_onnx

    class Noisy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # a fresh draw in every run: torch and ONNX disagree
            return x + torch.rand_like(x)

    class Scale(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    example = torch.rand(1, 3, 8, 8)
    assert export_onnx(Scale(), example, tmp_path / "scale.onnx", "image", "latent") == 0.0
    with pytest.raises(ExportParityError, match="differs from the torch network"):
        export_onnx(Noisy(), example, tmp_path / "noisy.onnx", "image", "latent")
