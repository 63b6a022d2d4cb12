"""Export into an existing models folder: other models are kept, a broken manifest is refused."""

import shutil

import pytest

from codec.errors import ModelIntegrityError
from codec.registry import MANIFEST, Registry

pytest.importorskip("torch")
from codec.export import export_image_model  # noqa: E402


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
