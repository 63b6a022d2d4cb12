"""``strata export prior``: an image model's prior refitted on its RD-searched codes, registered as a new model
that shares the networks, while the original model and its streams stay as they were."""

import shutil

import numpy as np
import pytest
from strata.errors import StrataError
from strata.image import ImageCodec
from strata.registry import Registry

from tests.conftest import synthetic_image

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def refitted(tiny_registry, tmp_path_factory):
    from strata.export.prior import refit_prior

    models = tmp_path_factory.mktemp("refit") / "models"
    shutil.copytree(tiny_registry.root, models)
    log: list[str] = []
    entry = refit_prior(models, "tiny-image", "tiny-image-ec", tiny_registry.root.parent / "data", rounds=2,
                        rdo_lambda=0.05, log=log.append)
    return Registry(models), entry, log


def test_new_model_shares_the_networks_and_has_its_own_prior(refitted, tiny_registry):
    registry, entry, log = refitted
    old = registry.entry("tiny-image")
    assert old == tiny_registry.entry("tiny-image")  # the original is untouched
    assert registry.defaults["image"] == "tiny-image"  # and stays the default unless asked
    for role in ("analysis", "synthesis", "codebooks"):
        assert entry.files[role] == old.files[role]
    assert entry.files["prior"].path == "tiny-image-ec/prior.npz" and entry.files["prior"] != old.files["prior"]
    assert entry.weights_sha256 != old.weights_sha256
    assert entry.extra["rdo_lambda"] == 0.05 and entry.extra["prior_refit"]["from"] == "tiny-image"
    rounds = entry.extra["prior_refit"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and len(log) == 2
    assert all(r["val_bits_per_position_after"] > 0 for r in rounds)


def test_streams_of_both_models_decode_with_their_own(refitted, tiny_registry):
    registry, _, _ = refitted
    image = synthetic_image(48, 64, seed=5)
    new = ImageCodec.load(registry, "tiny-image-ec")
    old = ImageCodec.load(registry, "tiny-image")
    old_stream = ImageCodec.load(tiny_registry, "tiny-image").compress(image)
    np.testing.assert_array_equal(old.decompress(old_stream), ImageCodec.load(tiny_registry).decompress(old_stream))
    stream = new.compress(image)
    for k in range(1, new.layers + 1):
        np.testing.assert_array_equal(new.decompress(stream, k), new.decode(new.encode(image, k)))
    with pytest.raises(StrataError):  # a stream names its model: the other model refuses it
        old.decompress(stream)


def test_refusals(refitted, tiny_registry, tmp_path):
    from strata.cli import main
    from strata.export.prior import refit_prior

    registry, _, _ = refitted
    data = tiny_registry.root.parent / "data"
    with pytest.raises(ValueError, match="nearest-code search"):
        refit_prior(registry.root, "tiny-image", "other", data)
    with pytest.raises(ValueError, match="already registered"):
        refit_prior(registry.root, "tiny-image", "tiny-image-ec", data, rdo_lambda=0.05)
    kodak = tmp_path / "kodak"
    (kodak / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="Kodak"):
        refit_prior(registry.root, "tiny-image", "other", kodak, rdo_lambda=0.05)
    base = ["--models", str(registry.root), "export", "prior", "--name", "tiny-image", "--data", str(data)]
    assert main([*base, "--as", "bad name"]) == 1
    assert main([*base, "--as", "other", "--rdo-lambda", "0"]) == 1
    assert main([*base, "--as", "other", "--rounds", "0"]) == 1
    assert "other" not in Registry(registry.root).entries
