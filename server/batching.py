"""Micro-batching of network calls: concurrent requests with the same input shape share one
onnxruntime call, which is what keeps a GPU busy.

::

    worker thread 1 ── x₁ [1,3,H,W] ─┐                       ┌─► y₁
    worker thread 2 ── x₂ [1,3,H,W] ─┼─► concat [3,3,H,W] ─► net ─► split ─┼─► y₂
    worker thread 3 ── x₃ [1,3,H,W] ─┘   (one call)                        └─► y₃

The first call of a shape opens a batch and becomes its *leader*: it waits up to
``max_wait_ms`` for other calls of the same shape (or until ``max_batch_size`` rows have
joined), closes the batch, runs the wrapped net once on the concatenation and hands each
caller its slice. Calls of other shapes form their own batches and run concurrently. No
background thread: the callers' own (pool worker) threads do the work, so the pool's bound
still holds. Batches never grow past the number of inference workers, so on a GPU set
``STRATA_WORKERS`` at least as high as ``STRATA_BATCH_MAX_SIZE``.

On the CPU batching gains nothing and costs every request up to ``max_wait_ms``, so the
service uses it only with the CUDA provider unless ``STRATA_BATCHING=on``
(:meth:`strata.server.config.Settings.use_batching`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Batch:
    """Inputs gathered for one call of the wrapped net, and its outcome."""

    inputs: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    full: threading.Event = field(default_factory=threading.Event)  # leader: stop waiting
    done: threading.Event = field(default_factory=threading.Event)  # followers: outputs ready
    outputs: list[np.ndarray] = field(default_factory=list)
    error: BaseException | None = None

    def run(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """Run ``fn`` on the concatenated inputs and split its output per caller."""
        try:
            if len(self.inputs) == 1:
                self.outputs = [fn(self.inputs[0])]
                return
            y = fn(np.concatenate(self.inputs, axis=0))
            if y.shape[0] != self.rows:
                raise RuntimeError(f"batched net returned {y.shape[0]} rows for {self.rows} inputs")
            offsets = np.cumsum([0] + [x.shape[0] for x in self.inputs])
            self.outputs = [np.array(y[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        except BaseException as e:  # handed to every caller of the batch
            self.error = e
        finally:
            self.done.set()

    def result(self, index: int) -> np.ndarray:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.outputs[index]


class MicroBatcher:
    """An OnnxNet-like callable (``net(x [B, C, H, W]) -> y``, ``.provider``) that batches
    concurrent calls of the same shape. Thread-safe.

    Args:
        net: the wrapped network; must accept any batch size (the exported graphs have a
            dynamic batch axis) and treat batch items independently.
        max_batch_size: most rows per call of ``net``; larger inputs run alone.
        max_wait_ms: how long the first call of a batch waits for company.
    """

    def __init__(self, net: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 8,
                 max_wait_ms: float = 2.0) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch_size >= 1 and max_wait_ms >= 0, got {max_batch_size}, {max_wait_ms}")
        self.net = net
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._lock = threading.Lock()
        self._open: dict[tuple, _Batch] = {}
        self.calls = 0  # calls of the wrapped net
        self.items = 0  # calls of this batcher

    @property
    def provider(self) -> str:
        return self.net.provider  # type: ignore[attr-defined]

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self.calls += 1
        return self.net(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows = x.shape[0] if x.ndim else 0
        with self._lock:
            self.items += 1
        if x.ndim == 0 or rows >= self.max_batch_size:
            return self._run(x)
        key = (x.shape[1:], x.dtype.str)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None or batch.rows + rows > self.max_batch_size
            if leader:
                if batch is not None:  # no room: send the old batch off now, start a new one
                    del self._open[key]
                    batch.full.set()
                batch = self._open[key] = _Batch()
            index = len(batch.inputs)
            batch.inputs.append(x)
            batch.rows += rows
            if batch.rows >= self.max_batch_size:
                del self._open[key]
                batch.full.set()
        if leader:
            batch.full.wait(self.max_wait)
            with self._lock:  # close the batch: later calls start a new one
                if self._open.get(key) is batch:
                    del self._open[key]
            batch.run(self._run)
        return batch.result(index)
