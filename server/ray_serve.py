"""The Strata HTTP service on Ray Serve: the same FastAPI app (routes, errors, OpenAPI) behind Ray's proxy.

::

    serve run strata.server.ray_serve:app                                   # defaults, local Ray
    serve run strata.server.ray_serve:build_app replicas=4 models_dir=/models max_pixels=4194304
    serve deploy docker/ray-serve.yaml                                      # a running cluster
    strata serve --ray --replicas 2                                         # the same from the CLI

Each replica builds its own app with :func:`strata.server.main.create_app` (``serve.ingress`` with a builder
function, evaluated on the replica), so the models load in the app's lifespan on the replica, as under
uvicorn: Ray Serve runs the ASGI lifespan (startup before the replica takes traffic, shutdown when it
stops). The service settings are the ``STRATA_*`` variables of the replica's environment: those of the
process that builds the application, overridden by the builder's arguments (``models_dir=…`` →
``STRATA_MODELS_DIR``), passed in the deployment's ``runtime_env``.

Builder arguments besides the settings: ``replicas`` (default 1), ``num_cpus`` per replica (default 1),
``num_gpus`` per replica (default 1 when this process's onnxruntime has the CUDA provider, else 0; a fraction
shares a GPU between replicas), ``max_ongoing_requests`` (Ray's default otherwise). A replica's inference
threads (``STRATA_WORKERS``) default to its CPUs and onnxruntime threads per session (``STRATA_ORT_THREADS``)
to 1, so replicas packed on one node do not oversubscribe it.

**Dynamic batching** (``@serve.batch``): where the app would micro-batch (``STRATA_BATCHING=on``, or ``auto``
with the CUDA provider: :meth:`~strata.server.config.Settings.use_batching`), a replica sends the image
networks' calls through one ``@serve.batch`` queue (:func:`run_batch`) instead of the app's thread-based
:class:`~strata.server.batching.MicroBatcher`::

    pool thread 1 ─ g_a x₁ [1,3,H,W] ─┐                       ┌─ (g_a, 3×H×W): concat ─► one g_a call ─► split
    pool thread 2 ─ g_a x₂ [1,3,H,W] ─┼─► @serve.batch queue ─┤
    pool thread 3 ─ g_s z₃ [1,D,h,w] ─┘   (replica's loop)    └─ (g_s, D×h×w): z₃ alone

The queue collects up to ``STRATA_BATCH_MAX_SIZE`` rows for up to ``STRATA_BATCH_MAX_WAIT_MS``; its handler
groups the calls by network and input shape and runs each group as one onnxruntime call (in a thread, off the
replica's event loop). A batch is only useful if its results are the single calls' results, byte for byte
(the stream of an image must not depend on the traffic it arrived with), so each (network, item shape, rows)
is **verified** the first time it is batched: the batched call and the single calls both run, and the
single results are returned; the combination is batched afterwards only if the bytes were equal, else it
keeps running singly (:class:`BatchedNet`). On the CPU onnxruntime's kernels loop over batch items and the
bytes are always equal (tests/test_ray_serve.py); a GPU may pick other convolution algorithms by batch
size, which the verification catches. Audio networks are not batched (as under uvicorn: they run on
windows of sounds of any length, which rarely share a shape). A replica batches only as many calls as it
has inference threads, so with batching ``STRATA_WORKERS`` defaults to at least ``STRATA_BATCH_MAX_SIZE``
and ``max_ongoing_requests`` to at least twice that.

What differs from uvicorn: Ray's proxy terminates HTTP, so the uvicorn protections of
:mod:`strata.server.protocol` (header deadline, connection cap) do not apply; Ray's own proxy timeouts and
``max_ongoing_requests`` / ``max_queued_requests`` do. The app's body limit, work budget (503 +
Retry-After) and error bodies are the same. Needs Ray >= 2.47 (builder functions in ``serve.ingress``).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve
from strata.server.batching import Verdicts

DEPLOYMENT_NAME = "strata"
DEPLOYMENT_ARGS = ("replicas", "num_cpus", "num_gpus", "max_ongoing_requests")
RAY_MAX_ONGOING_REQUESTS = 5  # Ray Serve's default max_ongoing_requests per replica

log = logging.getLogger("strata.server")


def cuda_available() -> bool:
    """Whether this process's onnxruntime has the CUDA provider (the ``gpu`` extra on a CUDA machine)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


# ------------------------------------------------------------------------------------ dynamic batching
class BatchedNet:
    """An :class:`~strata.runtime.OnnxNet`-like callable (``net(x [B, …]) -> y``, ``.provider``) whose calls go
    through the replica's ``@serve.batch`` queue (:func:`run_batch`) on ``loop``.

    ``__call__`` runs in the inference pool's threads: it hands the input to the queue on the replica's event
    loop and blocks until its slice of a batched result (or its own single result) is back. A call made on the
    loop's own thread (it would deadlock), a call of ``max_rows`` rows or more, or any call when ``loop`` is
    None, runs the network directly.

    :meth:`run_group` is what the queue's handler runs for calls of one input shape: one network call on the
    concatenated inputs where that was verified to give the single calls' bytes, else one call per input.
    """

    def __init__(self, net: Callable[[np.ndarray], np.ndarray], max_rows: int,
                 loop: asyncio.AbstractEventLoop | None = None, name: str = "net") -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.net, self.max_rows, self.loop, self.name = net, max_rows, loop, name
        self._lock = threading.Lock()
        self.verdicts = Verdicts(name)  # (item shape, rows) → batched == singles
        self.items = 0  # calls of this object
        self.calls = 0  # calls of the wrapped network
        self.rows_per_call: Counter[int] = Counter()  # rows of each network call → how many such calls

    @property
    def provider(self) -> str:
        return self.net.provider  # type: ignore[attr-defined]

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.rows_per_call[int(x.shape[0])] += 1
        return self.net(x)

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:  # no loop runs in this thread: a pool thread
            return False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            self.items += 1
        if self.loop is None or x.ndim == 0 or x.shape[0] >= self.max_rows or self._on_loop_thread():
            return self._run(x)
        outcome = asyncio.run_coroutine_threadsafe(run_batch(NetCall(self, x)), self.loop).result()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def run_group(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs of ``xs`` (inputs of one shape): one batched call when verified equal, else one call each.

        The first time a (shape, rows) combination comes, both run and the single results are returned; the
        verdict (equal bytes or not) decides how later groups of that combination run
        (:class:`strata.server.batching.Verdicts`)."""
        return self.verdicts.run(self._run, xs)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and operators: items, network calls, calls by rows, and the verdicts."""
        with self._lock:
            return {"items": self.items, "calls": self.calls,
                    "rows_per_call": {str(k): v for k, v in sorted(self.rows_per_call.items())},
                    "verdicts": {f"{'x'.join(map(str, shape))} rows {rows}": ok
                                 for (shape, rows), ok in self.verdicts.known.items()}}


@dataclass(frozen=True)
class NetCall:
    """One network call waiting in the replica's batch queue."""

    net: BatchedNet
    x: np.ndarray


def run_groups(calls: list[NetCall]) -> list[np.ndarray | BaseException]:
    """Outputs of ``calls`` in order: grouped by network and input shape, each group by
    :meth:`BatchedNet.run_group`. A group's error is the outcome of its calls only."""
    groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for i, call in enumerate(calls):
        groups.setdefault((id(call.net), tuple(call.x.shape[1:])), []).append(i)
    outcomes: list[np.ndarray | BaseException | None] = [None] * len(calls)
    for members in groups.values():
        net = calls[members[0]].net
        try:
            outputs: list[np.ndarray | BaseException] = list(net.run_group([calls[i].x for i in members]))
        except Exception as e:  # handed to this group's callers, raised in their threads
            outputs = [e] * len(members)
        for i, out in zip(members, outputs, strict=True):
            outcomes[i] = out
    return outcomes  # type: ignore[return-value]  # every index belongs to one group


def _rows(calls: list[NetCall]) -> int:
    return sum(int(c.x.shape[0]) for c in calls)


@serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002, max_concurrent_batches=1, batch_size_fn=_rows)
async def run_batch(calls: list[NetCall]) -> list[np.ndarray | BaseException]:
    """The replica's ``@serve.batch`` handler: the calls Ray gathered (at most ``STRATA_BATCH_MAX_SIZE`` rows,
    waiting at most ``STRATA_BATCH_MAX_WAIT_MS``; set per replica in the lifespan), run in a thread so the
    event loop stays free. One batch runs at a time; calls arriving meanwhile form the next one."""
    return await asyncio.to_thread(run_groups, calls)


def serve_batched(codecs: Any, settings: Any, loop: asyncio.AbstractEventLoop) -> tuple[Any, list[BatchedNet]]:
    """``codecs`` (:class:`~strata.server.codecs.Codecs`) with every micro-batched image network (the app wraps
    them in :class:`~strata.server.batching.MicroBatcher` when ``settings.use_batching``) moved onto the
    ``@serve.batch`` queue instead; returns the new codecs and the :class:`BatchedNet` objects made."""
    from strata.server.batching import MicroBatcher

    run_batch.set_max_batch_size(settings.batch_max_size)
    run_batch.set_batch_wait_timeout_s(settings.batch_max_wait_ms / 1000.0)
    nets: list[BatchedNet] = []
    image = {}
    for name, codec in codecs.image.items():
        if isinstance(codec.analysis, MicroBatcher):
            codec = copy.copy(codec)  # its tiles and contexts too, as server.codecs.batched does
            for part in ("analysis", "synthesis"):
                net = BatchedNet(getattr(codec, part).net, settings.batch_max_size, loop, f"{name} {part}")
                setattr(codec, part, net)
                nets.append(net)
        image[name] = codec
    return dataclasses.replace(codecs, image=image), nets


def build_fastapi() -> FastAPI:
    """The replica's app (called on the replica): settings from its ``STRATA_*`` environment; its lifespan
    loads the models as under uvicorn, then moves the batched networks onto the ``@serve.batch`` queue."""
    from strata.server.main import create_app

    app = create_app()
    load_models = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with load_models(app) as state:
            app.state.codecs, app.state.batched_nets = serve_batched(
                app.state.codecs, app.state.settings, asyncio.get_running_loop())
            yield state

    app.router.lifespan_context = lifespan
    return app


@serve.ingress(build_fastapi)
class StrataIngress:
    """The deployment class: the app's routes over HTTP, and :meth:`batch_stats` through a handle."""

    def batch_stats(self) -> dict[str, Any]:
        """Each batched network's counters on this replica (``{}`` when it does not batch)."""
        nets = getattr(self.app.state, "batched_nets", [])  # type: ignore[attr-defined]  # Ray's ASGI wrapper
        return {net.name: net.stats() for net in nets}


def settings_env(args: dict[str, Any], num_cpus: float, num_gpus: float = 0.0) -> dict[str, str]:
    """``STRATA_*`` variables for the replicas: this process's, then ``args``, then per-replica defaults
    (inference threads: the replica's CPUs, or the batch size when it batches; 1 onnxruntime thread)."""
    from strata.server.config import Settings

    env = {k: v for k, v in os.environ.items() if k.startswith("STRATA_")}
    for key, value in args.items():
        if key not in Settings.model_fields:
            known = ", ".join((*DEPLOYMENT_ARGS, *sorted(Settings.model_fields)))
            raise ValueError(f"unknown argument {key!r}; known: {known}")
        if key == "models_dir" and value:
            value = os.path.abspath(value)
        env[f"STRATA_{key.upper()}"] = ",".join(value) if isinstance(value, list | tuple) else str(value)
    workers = max(1, int(num_cpus))
    if replica_batches(env, num_gpus):
        workers = max(workers, batch_size(env))
    env.setdefault("STRATA_WORKERS", str(workers))
    env.setdefault("STRATA_ORT_THREADS", "1")
    return env


def batch_size(env: dict[str, str]) -> int:
    """``STRATA_BATCH_MAX_SIZE`` of ``env``, or the setting's default."""
    from strata.server.config import Settings

    text = env.get("STRATA_BATCH_MAX_SIZE")
    if text is None:
        return int(Settings.model_fields["batch_max_size"].default)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"STRATA_BATCH_MAX_SIZE must be an integer, got {text!r}") from None


def replica_batches(env: dict[str, str], num_gpus: float) -> bool:
    """Whether replicas with ``env`` and ``num_gpus`` will batch: ``STRATA_BATCHING=on``, or ``auto`` (the
    default) on a GPU replica, as :meth:`~strata.server.config.Settings.use_batching` decides there."""
    batching = env.get("STRATA_BATCHING", "auto").lower()
    return batching == "on" or (batching == "auto" and num_gpus > 0)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The Serve application (``serve run strata.server.ray_serve:build_app key=value …``)."""
    args = dict(args or {})
    replicas = int(args.pop("replicas", 1))
    num_cpus = float(args.pop("num_cpus", 1))
    gpus = args.pop("num_gpus", None)
    num_gpus = float(gpus) if gpus not in (None, "", "auto") else (1.0 if cuda_available() else 0.0)
    ongoing = args.pop("max_ongoing_requests", None)
    if replicas < 1 or num_cpus < 0 or num_gpus < 0:
        raise ValueError(f"replicas must be >= 1 and num_cpus, num_gpus >= 0; got {replicas}, {num_cpus}, {num_gpus}")
    env = settings_env(args, num_cpus, num_gpus)
    options: dict[str, Any] = {}
    if ongoing is not None:
        options["max_ongoing_requests"] = int(ongoing)
    elif replica_batches(env, num_gpus):  # room for a batch to fill while the previous one runs
        options["max_ongoing_requests"] = max(RAY_MAX_ONGOING_REQUESTS, 2 * batch_size(env))
    deployment = serve.deployment(StrataIngress, name=DEPLOYMENT_NAME).options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": {"env_vars": env}},
        # The app logs one line per request itself (server.metrics), as under uvicorn with access_log=False.
        logging_config={"enable_access_log": False},
        **options,
    )
    return deployment.bind()


app = build_app({})  # ``serve run strata.server.ray_serve:app``: one replica, the environment's settings
