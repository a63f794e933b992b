"""``gs://bucket/path`` URIs: the one parser jobgen uses (specs, watcher, sweeps, pipelines)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_GS_URI = re.compile(r"^gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(/[^\x00-\x1f\x7f]*)?$")


@dataclass(frozen=True)
class GsUri:
    bucket: str
    path: str  # no leading '/'; '' for the bucket itself

    @property
    def prefix(self) -> str:
        """The path as a listing prefix: '' or ending with '/'."""
        return self.path.rstrip("/") + "/" if self.path.strip("/") else ""

    def join(self, *parts: str) -> GsUri:
        path = "/".join(p.strip("/") for p in (self.path, *parts) if p.strip("/"))
        return GsUri(self.bucket, path)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.path}" if self.path else f"gs://{self.bucket}"


def parse_gs(value: str) -> GsUri:
    """Parse ``gs://<bucket>[/<path>]``; ValueError says what was expected."""
    match = _GS_URI.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(
            f"{value!r} is not a gs:// URI; expected gs://<bucket>[/<path>] with a bucket name of "
            "3-222 lower-case letters, digits, '-', '_' or '.'"
        )
    path = (match.group(2) or "").removeprefix("/")
    if "//" in value[len("gs://") :]:
        raise ValueError(f"{value!r} has an empty path segment ('//'); expected gs://<bucket>/<path>")
    return GsUri(match.group(1), path)
