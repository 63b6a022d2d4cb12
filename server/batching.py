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

A batch's outputs must be the bytes each caller would get alone. On the CPU they are, but a GPU may
choose other convolution algorithms for other batch sizes, so each combination of input shape and
rows is **verified** the first time it is batched (:class:`Verdicts`): the batched call and the single
calls both run, the single results are returned, and the combination is batched afterwards only if
the bytes were equal (the Ray Serve deployment's batcher does the same).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("strata.server")

MAX_VERDICTS = 4096  # (shape, rows) equality verdicts a network remembers; the oldest is forgotten first


class Verdicts:
    """Whether batching a (item shape, rows) combination gives the single calls' bytes; thread-safe."""

    def __init__(self, name: str = "net") -> None:
        self.name = name
        self._lock = threading.Lock()
        self.known: dict[tuple[tuple[int, ...], int], bool] = {}

    def run(self, run: Callable[[np.ndarray], np.ndarray], xs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs of ``xs`` (inputs of one item shape) through ``run``: one call on their concatenation where
        that is known to give the single calls' bytes, one call each where it is known not to; the first time,
        both, returning the single results and remembering whether the bytes were equal."""
        if len(xs) == 1:
            return [run(xs[0])]
        key = (tuple(xs[0].shape[1:]), sum(int(x.shape[0]) for x in xs))
        with self._lock:
            verdict = self.known.get(key)
        if verdict is False:
            return [run(x) for x in xs]
        y = run(np.concatenate(xs, axis=0))
        if y.shape[0] != key[1]:
            raise RuntimeError(f"{self.name}: the batched call returned {y.shape[0]} rows for {key[1]} inputs")
        offsets = np.cumsum([0] + [int(x.shape[0]) for x in xs])
        batched = [np.array(y[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        if verdict:
            return batched
        singles = [run(x) for x in xs]
        equal = all(a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
                    for a, b in zip(batched, singles, strict=True))
        with self._lock:
            if len(self.known) >= MAX_VERDICTS:
                del self.known[next(iter(self.known))]
            self.known[key] = equal
        if not equal:
            log.warning("%s: a batch of %d rows of shape %s differs from single calls; those run singly",
                        self.name, key[1], key[0])
        return singles


@dataclass
class _Batch:
    """Inputs gathered for one call of the wrapped net, and its outcome."""

    inputs: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    full: threading.Event = field(default_factory=threading.Event)  # leader: stop waiting
    done: threading.Event = field(default_factory=threading.Event)  # followers: outputs ready
    outputs: list[np.ndarray] = field(default_factory=list)
    error: BaseException | None = None

    def run(self, fn: Callable[[np.ndarray], np.ndarray], verdicts: Verdicts) -> None:
        """Run ``fn`` on the inputs (batched where verified equal to single calls) and split its output."""
        try:
            self.outputs = verdicts.run(fn, self.inputs)
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
        self.verdicts = Verdicts(getattr(net, "name", type(net).__name__))
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
            batch.run(self._run, self.verdicts)
        return batch.result(index)
