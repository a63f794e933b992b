"""The one retry policy for transient failures: tenacity, with full-jitter exponential backoff.

Every caller that retries (the cluster client, the watcher's sources and targets) builds its
policy here, so "transient" failures are retried the same way everywhere and permanent ones are
never retried. A policy retries only what ``is_transient`` says is transient, until ``deadline``
seconds have passed (None: until it succeeds or a permanent error occurs), and then re-raises the
last error unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

T = TypeVar("T")
log = logging.getLogger("jobgen.retry")

INITIAL_SECONDS = 0.2
MAX_SECONDS = 10.0


def policy(
    is_transient: Callable[[BaseException], bool],
    *,
    deadline: float | None = 30.0,
    initial: float = INITIAL_SECONDS,
    maximum: float = MAX_SECONDS,
    what: str = "",
    sleep: Callable[[float], None] = time.sleep,
    stop_early: Callable[[], bool] | None = None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """A tenacity ``Retrying`` for transient failures (``stop_early()`` true ends the retries;
    ``before_sleep`` replaces the default log line before each wait)."""
    from tenacity import (
        Retrying,
        retry_if_exception,
        stop_after_delay,
        stop_any,
        stop_never,
        wait_random_exponential,
    )

    stops: list[Any] = [stop_never if deadline is None else stop_after_delay(deadline)]
    if stop_early is not None:
        stops.append(lambda _state: stop_early())

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.info("%s failed (%s: %s); retrying in %.2fs", what or "call", type(exc).__name__, exc, state.upcoming_sleep)

    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_any(*stops),
        wait=wait_random_exponential(multiplier=initial, max=maximum),
        sleep=sleep,
        before_sleep=before_sleep or log_retry,
        reraise=True,
    )


def call(
    fn: Callable[[], T], is_transient: Callable[[BaseException], bool], *, deadline: float | None = 30.0, what: str = ""
) -> T:
    """``fn()`` under :func:`policy`."""
    return policy(is_transient, deadline=deadline, what=what)(fn)
