"""Debounce mode: a version is complete after ``quietSeconds`` without new objects.

No message is held for the window. Each object event updates the version's durable pending
record (``pending/<trigger>/<sha256(version)>`` in the state bucket) and is acked at once, so a
version of any size streams through the default flow control, and a restart or another replica
picks the pending version up from the bucket.

The record's ``last_seen`` is rewritten at most every ``lag`` seconds per version (GCS allows about
one write per second per object); a version is due when ``now - last_seen >= quiet + lag``,
checked against a fresh read of the record, so an event seen by another replica up to ``lag``
seconds after the last write still keeps it pending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from jobgen.watcher.sensor.rules import Candidate, Pending
from jobgen.watcher.state import PendingStore, PendingVersion

Key = tuple[str, str, str]


@dataclass
class _Seen:
    last_seen: float  # newest event this replica saw (POSIX)
    written: float  # last_seen value of the durable record as last read or written
    newest_generation: int = 0
    source_object: str = ""
    overwrite_generation: int = 0


class Debounce:
    def __init__(
        self,
        store: PendingStore,
        quiet: Callable[[str], float],
        lag: Callable[[str], float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.quiet = quiet
        self.lag = lag or (lambda t: min(5.0, max(1.0, quiet(t) / 4)))
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Key, _Seen] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, p: Pending) -> None:
        """Record an object of a pending version (durably when the record is stale or new)."""
        key = (p.trigger, p.bucket, p.version_prefix)
        now = self.clock()
        overwrite = p.generation if p.overwrite else 0
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = _Seen(now, 0.0)
            seen.last_seen = max(seen.last_seen, now)
            if p.generation >= seen.newest_generation:
                seen.newest_generation, seen.source_object = p.generation, p.source_object
            stale = now - seen.written >= self.lag(p.trigger) or overwrite > seen.overwrite_generation
            seen.overwrite_generation = max(seen.overwrite_generation, overwrite)
            previous = seen.written
            if stale:
                seen.written = now  # this thread writes; concurrent events of the version do not
            rec = PendingVersion(
                p.trigger,
                p.bucket,
                p.version_prefix,
                seen.last_seen,
                seen.newest_generation,
                seen.source_object,
                seen.overwrite_generation,
            )
        if stale:
            try:
                self.store.merge(rec)
            except BaseException:
                with self._lock:
                    seen.written = previous  # not written: the next event (or the retry) writes it
                raise

    def refresh(self) -> int:
        """Merge the durable records (other replicas', or a previous process's) into memory."""
        records = self.store.all()
        with self._lock:
            for rec in records:
                key = (rec.trigger, rec.bucket, rec.version)
                seen = self._seen.setdefault(key, _Seen(rec.last_seen, rec.last_seen))
                seen.written = max(seen.written, rec.last_seen)
                seen.last_seen = max(seen.last_seen, rec.last_seen)
                if rec.newest_generation > seen.newest_generation:
                    seen.newest_generation, seen.source_object = rec.newest_generation, rec.source_object
                seen.overwrite_generation = max(seen.overwrite_generation, rec.overwrite_generation)
        return len(records)

    def due(self) -> list[tuple[Candidate, PendingVersion]]:
        """Versions quiet for their trigger's window (re-checked against the durable record)."""
        now = self.clock()
        with self._lock:
            maybe = [
                k
                for k, s in self._seen.items()
                if now - max(s.last_seen, s.written + self.lag(k[0])) >= self.quiet(k[0])
            ]
        out = []
        for trigger, bucket, version in maybe:
            rec = self.store.get(trigger, bucket, version)
            if rec is None:  # fired by another replica (or us) already
                with self._lock:
                    self._seen.pop((trigger, bucket, version), None)
                continue
            with self._lock:
                seen = self._seen.get((trigger, bucket, version))
                last = max(rec.last_seen + self.lag(trigger), seen.last_seen if seen else 0.0)
                if seen is not None:
                    seen.written = max(seen.written, rec.last_seen)
                gen, source, over = rec.newest_generation, rec.source_object, rec.overwrite_generation
                if seen is not None:
                    over = max(over, seen.overwrite_generation)
                    if seen.newest_generation > gen:
                        gen, source = seen.newest_generation, seen.source_object
            if now - last < self.quiet(trigger):
                continue
            cand = Candidate(trigger, bucket, version, version, over, gen, source or version)
            out.append((cand, rec))
        return out

    def done(self, rec: PendingVersion) -> None:
        """The version fired: drop its record unless new objects arrived since it was read."""
        key = (rec.trigger, rec.bucket, rec.version)
        if self.store.remove(rec):
            with self._lock:
                seen = self._seen.get(key)
                if seen is not None and seen.last_seen <= rec.last_seen:
                    self._seen.pop(key, None)
