"""The bounded inference pool: heavy work runs in worker threads, never on the event loop.

At most ``workers`` calls run at once (an :class:`anyio.CapacityLimiter`); up to ``max_queue``
more wait for a free worker; beyond that a call is refused at once with
:class:`~strata.server.errors.OverloadedError` (503 ``overloaded``), so a burst turns into fast
refusals instead of an ever-growing queue and timeouts. The event loop stays free for health
checks and for reading and writing other requests' bodies.

All bookkeeping happens on the event loop thread, so it needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from strata.server.errors import OverloadedError
from strata.server.metrics import Metrics

T = TypeVar("T")


class InferencePool:
    """Run blocking callables in at most ``workers`` threads with a bounded wait queue."""

    def __init__(self, workers: int, max_queue: int, metrics: Metrics | None = None) -> None:
        if workers < 1 or max_queue < 0:
            raise ValueError(f"need workers >= 1 and max_queue >= 0, got {workers} and {max_queue}")
        self.workers, self.max_queue = workers, max_queue
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

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread; raises :class:`OverloadedError` when the queue is full."""
        if self._pending >= self.workers + self.max_queue:
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise OverloadedError(
                f"server is busy: {self.running} requests running and {self.waiting} waiting "
                f"(limit {self.max_queue}); retry later"
            )
        self._pending += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            self._pending -= 1
