"""onnxruntime sessions for the exported networks.

The execution provider is chosen once, when a session is made: CUDA when
onnxruntime-gpu can use it, the CPU otherwise (``STRATA_PROVIDER=cpu|cuda``
overrides the choice). :attr:`OnnxNet.provider` reports what is really in use,
since onnxruntime falls back to the CPU when the CUDA libraries fail to load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from strata.errors import ModelIntegrityError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(preference: str | None = None) -> list[str]:
    """Providers to ask for: ``preference`` is ``"auto"`` (default), ``"cuda"`` or ``"cpu"``."""
    preference = (preference or os.environ.get("STRATA_PROVIDER") or "auto").lower()
    if preference not in ("auto", "cuda", "cpu"):
        raise ValueError(f"provider must be auto, cuda or cpu, got {preference!r}")
    if preference == "cpu":
        return [CPU]
    if CUDA in ort.get_available_providers():
        return [CUDA, CPU]
    if preference == "cuda":
        raise RuntimeError("the CUDA provider was requested but onnxruntime has no CUDAExecutionProvider")
    return [CPU]


@dataclass
class OnnxNet:
    """One exported network: ``net(x) -> y`` with a single input and output."""

    session: ort.InferenceSession
    input_name: str = field(init=False)
    output_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @classmethod
    def load(cls, path: Path, providers: list[str] | None = None, threads: int = 0) -> OnnxNet:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads must not spin: a codec runs several sessions in turn (g_s, then the
        # vocoder), and on a 2-core machine one session's spinning threads took the cores from the
        # next (audio decode 16× → 25× real time with spinning off; image speed unchanged).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers or choose_providers())
        except Exception as e:  # onnxruntime raises its own untyped errors for unreadable graphs
            raise ModelIntegrityError(f"cannot load ONNX model {path}: {e}") from e
        return cls(session)

    @property
    def provider(self) -> str:
        """``"cuda"`` or ``"cpu"``: the provider that runs this network."""
        return "cuda" if self.session.get_providers()[0] == CUDA else "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
