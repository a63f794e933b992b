"""Small GCS helpers shared by the data, checkpoint and registry code (no torch import).

Everything goes through the google-cloud-storage client, so ``STORAGE_EMULATOR_HOST`` points it at
fake-gcs-server in tests and at GCS in a pod (workload identity gives the credentials).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

log = logging.getLogger("trainer")

if TYPE_CHECKING:
    from google.cloud import storage  # imported lazily at run time (start-up)

T = TypeVar("T")


class TrainerError(Exception):
    """An error with a message meant for the user: printed without a traceback, exit code 2."""


@dataclass(frozen=True)
class GcsUri:
    bucket: str
    path: str  # no leading or trailing slash; may be empty

    @classmethod
    def parse(cls, uri: str, what: str = "URI") -> GcsUri:
        if not isinstance(uri, str) or not uri.startswith("gs://"):
            raise TrainerError(f"{what} must be a gs://bucket/path URI, got {uri!r}")
        rest = uri[len("gs://") :]
        bucket, _, path = rest.partition("/")
        if not bucket or any(c in bucket for c in " \t\n#?*[]"):
            raise TrainerError(f"{what} has no valid bucket name: {uri!r}")
        return cls(bucket, path.strip("/"))

    def join(self, *parts: str) -> GcsUri:
        path = "/".join(p.strip("/") for p in (self.path, *parts) if p.strip("/"))
        return GcsUri(self.bucket, path)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.path}" if self.path else f"gs://{self.bucket}"


def client() -> Any:
    """One storage client per process and environment: anonymous against the emulator, ADC otherwise.

    Keyed by the variables the client is built from, so a process whose STORAGE_EMULATOR_HOST or
    project changes (a test session, a notebook) never talks to the endpoint of an earlier one."""
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
    return _client(os.environ.get("STORAGE_EMULATOR_HOST") or None, project or None)


def forget_clients() -> None:
    """Drop the cached clients: a forked DataLoader worker must not share the parent's connections."""
    _client.cache_clear()


@functools.cache
def _client(emulator: str | None, project: str | None) -> Any:
    from google.cloud import storage

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "local-project", credentials=AnonymousCredentials())
    return storage.Client(project=project)


def blob(uri: GcsUri, generation: int | None = None) -> storage.Blob:
    return client().bucket(uri.bucket).blob(uri.path, generation=generation)


def _transient(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError) and exc.code in (408, 429, 500, 502, 503, 504):
        return True
    if requests_transient(exc):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def requests_transient(exc: BaseException) -> bool:
    """A connection error or timeout of requests/urllib3 (the storage client's transport), by class
    name: requests ships no type stubs and its errors are not the builtin ConnectionError."""
    names = {c.__name__ for c in type(exc).__mro__ if c.__module__.startswith(("requests", "urllib3"))}
    return bool(
        names
        & {
            "ConnectionError",
            "Timeout",
            "ChunkedEncodingError",
            "ProtocolError",
            "ReadTimeoutError",
            "NewConnectionError",
            "MaxRetryError",
        }
    )


RETRY_SECONDS_ENV = "STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0  # google-cloud-storage's own default deadline for one call


def retry_seconds() -> float:
    """How long one storage operation is retried before it fails as transient (exit 138):
    ``STORAGE_RETRY_SECONDS``, default 120 s."""
    raw = os.environ.get(RETRY_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:
        raise TrainerError(f"{RETRY_SECONDS_ENV} must be a number of seconds in (0, 3600], got {raw!r}")
    return value


def policy(what: str, deadline: float | None = None, initial: float = 0.2, maximum: float = 10.0) -> Any:
    """The trainer's one retry policy: google-api-core's ``Retry`` (the storage client's own
    machinery): exponential backoff with jitter, only errors ``_transient`` accepts, for at most
    ``deadline`` seconds (default :func:`retry_seconds`); then ``RetryError`` (exit 138)."""
    from google.api_core.retry import Retry

    def on_error(exc: Exception) -> None:
        log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)

    return Retry(
        predicate=_transient,
        initial=initial,
        maximum=maximum,
        multiplier=2.0,
        timeout=retry_seconds() if deadline is None else deadline,
        on_error=on_error,
    )


def with_retries(fn: Callable[[], T], what: str, deadline: float | None = None, initial: float = 0.2) -> T:
    """``fn()`` under :func:`policy`: for an operation of several storage calls (a listing with its
    pages, an upload that starts a new session when the server lost the old one). The calls inside
    pass ``retry=None``, so this is the only retry layer.

    Non-transient errors (404, 403, precondition failures, …) are raised at once."""
    result: T = policy(what, deadline, initial)(fn)()
    return result


def list_blobs(bucket: str, what: str, **kwargs: Any) -> list[Any]:
    """Every object of a listing (all its pages) under :func:`policy`, retried as a whole."""
    return with_retries(lambda: list(client().list_blobs(bucket, retry=None, **kwargs)), what)


def call(method: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T:
    """One google-cloud-storage call, ``method(*args, **kwargs)``, under :func:`policy` (its own
    retry turned off: one layer, one deadline)."""
    return with_retries(lambda: method(*args, retry=None, **kwargs), what)
