"""Polling helpers: wait for an HTTP(S) health endpoint, or any condition."""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ClusterError


def http_ok(
    host: str,
    port: int,
    path: str,
    *,
    tls: bool = False,
    ca: Path | None = None,
    cert: tuple[Path, Path] | None = None,
    timeout: float = 2.0,
) -> bool:
    try:
        if tls:
            ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()  # noqa: S323 - a readiness probe without a CA
            if cert:
                ctx.load_cert_chain(str(cert[0]), str(cert[1]))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def until(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], str | None] | None = None) -> None:
    """Poll `check` until True. `alive` returns an error message when a process we wait on has died."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if check():
            return
        if alive is not None:
            problem = alive()
            if problem:
                raise ClusterError(problem)
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
