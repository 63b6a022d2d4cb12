"""The bounded inference pool: heavy work runs in worker threads, never on the event loop.

At most ``workers`` calls run at once (an :class:`anyio.CapacityLimiter`); up to ``max_queue``
more wait for a free worker; beyond that a call is refused at once with
:class:`~strata.server.errors.OverloadedError` (503 ``overloaded``), so a burst turns into fast
refusals instead of an ever-growing queue and timeouts. The event loop stays free for health
checks and for reading and writing other requests' bodies.

Each call also carries an estimate of its work (:class:`~strata.server.cost.Work`, seconds of
compute); the pool admits it only while the work admitted (running and waiting) stays within
``max_work`` seconds: over that, 503 ``overloaded`` with a ``Retry-After``; a call whose own
estimate is over ``max_work`` gets 413 ``limit_exceeded`` (see :mod:`strata.server.cost`).

All bookkeeping happens on the event loop thread, so it needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from strata.errors import LimitExceededError
from strata.server.cost import NOTHING, Work, retry_after
from strata.server.errors import OverloadedError
from strata.server.metrics import Metrics

T = TypeVar("T")


class Admission:
    """Work admitted by :meth:`InferencePool.admit`; :meth:`release` (idempotent) gives its budget back."""

    def __init__(self, pool: InferencePool, seconds: float) -> None:
        self.pool, self.seconds, self.released = pool, seconds, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._pending -= 1
            self.pool.admitted_work = max(0.0, self.pool.admitted_work - self.seconds)


class InferencePool:
    """Run blocking callables in at most ``workers`` threads with a bounded wait queue."""

    def __init__(self, workers: int, max_queue: int, metrics: Metrics | None = None,
                 max_work: float = float("inf")) -> None:
        if workers < 1 or max_queue < 0 or not max_work > 0:
            raise ValueError(f"need workers >= 1, max_queue >= 0 and max_work > 0, got {workers}, {max_queue} "
                             f"and {max_work}")
        self.workers, self.max_queue, self.max_work = workers, max_queue, max_work
        self.admitted_work = 0.0  # estimated seconds of the calls inside run()
        self.metrics = metrics
        if metrics is not None:  # read at scrape time, so the gauges are never stale
            metrics.queue_depth.set_function(lambda: self.waiting)
            metrics.in_flight.set_function(lambda: self.running)
        self._limiter: anyio.CapacityLimiter | None = None  # made lazily: it must belong to the running loop
        self._pending = 0  # calls inside run(): waiting + running

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.workers)
        return self._limiter

    @property
    def running(self) -> int:
        """Calls holding a worker now."""
        return 0 if self._limiter is None else int(self._limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        """Calls waiting for a worker now."""
        return max(0, self._pending - self.running)

    async def run(self, fn: Callable[..., T], *args: object, work: Work = NOTHING) -> T:
        """``fn(*args)`` in a worker thread. Raises :class:`OverloadedError` when the queue is full or ``work``
        does not fit the work budget now, :class:`LimitExceededError` when it never would."""
        admission = self.admit(work)
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            admission.release()

    def admit(self, work: Work = NOTHING) -> Admission:
        """Admit ``work`` (the checks of :meth:`run`) for a caller that runs it in steps, e.g. a streamed answer:
        each step goes through :meth:`step`, and the caller releases the admission when it is done."""
        if work.seconds > self.max_work:
            raise LimitExceededError(
                f"{work.what} needs about {work.seconds:.0f} s of compute, over this server's budget of "
                f"{self.max_work:.0f} s (STRATA_MAX_WORK_SECONDS); send a smaller one"
            )
        if self._pending >= self.workers + self.max_queue:
            self._reject()
            raise OverloadedError(
                f"server is busy: {self.running} requests running and {self.waiting} waiting "
                f"(limit {self.max_queue}); retry later"
            )
        excess = self.admitted_work + work.seconds - self.max_work
        if excess > 0:
            self._reject()
            error = OverloadedError(
                f"server is busy: {self.admitted_work:.0f} s of work admitted, {work.what} needs about "
                f"{work.seconds:.0f} s more (budget {self.max_work:.0f} s); retry later"
            )
            error.retry_after = retry_after(excess, self.workers)
            raise error
        self._pending += 1
        self.admitted_work += work.seconds
        return Admission(self, work.seconds)

    async def step(self, fn: Callable[..., T], *args: object) -> T:
        """One step of admitted work: ``fn(*args)`` in a worker thread (it waits for a free worker)."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def _reject(self) -> None:
        if self.metrics is not None:
            self.metrics.rejected.inc()
