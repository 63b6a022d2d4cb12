"""``strata tokenize --ray`` writes the same shards as the one-process path (a local Ray, one CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from strata.cli import main

from tests.conftest import png_bytes, synthetic_image
from tests.test_tokenize import snapshot

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # no shared memory, no free ports, a sandbox: nothing to test here
        pytest.skip(f"a local Ray cannot start: {e}")
    yield
    ray.shutdown()


def test_ray_writes_the_same_shards(local_ray, tmp_path, tiny_registry, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        (src / f"im{i}.png").write_bytes(png_bytes(synthetic_image(32 + 8 * i, 48, seed=i)))
    (src / "bad.png").write_bytes(b"not an image")
    models = ["--models", str(tiny_registry.root), "tokenize", str(src), "--shard-size", "2", "--streams"]
    assert main([*models, "--out", str(tmp_path / "local")]) == 0
    assert main([*models, "--out", str(tmp_path / "ray"), "--ray", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("strata: error: bad.png: ") == 2  # the bad file named once per run
    assert snapshot(tmp_path / "ray") == snapshot(tmp_path / "local")
    (tmp_path / "ray" / "shard-00001.parquet").unlink()  # resume on Ray: only the lost shard is redone
    assert main([*models, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    assert "1 written, 2 already complete" in capsys.readouterr().out
    assert snapshot(tmp_path / "ray") == snapshot(tmp_path / "local")


def test_a_worker_error_comes_back_as_itself(local_ray, tmp_path, tiny_registry) -> None:
    """An error raised in a Ray worker reaches the caller as the codec's exception (one line in the CLI), not
    as Ray's traceback text: here a model whose weights differ from those the run was planned with."""
    from strata import bulk

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(png_bytes(synthetic_image(32, 32)))
    plan = bulk.plan(bulk.TokenizeJob(str(src), tmp_path / "out", models_dir=str(tiny_registry.root)))
    bulk.prepare(plan)
    other = bulk.Plan(plan.job, plan.root, plan.out, plan.model, plan.layers,
                      dict(plan.config, weights_sha256="0" * 64), plan.shards)
    with pytest.raises(bulk.StrataError, match="changed while the run was planned") as info:
        list(bulk.run_ray(other, workers=1))
    assert "\n" not in str(info.value)


# The run's identity includes the encoder's search (no Ray needed; here beside the other tokenize tests this
# file owns): a model update that changes the manifest's ``extra.rdo_lambda`` changes the codes, not the weights.
def with_rdo_lambda(registry, tmp_path, lam: float):
    """A copy of ``registry``'s folder whose ``tiny-image`` entry asks for RD-optimised search at ``lam``."""
    import json
    import shutil

    from strata.registry import Registry

    root = tmp_path / f"models-{lam}"
    shutil.copytree(registry.root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["models"]["tiny-image"].setdefault("extra", {})["rdo_lambda"] = lam
    (root / "manifest.json").write_text(json.dumps(manifest))
    return Registry(root)


def test_the_search_setting_is_part_of_the_run(tmp_path, tiny_registry) -> None:
    from strata import bulk
    from strata.image import ImageCodec

    src = tmp_path / "in"
    src.mkdir()
    image = synthetic_image(40, 56, seed=2)
    (src / "a.png").write_bytes(png_bytes(image))
    rdo = with_rdo_lambda(tiny_registry, tmp_path, 0.05)
    job = bulk.TokenizeJob(str(src), tmp_path / "out", models_dir=str(tiny_registry.root))
    assert bulk.plan(job).config["rdo_lambda"] == 0.0
    bulk.tokenize(job)
    moved = bulk.TokenizeJob(str(src), tmp_path / "out", models_dir=str(rdo.root))
    with pytest.raises(bulk.InputError, match=r"other settings or inputs \(rdo_lambda 0.0 → 0.05\)"):
        bulk.tokenize(moved)
    # the workers encode with the planned λ, whatever the manifest says when they start
    plan = bulk.plan(bulk.TokenizeJob(str(src), tmp_path / "out2", models_dir=str(rdo.root)))
    worker = bulk.ShardWorker(dict(plan.config, rdo_lambda=0.0), str(rdo.root), str(src), str(tmp_path))
    nearest = ImageCodec.load(tiny_registry, "tiny-image", rdo_lambda=0.0).encode(image).codes
    np.testing.assert_array_equal(worker.encode_file("a.png").codes, nearest)
    worker = bulk.ShardWorker(plan.config, str(rdo.root), str(src), str(tmp_path))
    assert worker.codec.rdo_lambda == 0.05
    rd = ImageCodec.load(rdo, "tiny-image").encode(image).codes
    np.testing.assert_array_equal(worker.encode_file("a.png").codes, rd)
    assert not np.array_equal(rd, nearest)  # the setting matters: the test would not notice a lost λ otherwise
