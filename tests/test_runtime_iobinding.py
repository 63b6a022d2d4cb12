"""IO binding (:class:`strata.runtime.BoundNet`) on the CPU provider gives a plain run's bytes; bench/gpu.py exits
cleanly without CUDA and measures with ``--provider cpu``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest
from strata.runtime import CPU, BoundNet, OnnxNet

from tests.conftest import ROOT


def test_bound_run_equals_plain_run(tiny_codec) -> None:
    rng = np.random.default_rng(0)
    for net, shape in ((tiny_codec.analysis, (3, 3, 32, 48)), (tiny_codec.synthesis, (2, 8, 4, 6))):
        bound = BoundNet(net)
        assert (bound.device, bound.device_id) == ("cpu", 0)
        x = rng.standard_normal(shape)  # float64: cast on the way in, as OnnxNet does
        plain = net(x)
        on_device = bound.run(bound.to_device(x))
        assert isinstance(on_device, ort.OrtValue) and on_device.shape() == list(plain.shape)
        assert on_device.numpy().tobytes() == plain.tobytes()
        assert bound(x).tobytes() == plain.tobytes()
        assert bound(x[:1]).tobytes() == net(x[:1]).tobytes()  # the binding is reused with another shape


def test_bound_run_refuses_a_host_array(tiny_codec) -> None:
    bound = BoundNet(tiny_codec.analysis)
    with pytest.raises(TypeError, match="takes an OrtValue from to_device"):
        bound.run(np.zeros((1, 3, 8, 8), dtype=np.float32))  # type: ignore[arg-type]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_without_cuda_says_so_in_one_line(monkeypatch, capsys) -> None:
    bench = load_bench()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpu.py: no CUDA: onnxruntime") and "nothing measured" in out


def test_gpu_bench_measures_on_the_cpu(tiny_registry, tmp_path: Path, capsys) -> None:
    bench = load_bench()
    out = tmp_path / "gpu.json"
    argv = ["--models", str(tiny_registry.root), "--provider", "cpu", "--batch-sizes", "1", "3",
            "--image-size", "32x24", "--seconds", "0.01", "--warmup", "0", "--stage-sizes", "40x24", "--repeat", "1",
            "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["network"], r["batch"]) for r in rows] == [
        ("tiny-image analysis", 1), ("tiny-image analysis", 3), ("tiny-image synthesis", 1),
        ("tiny-image synthesis", 3)]
    assert all(r["device_items_per_s"] > 0 and r["host_items_per_s"] > 0 and r["same_as_batch_1"] for r in rows)
    assert "| tiny-image synthesis | image 32x24 | 3 |" in capsys.readouterr().out
    assert [(st["image"], st["operation"]) for st in report["stages"]] == [("40x24", "compress")] * 5 + [
        ("40x24", "decompress")] * 5
    assert all(st["ms"] > 0 for st in report["stages"])
    with pytest.raises(SystemExit, match="multiples of"):
        bench.main([*argv[:-2], "--image-size", "30x24"])


def test_onnxnet_is_unchanged_by_binding(tmp_path: Path) -> None:
    """A plain call after bound ones still works on the same session (the binding holds no session state)."""
    from tests.test_runtime import _doubler

    net = OnnxNet.load(_doubler(tmp_path / "d.onnx"), [CPU], threads=1)
    bound = BoundNet(net)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(bound(x), 2 * x)
    np.testing.assert_array_equal(net(x), 2 * x)
