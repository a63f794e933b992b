"""The watcher's one retry policy (tenacity): transient failures are retried in place with
exponential backoff and full jitter, for as long as the message they belong to may stay leased.

Failures are classified where they happen, by the adapters of each backend:

- :class:`Transient` (apiserver unreachable, 5xx/429, GCS or KFP unreachable or overloaded): retried.
  While one is being retried, ``retrain_outage{backend}`` is 1 and ``/readyz`` says which backend is
  out; the first success on that backend clears it.
- :class:`jobgen.watcher.sensor.events.Rejected`: permanent, never retried (dead-lettered).
- Anything else is a bug or an unknown permanent failure: not retried (the sensor dead-letters it
  with reason ``internal`` and logs the traceback).

The policy itself is the project's one, :func:`jobgen.retry.policy`; this module adds the
watcher's outage bookkeeping (metrics, /readyz) and its stop conditions (shutdown, lease budget).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from jobgen import retry
from jobgen.watcher.obs import LOG, Metrics

if TYPE_CHECKING:
    from tenacity import RetryCallState

T = TypeVar("T")
BACKENDS = ("kubernetes", "gcs", "kfp", "pubsub")


class Transient(Exception):
    """A backend could not be reached or was overloaded; the same call may succeed later."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend


class Stopped(Exception):
    """Retrying ended without success (shutdown, or the message's lease budget is spent)."""

    def __init__(self, why: str, last: Transient | None) -> None:
        super().__init__(why)
        self.last = last


class Outages:
    """Which backends are out right now (for /readyz and ``retrain_outage``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        for b in BACKENDS:
            metrics.outage.labels(b).set(0)

    def down(self, backend: str) -> None:
        with self._lock:
            if backend not in self._since:
                self._since[backend] = time.monotonic()
                self.metrics.outage.labels(backend).set(1)

    def up(self, backend: str) -> None:
        if backend in self._since:
            with self._lock:
                if self._since.pop(backend, None) is not None:
                    self.metrics.outage.labels(backend).set(0)
                    LOG.info("backend reachable again", extra={"backend": backend})

    def current(self) -> dict[str, float]:
        """backend → seconds it has been out."""
        now = time.monotonic()
        with self._lock:
            return {b: now - t for b, t in self._since.items()}


class RetryPolicy:
    """``call(fn)`` retries ``fn`` on :class:`Transient` with jittered exponential backoff until it
    succeeds, ``stop`` is set, or ``deadline`` (monotonic) passes; then raises :class:`Stopped`."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        stop: threading.Event,
        outages: Outages,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.initial, self.maximum = initial, maximum
        self.stop = stop
        self.outages = outages
        self._sleep: Callable[[float], None] = sleep or self._wait

    def _wait(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def call(self, fn: Callable[[], T], deadline: float | None = None, what: str = "work") -> T:
        failed: set[str] = set()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, Transient):
                failed.add(exc.backend)
                self.outages.down(exc.backend)
                self.outages.metrics.errors.labels(exc.backend).inc()
                LOG.warning(
                    "backend unavailable; retrying",
                    extra={
                        "backend": exc.backend,
                        "what": what,
                        "attempt": state.attempt_number,
                        "retry_in": round(state.upcoming_sleep, 3),
                        "error": str(exc)[:300],
                    },
                )

        retrying = retry.policy(
            lambda exc: isinstance(exc, Transient),
            deadline=None if deadline is None else max(0.0, deadline - time.monotonic()),
            initial=self.initial,
            maximum=self.maximum,
            sleep=self._sleep,
            stop_early=self.stop.is_set,
            before_sleep=before_sleep,
            what=what,
        )
        try:
            result = retrying(fn)
        except Transient as exc:
            self.outages.down(exc.backend)
            why = "shutting down" if self.stop.is_set() else "lease budget spent"
            raise Stopped(why, exc) from exc
        for backend in failed:  # the whole call succeeded, so every backend it waited for is back
            self.outages.up(backend)
        return result

    def ok(self, backend: str) -> None:
        self.outages.up(backend)
