"""``strata tokenize --ray`` writes the same shards as the one-process path (a local Ray, one CPU)."""

from __future__ import annotations

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
