"""onnxruntime sessions (``strata.runtime``): provider choice, loading errors, session options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from strata.errors import ModelIntegrityError
from strata.runtime import CPU, CUDA, OnnxNet, choose_providers


def _doubler(path: Path) -> Path:
    """A one-node graph: ``y = 2·x`` for x of any shape."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "doubler", [x], [y], [two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_cpu_preference_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_providers("cpu") == [CPU]
    monkeypatch.setenv("STRATA_PROVIDER", "cpu")
    assert choose_providers() == [CPU]
    with pytest.raises(ValueError, match="auto, cuda or cpu"):
        choose_providers("tpu")


def test_auto_takes_cuda_only_when_onnxruntime_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATA_PROVIDER", raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert choose_providers() == [CPU]
    with pytest.raises(RuntimeError, match="CUDA provider was requested"):
        choose_providers("cuda")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    assert choose_providers() == [CUDA, CPU]  # the CPU stays as onnxruntime's fallback


def test_runs_and_reports_its_provider(tmp_path: Path) -> None:
    net = OnnxNet.load(_doubler(tmp_path / "d.onnx"), [CPU], threads=1)
    x = np.arange(6, dtype=np.float64).reshape(2, 3)  # cast to float32 on the way in
    np.testing.assert_array_equal(net(x), 2 * x.astype(np.float32))
    assert net.provider == "cpu" and (net.input_name, net.output_name) == ("x", "y")


def test_idle_threads_do_not_spin(tmp_path: Path) -> None:
    """Sessions run in turn; a spinning pool of one would take the cores from the next."""
    net = OnnxNet.load(_doubler(tmp_path / "d.onnx"), [CPU])
    options = net.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("content", [b"", b"not an onnx graph", b"\x08\x07" * 50])
def test_unreadable_model_is_an_integrity_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelIntegrityError, match="cannot load ONNX model"):
        OnnxNet.load(path, [CPU])
