"""onnxruntime sessions for the exported networks.

The execution provider is chosen once, when a session is made: CUDA when
onnxruntime-gpu can use it, the CPU otherwise (``STRATA_PROVIDER=cpu|cuda``
overrides the choice). :attr:`OnnxNet.provider` reports what is really in use,
since onnxruntime falls back to the CPU when the CUDA libraries fail to load.

:class:`BoundNet` runs a network with onnxruntime's IO binding: inputs placed on the
network's device once (:meth:`BoundNet.to_device`), outputs left there, so a GPU
measurement or a pipeline that keeps data on the GPU does not pay a host copy per call
(bench/gpu.py). On the CPU it runs the same kernels as a plain call, with the same bytes.
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


class BoundNet:
    """``net`` run with IO binding on its provider's device (``cuda`` with its device id, or ``cpu``).

    ::

        x (host) ─► to_device ─► OrtValue on the device ─► run ─► OrtValue on the device ─► .numpy() (host)
        bound(x) = to_device, run and the copy back in one call: what ``net(x)`` gives, byte for byte

    Not thread-safe: one binding is reused across calls (use one object per thread).
    """

    def __init__(self, net: OnnxNet) -> None:
        self.net = net
        self.device = net.provider  # "cuda" or "cpu": onnxruntime's device names
        options = net.session.get_provider_options().get(CUDA, {}) if self.device == "cuda" else {}
        self.device_id = int(options.get("device_id", 0))
        self._binding = net.session.io_binding()

    def to_device(self, x: np.ndarray) -> ort.OrtValue:
        """A float32 copy of ``x`` in the device's memory, ready for :meth:`run`."""
        array = np.ascontiguousarray(x, dtype=np.float32)
        return ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id)

    def run(self, x: ort.OrtValue) -> ort.OrtValue:
        """The network's output for a device input, left on the device (finished when this returns)."""
        if not isinstance(x, ort.OrtValue):
            raise TypeError(f"BoundNet.run takes an OrtValue from to_device(), got {type(x).__name__}")
        if x.device_name().lower() != self.device:
            raise ValueError(f"input is on {x.device_name()}, this network runs on {self.device}")
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_ortvalue_input(self.net.input_name, x)
        binding.bind_output(self.net.output_name, self.device, self.device_id)
        self.net.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding.get_outputs()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Host in, host out through the binding: the same result as ``net(x)``."""
        return self.run(self.to_device(x)).numpy()
