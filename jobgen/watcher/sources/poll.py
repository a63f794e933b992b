"""The polling source, for buckets without Pub/Sub notifications.

Marker mode: each poll makes ONE listing, of the markers only (``matchGlob`` =
``<prefix>*/…/<marker>``; objects the server returns that do not match are filtered here too), so
its cost is one list call per 1,000 completed versions, and nothing at all for folders that never
complete (abandoned folders). Markers are handled in the order of their generation (GCS generations
are timestamps), not of their names: ``v10`` after ``v9`` is not skipped. Every new marker is
handled; nothing is capped.

Debounce mode: each poll lists the trigger's objects (one call per 1,000 objects) and fires the
versions whose newest object is older than ``quietSeconds``.

Progress (``poll/<trigger>.json`` in the state bucket: version → generation handled) is written by
compare-and-swap and only lets a poll skip known versions; exactly-once comes from the claims, so
two replicas polling at once are safe. Entries older than ``state.retentionDays`` are dropped.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from jobgen.watcher.config import PollSource, Trigger
from jobgen.watcher.obs import LOG
from jobgen.watcher.retrying import Stopped, Transient
from jobgen.watcher.sensor.events import Rejected, check_object_name
from jobgen.watcher.sensor.rules import Candidate, Rule, glob_matcher
from jobgen.watcher.sensor.sensor import Sensor
from jobgen.watcher.state import StateStores


class Poller:
    name = "poll"

    def __init__(
        self,
        cfg: PollSource,
        sensor: Sensor,
        stores: StateStores,
        triggers: list[Trigger],
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.sensor = sensor
        self.stores = stores
        self.triggers = triggers
        self._client = client
        self.clock = clock
        self.calls = 0  # list calls (pages) of the last poll, data bucket only
        self.items = 0  # names those calls returned
        self.last_poll_ok = 0.0
        self.thread: threading.Thread | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client()
        return self._client

    def _list(self, bucket: str, prefix: str, glob: str | None) -> list[tuple[str, int, float]]:
        kwargs: dict[str, Any] = {"prefix": prefix, "retry": None, "timeout": (5.0, 60.0)}
        if glob:
            kwargs["match_glob"] = glob
        matcher = glob_matcher(glob) if glob else None
        out = []
        try:
            it = self.client.list_blobs(bucket, **kwargs)
            for page in it.pages:
                self.calls += 1
                for b in page:
                    self.items += 1
                    if matcher is None or matcher.match(b.name):
                        out.append((b.name, int(b.generation or 0), b.updated.timestamp() if b.updated else 0.0))
        except Exception as exc:
            raise Transient("gcs", f"listing gs://{bucket}/{prefix}: {type(exc).__name__}: {str(exc)[:200]}") from None
        return out

    def poll_once(self) -> int:
        """One poll of every trigger; returns the number of versions handed to the sensor."""
        self.calls = self.items = 0
        handled = 0
        for trig in self.triggers:
            handled += self._poll_trigger(trig)
        self.last_poll_ok = time.monotonic()
        return handled

    def _poll_trigger(self, trig: Trigger) -> int:
        rule = Rule(trig)
        doc_store = self.stores.doc(f"poll/{trig.name}.json")
        doc, _ = doc_store.read()
        seen: dict[str, list[Any]] = {
            k: v for k, v in (doc.get("seen") or {}).items() if isinstance(v, list) and len(v) == 2
        }
        found: list[tuple[int, float, str, str]] = []  # (generation, updated, version, object)
        if trig.completion == "marker":
            for marker in trig.markers:
                pattern = trig.prefix + "*/" * trig.version_depth + _glob_escape(marker)
                for name, gen, updated in self._list(trig.bucket, trig.prefix, pattern):
                    version = rule.version_of(name)
                    if version is not None and name == version + marker:
                        found.append((gen, updated, version, name))
        else:
            newest: dict[str, tuple[int, float, str]] = {}
            for name, gen, updated in self._list(trig.bucket, trig.prefix, trig.glob):
                version = rule.version_of(name)
                if version is None:
                    continue
                g, u, _ = newest.get(version, (0, 0.0, ""))
                newest[version] = (max(g, gen), max(u, updated), name if updated >= u else newest[version][2])
            now = self.clock()
            for version, (gen, updated, name) in newest.items():
                if now - updated >= trig.quiet_seconds:
                    found.append((gen, updated, version, name))
        found.sort()  # by generation: arrival order, whatever the names
        limits = self.sensor.config.limits
        done = 0
        for gen, updated, version, name in found:
            prev = seen.get(version)
            if prev is not None and prev[0] == gen:
                continue
            if self.sensor.expired(updated):
                seen[version] = [gen, updated]
                continue
            try:
                check_object_name(name, limits.max_object_name_bytes, limits.allow_unicode_names)
            except Rejected as rej:
                self.sensor.metrics.rejected.labels(rej.reason).inc()
                LOG.warning("version rejected", extra={"reason": rej.reason, "detail": rej.detail[:300]})
                seen[version] = [gen, updated]
                continue
            key_gen = 0
            if prev is not None:  # the marker (or the version) was rewritten
                if trig.overwrites == "ignore":
                    seen[version] = [gen, updated]
                    continue
                key_gen = gen
            cand = Candidate(trig.name, trig.bucket, version, version, key_gen, gen, name)
            self.sensor.metrics.received.labels("poll").inc()
            try:
                self.sensor.retry.call(
                    functools.partial(self.sensor.fire_candidate, cand, None, time.monotonic()), None, what="poll"
                )
            except Rejected as rej:  # e.g. a data URI that no job may receive: never retried
                self.sensor.metrics.rejected.labels(rej.reason).inc()
                LOG.warning("version rejected", extra={"reason": rej.reason, "detail": rej.detail[:300]})
            seen[version] = [gen, updated]
            done += 1
        horizon = self.clock() - self.sensor.retention
        kept = {v: s for v, s in seen.items() if float(s[1]) >= horizon}
        if kept != doc.get("seen"):
            self._save(doc_store, kept)
        return done

    def _save(self, doc_store: Any, seen: dict[str, list[Any]]) -> None:
        for _ in range(20):
            current, generation = doc_store.read()
            merged = {**(current.get("seen") or {}), **seen}
            if doc_store.write({"seen": merged}, generation):
                return
        raise Transient("gcs", "poll progress: too much contention")

    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self.run, args=(stop,), name="poll", daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.sensor.retry.call(self.poll_once, None, what="poll")
            except Stopped:
                return
            except Exception as exc:
                self.sensor.metrics.errors.labels("poll").inc()
                LOG.warning("poll failed; retrying", extra={"error": str(exc)[:300]}, exc_info=True)
            stop.wait(self.cfg.interval_seconds)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]{}\\," else c for c in text)
