"""Durable state shared by every replica: small JSON objects in the state bucket.

    <prefix>claims/<trigger>/<sha256(key)>.json    one per (trigger, data key): the version was handled
    <prefix>pending/<trigger>/<sha256(version)>.json  a debounce version waiting for quiet
    <prefix>queue/<trigger>/<order>-<sha256(key)>.json  a version queued behind a running job (Forbid)
    <prefix>newest/<trigger>.json                  the newest data generation started (Replace ordering)
    <prefix>poll/<trigger>.json                    the polling source's progress

A claim is created with ``ifGenerationMatch=0``: of several replicas that race, exactly one create
succeeds, and every later decision reads it back. Objects are never rewritten except through
``ifGenerationMatch=<generation read>`` (compare-and-swap). The bucket's lifecycle rule deletes
objects older than ``state.retentionDays``; events older than that are ignored (docs/watcher.md).

:class:`Blobs` is the narrow interface the stores need; :class:`GcsBlobs` implements it with
google-cloud-storage (its own retries disabled: the watcher's one policy retries), and
:class:`MemBlobs` in memory for unit tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from jobgen.watcher.retrying import Transient

GCS_TIMEOUT = (5.0, 20.0)


@dataclass(frozen=True)
class Stored:
    name: str
    data: bytes
    generation: int


@dataclass(frozen=True)
class Listed:
    name: str
    generation: int
    updated: float  # POSIX seconds


class Blobs(Protocol):
    def create(self, name: str, data: bytes) -> Stored | None:
        """Create ``name`` only if absent (ifGenerationMatch=0); None if it exists."""

    def get(self, name: str) -> Stored | None: ...

    def replace(self, name: str, data: bytes, generation: int) -> Stored | None:
        """Overwrite only if the stored generation is ``generation``; None if it is not."""

    def delete(self, name: str, generation: int | None = None) -> None:
        """Delete (only that generation, when given); absent is fine."""

    def list(self, prefix: str) -> Iterator[Listed]: ...

    def check(self) -> None:
        """Raise Transient unless the store is reachable and usable."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _load(stored: Stored) -> dict[str, Any] | None:
    try:
        doc = json.loads(stored.data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


# --- claims ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """The durable record that (trigger, key) was handled: by the job ``name`` with ``uid``
    (state ``created``), or deliberately not (``superseded`` by a newer version)."""

    trigger: str
    key: str
    state: str  # created | superseded
    name: str = ""
    kind: str = ""
    namespace: str = ""
    uid: str = ""
    released: bool = False  # the job's finalizer was removed (it may now be deleted by its TTL)
    at: str = field(default_factory=_now)
    generation: int = 0  # of the object (not part of its content)

    def content(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("generation")
        return doc


class ClaimStore:
    def __init__(self, blobs: Blobs, prefix: str = "") -> None:
        self.blobs, self.prefix = blobs, prefix

    def path(self, trigger: str, key: str) -> str:
        return f"{self.prefix}claims/{trigger}/{_sha(key)}.json"

    def _parse(self, stored: Stored) -> Claim | None:
        doc = _load(stored)
        if doc is None:
            return None
        fields = {k: v for k, v in doc.items() if k in Claim.__dataclass_fields__ and k != "generation"}
        try:
            return Claim(**fields, generation=stored.generation)
        except TypeError:
            return None

    def get(self, trigger: str, key: str) -> Claim | None:
        stored = self.blobs.get(self.path(trigger, key))
        if stored is None:
            return None
        claim = self._parse(stored)
        if claim is None or claim.key != key:
            # A corrupt claim, or a sha256 collision: never treat it as this key's record.
            raise ClaimCorrupt(self.path(trigger, key))
        return claim

    def put(self, claim: Claim) -> tuple[Claim, bool]:
        """Create the claim if there is none. Returns (the claim that is stored, whether it is ours)."""
        path = self.path(claim.trigger, claim.key)
        stored = self.blobs.create(path, _dump(claim.content()))
        if stored is not None:
            return Claim(**{**claim.content(), "generation": stored.generation}), True
        existing = self.get(claim.trigger, claim.key)
        if existing is None:  # created and deleted in between (retention): try again
            raise Transient("gcs", f"claim {path} vanished while it was being read")
        return existing, False

    def mark_released(self, claim: Claim) -> None:
        if claim.released:
            return
        updated = Claim(**{**claim.content(), "released": True})
        self.blobs.replace(self.path(claim.trigger, claim.key), _dump(updated.content()), claim.generation)


class ClaimCorrupt(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(f"claim object {path} is unreadable or belongs to another key")


# --- pending debounce versions -----------------------------------------------------------------------
@dataclass(frozen=True)
class PendingVersion:
    """A debounce version seen but not yet quiet. ``last_seen`` is written at most every few seconds
    (object update rate limits), so readers add that lag before calling a version quiet."""

    trigger: str
    bucket: str
    version: str
    last_seen: float  # POSIX seconds
    newest_generation: int = 0
    source_object: str = ""
    overwrite_generation: int = 0
    generation: int = 0  # of the object

    def content(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("generation")
        return doc


class PendingStore:
    def __init__(self, blobs: Blobs, prefix: str = "") -> None:
        self.blobs, self.prefix = blobs, prefix

    def path(self, trigger: str, bucket: str, version: str) -> str:
        return f"{self.prefix}pending/{trigger}/{_sha(bucket + '/' + version)}.json"

    def _parse(self, stored: Stored) -> PendingVersion | None:
        doc = _load(stored)
        if doc is None:
            return None
        try:
            return PendingVersion(
                trigger=str(doc["trigger"]),
                bucket=str(doc["bucket"]),
                version=str(doc["version"]),
                last_seen=float(doc["last_seen"]),
                newest_generation=int(doc.get("newest_generation") or 0),
                source_object=str(doc.get("source_object") or ""),
                overwrite_generation=int(doc.get("overwrite_generation") or 0),
                generation=stored.generation,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def get(self, trigger: str, bucket: str, version: str) -> PendingVersion | None:
        stored = self.blobs.get(self.path(trigger, bucket, version))
        return self._parse(stored) if stored else None

    def merge(self, rec: PendingVersion) -> PendingVersion:
        """Create the record, or raise its fields (last_seen, generations) by compare-and-swap."""
        path = self.path(rec.trigger, rec.bucket, rec.version)
        for _ in range(20):
            current = self.get(rec.trigger, rec.bucket, rec.version)
            if current is None:
                stored = self.blobs.create(path, _dump(rec.content()))
                if stored is not None:
                    return PendingVersion(**{**rec.content(), "generation": stored.generation})
                continue
            newer = rec.newest_generation > current.newest_generation
            merged = PendingVersion(
                rec.trigger,
                rec.bucket,
                rec.version,
                max(rec.last_seen, current.last_seen),
                max(rec.newest_generation, current.newest_generation),
                rec.source_object if newer else current.source_object,
                max(rec.overwrite_generation, current.overwrite_generation),
            )
            if merged.content() == current.content():
                return current
            stored = self.blobs.replace(path, _dump(merged.content()), current.generation)
            if stored is not None:
                return PendingVersion(**{**merged.content(), "generation": stored.generation})
        raise Transient("gcs", f"{path}: too much contention")

    def all(self) -> list[PendingVersion]:
        out = []
        for item in self.blobs.list(f"{self.prefix}pending/"):
            stored = self.blobs.get(item.name)
            rec = self._parse(stored) if stored else None
            if rec is not None:
                out.append(rec)
        return out

    def remove(self, rec: PendingVersion) -> bool:
        """Delete the record if it is unchanged since ``rec`` was read (else new objects arrived)."""
        path = self.path(rec.trigger, rec.bucket, rec.version)
        current = self.blobs.get(path)
        if current is None:
            return True
        if current.generation != rec.generation:
            return False
        self.blobs.delete(path, rec.generation)
        return True


# --- the Forbid queue ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueEntry:
    path: str
    trigger: str
    request: dict[str, Any]  # JobRequest fields


class QueueStore:
    """One object per queued request: entries never block or overwrite one another. Data versions
    sort by generation, retrain requests by arrival."""

    def __init__(self, blobs: Blobs, prefix: str = "") -> None:
        self.blobs, self.prefix = blobs, prefix

    def add(self, trigger: str, order: int, key: str, request: dict[str, Any]) -> None:
        path = f"{self.prefix}queue/{trigger}/{order:020d}-{_sha(key)[:24]}.json"
        self.blobs.create(path, _dump({"trigger": trigger, "request": request}))

    def triggers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self.blobs.list(f"{self.prefix}queue/"):
            trigger = item.name[len(self.prefix) + len("queue/") :].split("/", 1)[0]
            out.setdefault(trigger, []).append(item.name)
        return {t: sorted(paths) for t, paths in out.items()}

    def read(self, path: str) -> QueueEntry | None:
        stored = self.blobs.get(path)
        doc = _load(stored) if stored else None
        if doc is None or not isinstance(doc.get("request"), dict):
            return None
        return QueueEntry(path, str(doc.get("trigger")), doc["request"])

    def remove(self, path: str) -> None:
        self.blobs.delete(path)


# --- newest generation started per trigger (Replace) ---------------------------------------------------
class NewestStore:
    def __init__(self, blobs: Blobs, prefix: str = "") -> None:
        self.blobs, self.prefix = blobs, prefix

    def advance(self, trigger: str, generation: int) -> bool:
        """Record ``generation`` as the newest started; False if a newer one was started already."""
        path = f"{self.prefix}newest/{trigger}.json"
        for _ in range(50):
            current = self.blobs.get(path)
            if current is None:
                if self.blobs.create(path, _dump({"generation": generation})) is not None:
                    return True
                continue
            stored = int((_load(current) or {}).get("generation") or 0)
            if stored > generation:
                return False
            if (
                stored == generation
                or self.blobs.replace(path, _dump({"generation": generation}), current.generation) is not None
            ):
                return True
        raise Transient("gcs", f"{path}: too much contention")


# --- the polling source's progress ---------------------------------------------------------------------
class JsonDoc:
    """One JSON document updated by compare-and-swap."""

    def __init__(self, blobs: Blobs, path: str) -> None:
        self.blobs, self.path = blobs, path

    def read(self) -> tuple[dict[str, Any], int]:
        stored = self.blobs.get(self.path)
        if stored is None:
            return {}, 0
        return _load(stored) or {}, stored.generation

    def write(self, doc: dict[str, Any], generation: int) -> bool:
        if generation == 0:
            return self.blobs.create(self.path, _dump(doc)) is not None
        return self.blobs.replace(self.path, _dump(doc), generation) is not None


# --- implementations of Blobs ---------------------------------------------------------------------------
class GcsBlobs:
    """:class:`Blobs` on a GCS bucket (google-cloud-storage; its built-in retries are off)."""

    def __init__(self, bucket: str, client: Any = None, on_ok: Callable[[str], None] | None = None) -> None:
        self.bucket_name = bucket
        self._client = client
        self._bucket: Any = None
        self.on_ok = on_ok or (lambda _b: None)
        self.calls = 0

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            if self._client is None:
                from google.cloud import storage

                self._client = storage.Client()
            self._bucket = self._client.bucket(self.bucket_name)
        return self._bucket

    def _do(self, fn: Callable[[], Any]) -> Any:
        self.calls += 1
        try:
            out = fn()
        except Exception as exc:
            raise _translate(exc, self.bucket_name) from None
        self.on_ok("gcs")
        return out

    def create(self, name: str, data: bytes) -> Stored | None:
        blob = self.bucket.blob(name)
        try:
            self._do(
                lambda: blob.upload_from_string(
                    data, content_type="application/json", if_generation_match=0, retry=None, timeout=GCS_TIMEOUT
                )
            )
        except _Precondition:
            return None
        return Stored(name, data, int(blob.generation or 0))

    def get(self, name: str) -> Stored | None:
        blob = self.bucket.blob(name)
        try:
            data = self._do(lambda: blob.download_as_bytes(retry=None, timeout=GCS_TIMEOUT))
        except _Missing:
            return None
        return Stored(name, data, int(blob.generation or 0))

    def replace(self, name: str, data: bytes, generation: int) -> Stored | None:
        blob = self.bucket.blob(name)
        try:
            self._do(
                lambda: blob.upload_from_string(
                    data,
                    content_type="application/json",
                    if_generation_match=generation,
                    retry=None,
                    timeout=GCS_TIMEOUT,
                )
            )
        except (_Precondition, _Missing):
            return None
        return Stored(name, data, int(blob.generation or 0))

    def delete(self, name: str, generation: int | None = None) -> None:
        blob = self.bucket.blob(name)
        with contextlib.suppress(_Missing, _Precondition):
            self._do(lambda: blob.delete(if_generation_match=generation, retry=None, timeout=GCS_TIMEOUT))

    def check(self) -> None:
        """The bucket exists and its objects can be listed (raises Transient otherwise)."""
        try:
            self._do(
                lambda: list(
                    self.bucket.client.list_blobs(self.bucket_name, max_results=1, retry=None, timeout=GCS_TIMEOUT)
                )
            )
        except _Missing:
            raise Transient("gcs", f"state bucket gs://{self.bucket_name} does not exist") from None

    def list(self, prefix: str) -> Iterator[Listed]:
        it = self._do(
            lambda: self.bucket.client.list_blobs(self.bucket_name, prefix=prefix, retry=None, timeout=GCS_TIMEOUT)
        )
        pages = iter(self._do(lambda: it.pages))
        while True:
            page = self._do(lambda: next(pages, None))
            if page is None:
                return
            for b in page:
                yield Listed(b.name, int(b.generation or 0), b.updated.timestamp() if b.updated else 0.0)


class _Missing(Exception):
    pass


class _Precondition(Exception):
    pass


def _translate(exc: Exception, where: str) -> Exception:
    """google-cloud-storage/requests errors → _Missing, _Precondition, Transient, or the error."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return _Missing()
    if isinstance(exc, gexc.PreconditionFailed):
        return _Precondition()
    if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError, gexc.Unauthorized, gexc.Forbidden)):
        return Transient("gcs", f"gs://{where}: {str(exc).splitlines()[0][:200]}")
    if isinstance(exc, gexc.GoogleAPICallError):
        return exc
    mod = type(exc).__module__
    if isinstance(exc, (OSError, TimeoutError)) or mod.startswith(("requests", "urllib3", "google.auth")):
        return Transient("gcs", f"gs://{where} unreachable: {type(exc).__name__}: {str(exc)[:160]}")
    return exc


class MemBlobs:
    """:class:`Blobs` in memory, with the same compare-and-swap semantics (unit tests)."""

    def check(self) -> None:
        with self._lock:
            self._tick()

    def __init__(self) -> None:
        self.objects: dict[str, Stored] = {}
        self.times: dict[str, float] = {}
        self._lock = threading.Lock()
        self._gen = 0
        self.fail = 0  # the next `fail` calls raise Transient

    def _tick(self) -> int:
        if self.fail:
            self.fail -= 1
            raise Transient("gcs", "injected failure")
        self._gen += 1
        return self._gen

    def create(self, name: str, data: bytes) -> Stored | None:
        with self._lock:
            gen = self._tick()
            if name in self.objects:
                return None
            self.objects[name] = s = Stored(name, data, gen)
            self.times[name] = time.time()
            return s

    def get(self, name: str) -> Stored | None:
        with self._lock:
            self._tick()
            return self.objects.get(name)

    def replace(self, name: str, data: bytes, generation: int) -> Stored | None:
        with self._lock:
            gen = self._tick()
            cur = self.objects.get(name)
            if cur is None or cur.generation != generation:
                return None
            self.objects[name] = s = Stored(name, data, gen)
            self.times[name] = time.time()
            return s

    def delete(self, name: str, generation: int | None = None) -> None:
        with self._lock:
            self._tick()
            cur = self.objects.get(name)
            if cur is not None and (generation is None or cur.generation == generation):
                del self.objects[name]

    def list(self, prefix: str) -> Iterator[Listed]:
        with self._lock:
            self._tick()
            items = [
                Listed(n, s.generation, self.times[n]) for n, s in sorted(self.objects.items()) if n.startswith(prefix)
            ]
        return iter(items)


@dataclass
class StateStores:
    claims: ClaimStore
    pending: PendingStore
    queue: QueueStore
    newest: NewestStore
    blobs: Blobs
    prefix: str

    @classmethod
    def over(cls, blobs: Blobs, prefix: str = "") -> StateStores:
        return cls(
            ClaimStore(blobs, prefix),
            PendingStore(blobs, prefix),
            QueueStore(blobs, prefix),
            NewestStore(blobs, prefix),
            blobs,
            prefix,
        )

    def doc(self, name: str) -> JsonDoc:
        return JsonDoc(self.blobs, f"{self.prefix}{name}")
