"""Filter and batch: which trigger an object event belongs to, and when a data version is complete.

Pure logic with an injectable clock; no I/O.

- marker mode: the version is complete when one of ``markers`` lands directly in the version
  folder; the dedupe key is (bucket, marker object, marker generation).
- debounce mode: the version is complete after ``quietSeconds`` without new objects in it; the key
  is (bucket, version folder, 0), or the newest overwriting generation when overwrites retrain.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jobgen.watcher.config import Trigger
from jobgen.watcher.events import ARCHIVE, DELETE, FINALIZE, METADATA_UPDATE, ObjectEvent


@lru_cache(maxsize=256)
def glob_regex(glob: str) -> re.Pattern[str]:
    """GCS matchGlob syntax → regex: ``*`` (no '/'), ``**`` (any, '/' too), ``?``, ``[..]``, ``{a,b}``."""
    out, i, depth = [], 0, 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1:end]
                neg = body.startswith("!") or body.startswith("^")
                body = body[1:] if neg else body
                out.append(f"[{'^' if neg else ''}{re.escape(body).replace(chr(92) + '-', '-')}]")
                i = end + 1
                continue
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + "\\Z", re.DOTALL)


@dataclass(frozen=True)
class Skip:
    """The event belongs to a trigger but deliberately starts nothing (acked, counted)."""

    trigger: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A completed data version: one job, identified by (bucket, key_object, generation)."""

    trigger: str
    bucket: str
    version_prefix: str
    key_object: str
    generation: int
    source_object: str  # the object that triggered it (marker, or newest object in the batch)

    @property
    def data_uri(self) -> str:
        return f"gs://{self.bucket}/{self.version_prefix}"


@dataclass(frozen=True)
class Pending:
    """Debounce mode: the event adds to a version that is not complete yet."""

    trigger: str
    bucket: str
    version_prefix: str
    generation: int
    overwrite: bool
    source_object: str


Decision = Skip | Candidate | Pending


class Rule:
    """One compiled trigger."""

    def __init__(self, trig: Trigger) -> None:
        self.trigger = trig
        self.glob = glob_regex(trig.glob) if trig.glob else None

    def version_of(self, name: str) -> str | None:
        """The version folder (with trailing '/') that object ``name`` lies in, or None."""
        t = self.trigger
        if not name.startswith(t.prefix):
            return None
        parts = name[len(t.prefix):].split("/")
        if len(parts) <= t.version_depth or any(not p for p in parts[:t.version_depth]):
            return None
        return t.prefix + "".join(p + "/" for p in parts[:t.version_depth])

    def matches(self, ev: ObjectEvent) -> bool:
        t = self.trigger
        if ev.bucket != t.bucket or not ev.name.startswith(t.prefix):
            return False
        return self.glob is None or self.glob.match(ev.name) is not None

    def decide(self, ev: ObjectEvent) -> Decision | None:
        """None: not this trigger's object. Otherwise what to do with it."""
        t = self.trigger
        if not self.matches(ev):
            return None
        version = self.version_of(ev.name)
        if version is None:
            return Skip(t.name, "outside_version")
        if ev.event_type in (DELETE, ARCHIVE):
            return Skip(t.name, "deleted")
        generation = ev.generation
        key_object = ev.name
        overwrite = False
        if ev.event_type == METADATA_UPDATE:
            if t.metadata_updates == "ignore":
                return Skip(t.name, "metadata_update")
            key_object = f"{ev.name}#metageneration={ev.metageneration}"
        elif ev.event_type == FINALIZE and ev.overwrote_generation is not None:
            if t.overwrites == "ignore":
                return Skip(t.name, "overwrite")
            overwrite = True
        if t.completion == "marker":
            base = ev.name[len(version):]
            if base not in t.markers:
                return Skip(t.name, "not_marker")
            return Candidate(t.name, ev.bucket, version, key_object, generation, ev.name)
        return Pending(t.name, ev.bucket, version, generation, overwrite, ev.name)


class Rules:
    def __init__(self, triggers: Iterable[Trigger]) -> None:
        self.rules = [Rule(t) for t in triggers]

    def decide(self, ev: ObjectEvent) -> list[Decision]:
        """Decisions of every trigger the event matches (empty: no trigger wants it)."""
        out = []
        for rule in self.rules:
            d = rule.decide(ev)
            if d is not None:
                out.append(d)
        return out


@dataclass
class _Batch:
    first_seen: float
    last_seen: float
    generation: int = 0
    overwrite_generation: int = 0
    source_object: str = ""
    handles: list[Any] = field(default_factory=list)


class Debouncer:
    """Holds debounce-mode versions until they are quiet; bounded in versions and handles.

    ``add`` returns False when full (the caller nacks, so Pub/Sub redelivers later)."""

    def __init__(self, quiet: Callable[[str], float], max_versions: int = 1000, max_handles: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.max_versions = max_versions
        self.max_handles = max_handles
        self.clock = clock
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, str, str], _Batch] = {}
        self._handles = 0

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, p: Pending, handle: Any = None) -> bool:
        key = (p.trigger, p.bucket, p.version_prefix)
        now = self.clock()
        with self._lock:
            batch = self._batches.get(key)
            if batch is None:
                if len(self._batches) >= self.max_versions or self._handles >= self.max_handles:
                    return False
                batch = self._batches[key] = _Batch(now, now)
            if self._handles >= self.max_handles:
                return False
            batch.last_seen = now
            if p.generation >= batch.generation:
                batch.generation, batch.source_object = p.generation, p.source_object
            if p.overwrite:
                batch.overwrite_generation = max(batch.overwrite_generation, p.generation)
            if handle is not None:
                batch.handles.append(handle)
                self._handles += 1
        return True

    def due(self) -> list[tuple[Candidate, list[Any]]]:
        """Versions quiet for their trigger's window: removed and returned with their handles."""
        now = self.clock()
        out = []
        with self._lock:
            for key, batch in list(self._batches.items()):
                trigger, bucket, version = key
                if now - batch.last_seen >= self.quiet(trigger):
                    del self._batches[key]
                    self._handles -= len(batch.handles)
                    cand = Candidate(trigger, bucket, version, version, batch.overwrite_generation,
                                     batch.source_object)
                    out.append((cand, batch.handles))
        return out

    def drain(self) -> list[Any]:
        """Every held handle (on shutdown: they are released for redelivery)."""
        with self._lock:
            handles = [h for b in self._batches.values() for h in b.handles]
            self._batches.clear()
            self._handles = 0
        return handles
