import json
import shutil

import pytest
from strata.errors import ModelIntegrityError, UnknownModelError
from strata.image import ImageCodec
from strata.registry import Registry


def test_entries(tiny_registry):
    e = tiny_registry.entry("tiny-image")
    assert e.modality == "image" and e.layers == 4 and e.codebook_sizes == (16,) * 4
    assert tiny_registry.default("image").name == "tiny-image"
    assert len(e.weights_prefix) == 8
    with pytest.raises(UnknownModelError):
        tiny_registry.entry("missing")
    with pytest.raises(UnknownModelError):
        tiny_registry.default("audio")


@pytest.fixture
def copy(tiny_registry, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_registry.root, root)
    return root


def test_tampered_file_is_refused(copy):
    reg = Registry(copy)
    path = copy / reg.entry("tiny-image").files["synthesis"].path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        ImageCodec.load(reg, "tiny-image")


def test_missing_file_is_refused(copy):
    reg = Registry(copy)
    (copy / reg.entry("tiny-image").files["prior"].path).unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        ImageCodec.load(reg, "tiny-image")


def test_manifest_checks(copy):
    manifest = copy / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["models"]["tiny-image"]["weights_sha256"] = "0" * 64
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ModelIntegrityError, match="weights_sha256"):
        Registry(copy)
    manifest.write_text("{not json")
    with pytest.raises(ModelIntegrityError):
        Registry(copy)
    manifest.unlink()
    with pytest.raises(ModelIntegrityError):
        Registry(copy)


def test_path_escape_refused(copy):
    manifest = copy / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["models"]["tiny-image"]["files"]["prior"]["path"] = "../../etc/passwd"
    # keep the weights hash consistent so only the path check can refuse it
    manifest.write_text(json.dumps(doc))
    reg = Registry(copy)
    with pytest.raises(ModelIntegrityError, match="outside"):
        reg.path(reg.entry("tiny-image"), "prior")
