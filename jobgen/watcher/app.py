"""The watcher core: events in, jobs out. Sources call :meth:`Watcher.on_notification`,
:meth:`Watcher.on_request` or :meth:`Watcher.submit` and ack/nack by the returned :class:`Outcome`.

Exactly once: the job name is a function of the key (bucket, object, generation); a create that
answers AlreadyExists means done. Acks happen only after the create (or a deliberate skip, a
dead-letter publish, or a durable Forbid queue entry), so a crash at any point leads to
redelivery, which leads to AlreadyExists.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any, Iterator

from jobgen.errors import UserError
from jobgen.spec import JobSpec
from jobgen.watcher.config import WatcherConfig
from jobgen.watcher.events import Rejected, parse_notification, parse_request
from jobgen.watcher.obs import LOG, Metrics
from jobgen.watcher.rules import Candidate, Debouncer, Pending, Rules, Skip
from jobgen.watcher.sink import KubeSink, is_transient
from jobgen.watcher.trigger import JobRequest, build_manifest, data_key, job_name, request_key

_SAFE_STR = re.compile(r"^[A-Za-z0-9._:/@+=,~-]{0,256}$")

DeadLetter = Callable[[bytes, Mapping[str, str], str, str], None]


class Outcome(enum.Enum):
    ACK = "ack"  # done or deliberately skipped
    NACK = "nack"  # failed; redeliver (after a backoff already waited)
    HOLD = "hold"  # kept by the debouncer; acked when its version completes


class Backoff:
    """Exponential backoff with full jitter, shared by all workers; reset by any success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.failures = 0
        self._lock = threading.Lock()

    def next(self) -> float:
        with self._lock:
            self.failures += 1
            ceiling = min(self.maximum, self.initial * 2 ** min(self.failures - 1, 16))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter

    def reset(self) -> None:
        self.failures = 0


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._d

    def add(self, key: str) -> None:
        with self._lock:
            self._d[key] = None
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


class _KeyLocks:
    """One lock per key in flight (two messages of one key never race each other)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, list[Any]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._lock:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._locks.pop(key, None)


class Watcher:
    def __init__(self, config: WatcherConfig, specs: dict[str, JobSpec], sink: KubeSink,
                 metrics: Metrics | None = None, dead_letter: DeadLetter | None = None,
                 stop: threading.Event | None = None, pipelines: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.specs = specs
        self.pipelines = dict(pipelines or {})  # job → compiled pipeline file, for pipeline targets
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.dead_letter = dead_letter
        self.stop = stop or threading.Event()
        self.triggers = {t.name: t for t in config.triggers}
        self.rules = Rules(config.triggers)
        self.debouncer = Debouncer(lambda name: self.triggers[name].quiet_seconds,
                                   config.limits.max_pending_versions)
        self.done = _Lru(config.limits.dedupe_cache)
        self.ledger: OrderedDict[str, None] = OrderedDict()
        self._ledger_lock = threading.Lock()
        self._ledger_dirty = False
        self.locks = _KeyLocks()
        self.backoff = Backoff(config.retry.initial_seconds, config.retry.max_seconds)
        self.last_cluster_ok = 0.0

    # --- start-up -------------------------------------------------------------
    def load_state(self) -> None:
        """Read the ledger (and check that the state ConfigMap exists and is ours to read)."""
        data = self.sink.read_state()
        names = (data.get("ledger") or {}).get("names") or []
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str):
                self.ledger[name] = None
                self.done.add(name)
        self.last_cluster_ok = time.monotonic()

    # --- notifications -------------------------------------------------------------
    def on_notification(self, data: bytes, attributes: Mapping[str, str], handle: Any = None) -> Outcome:
        received = time.monotonic()
        self.metrics.received.labels("pubsub").inc()
        limits = self.config.limits
        try:
            ev = parse_notification(data, attributes, limits.max_message_bytes, limits.max_object_name_bytes,
                                    limits.allow_unicode_names)
        except Rejected as rej:
            return self.reject(data, attributes, rej)
        decisions = self.rules.decide(ev)
        if not decisions:
            self.metrics.skipped.labels("no_trigger").inc()
            return Outcome.ACK
        outcome = Outcome.ACK
        for d in decisions:
            if isinstance(d, Skip):
                self.metrics.skipped.labels(d.reason).inc()
            elif isinstance(d, Pending):
                attach = handle if outcome is not Outcome.HOLD else None
                if not self.debouncer.add(d, attach):
                    self.metrics.errors.labels("debounce_full").inc()
                    return Outcome.NACK
                if attach is not None:
                    outcome = Outcome.HOLD
                self.metrics.pending_versions.set(len(self.debouncer))
        for d in decisions:
            if isinstance(d, Candidate):
                result = self.guarded(lambda d=d: self.submit(d, ev.event_time, received), data, attributes)
                if result is not Outcome.ACK:
                    return result
        return outcome

    def submit(self, cand: Candidate, event_time: str | None = None, received: float | None = None) -> str:
        """Create the job of a completed version. Raises on failures worth retrying."""
        trig = self.triggers[cand.trigger]
        req = JobRequest(key=data_key(cand.bucket, cand.key_object, cand.generation), trigger=trig.name,
                         job=trig.job, params=dict(trig.params), data_uri=cand.data_uri, generation=cand.generation,
                         source_object=f"gs://{cand.bucket}/{cand.source_object}", event_time=event_time)
        return self.run(req, trig.concurrency, received)

    # --- retrain requests ---------------------------------------------------------
    def on_request(self, data: bytes, attributes: Mapping[str, str], handle: Any = None) -> Outcome:
        received = time.monotonic()
        self.metrics.received.labels("requests").inc()
        try:
            req = self.parse_retrain(data)
        except Rejected as rej:
            return self.reject(data, attributes, rej)
        policy = self.config.sources.requests.concurrency if self.config.sources.requests else "Allow"
        return self.guarded(lambda: self.run(req, policy, received), data, attributes)

    def parse_retrain(self, data: bytes) -> JobRequest:
        from jobgen.render import resolve_params

        msg = parse_request(data, self.config.limits.max_message_bytes)
        spec = self.specs.get(msg.job)
        if spec is None:
            raise Rejected("unknown_job", f"job {msg.job[:60]!r} is not configured ({', '.join(self.specs)})")
        for key, value in msg.params.items():
            if isinstance(value, str) and not _SAFE_STR.match(value):
                raise Rejected("bad_param", f"params.{key[:40]}: strings may hold only [A-Za-z0-9._:/@+=,~-] "
                               "(at most 256)")
        try:
            values = resolve_params(spec, msg.params)
        except UserError as exc:
            raise Rejected("bad_param", "; ".join(f"{p.path}: {p.message}" for p in exc.problems)[:300]) from None
        given = {k: values[k] for k in msg.params}
        return JobRequest(key=request_key(msg.job, msg.request_id, given), trigger=f"request-{msg.job}",
                          job=msg.job, params=given)

    # --- the common path ------------------------------------------------------------
    def guarded(self, work: Callable[[], Any], data: bytes, attributes: Mapping[str, str]) -> Outcome:
        """Run ``work``: rejections go to the dead-letter path; transient failures back off and nack."""
        self.metrics.inflight.inc()
        try:
            work()
            self.backoff.reset()
            return Outcome.ACK
        except Rejected as rej:
            return self.reject(data, attributes, rej)
        except Exception as exc:  # noqa: BLE001 - every failure is retried, none kills the watcher
            stage = "cluster" if is_transient(exc) else "internal"
            self.metrics.errors.labels(stage).inc()
            delay = self.backoff.next()
            if stage == "cluster":
                LOG.warning("apiserver call failed; retrying", extra={"error": str(exc)[:300], "retry_in": delay})
            else:
                LOG.error("processing failed; retrying", exc_info=True, extra={"retry_in": delay})
            self.stop.wait(delay)
            return Outcome.NACK
        finally:
            self.metrics.inflight.dec()

    def run(self, req: JobRequest, policy: str, received: float | None = None) -> str:
        if req.job in self.pipelines:
            return self.run_pipeline(req, received)
        spec = self.specs[req.job]
        name = job_name(spec, req.key)
        if name in self.done:
            self.metrics.deduped.labels(req.trigger).inc()
            return "deduped"
        with self.locks.hold(name):
            if name in self.done:
                self.metrics.deduped.labels(req.trigger).inc()
                return "deduped"
            try:
                manifest = build_manifest(spec, req, self.config.namespace)
            except UserError as exc:
                raise Rejected("render", str(exc)[:500]) from None
            if policy != "Allow":
                from jobgen import kube

                if self.sink.cluster.get_job(name, self.config.namespace, manifest["kind"]) is not None:
                    return self._deduped(req, name)
                running = [j for j in self.sink.running(req.trigger) if j["metadata"]["name"] != name]
                if running and policy == "Forbid":
                    self.enqueue(req, policy)
                    return "queued"
                for job in running:  # Replace
                    self.sink.delete(job)
                    LOG.info("replaced running job", extra={"job": job["metadata"]["name"], "trigger": req.trigger})
            created = self.sink.create(manifest)
            self.last_cluster_ok = time.monotonic()
            if created is None:
                return self._deduped(req, name)
            self.metrics.jobs_created.labels(req.trigger).inc()
            if received is not None:
                self.metrics.latency.observe(time.monotonic() - received)
            LOG.info("job created", extra={"job": name, "kind": manifest["kind"], "trigger": req.trigger,
                                           "key": req.key, "data_uri": req.data_uri, "generation": req.generation})
            self._remember(name)
            what = f"from {req.source_object} generation {req.generation}" if req.data_uri else \
                f"by retrain request with params {json.dumps(req.params, sort_keys=True)}"
            try:
                self.sink.event(created, "RetrainTriggered", f"{created['kind']} {name} created {what}")
            except Exception as exc:  # noqa: BLE001 - the job exists; the Event is informational
                self.metrics.errors.labels("event").inc()
                LOG.warning("could not record an Event", extra={"job": name, "error": str(exc)[:200]})
            return "created"

    def run_pipeline(self, req: JobRequest, received: float | None = None) -> str:
        """One KFP run per data version: the run name derives from (data URI, generation), and an
        existing run of that name means done (concurrency policies do not apply to runs)."""
        from jobgen.pipelines.runs import create_run

        target = self.config.jobs[req.job].pipeline
        assert target is not None
        params = {**(self.triggers[req.trigger].params if req.trigger in self.triggers else {}), **req.params}
        key = req.generation if req.generation is not None else hashlib.sha256(req.key.encode()).hexdigest()[:12]
        data_uri = req.data_uri or f"request:{req.trigger}"
        with self.locks.hold(f"pipeline:{req.key}"):
            try:
                run = create_run(target.host, self.pipelines[req.job], params, data_uri=data_uri, generation=key,
                                 experiment=target.experiment, namespace=target.namespace)
            except UserError as exc:
                raise Rejected("render", str(exc)[:500]) from None
        self.last_cluster_ok = time.monotonic()
        if not run.created:
            return self._deduped(req, run.name)
        self.metrics.jobs_created.labels(req.trigger).inc()
        if received is not None:
            self.metrics.latency.observe(time.monotonic() - received)
        LOG.info("pipeline run created", extra={"run": run.name, "run_id": run.run_id, "trigger": req.trigger,
                                                "key": req.key, "data_uri": req.data_uri,
                                                "generation": req.generation})
        self._remember(run.name)
        return "created"

    def _deduped(self, req: JobRequest, name: str) -> str:
        self.metrics.deduped.labels(req.trigger).inc()
        self._remember(name)
        return "deduped"

    def _remember(self, name: str) -> None:
        self.done.add(name)
        with self._ledger_lock:
            self.ledger[name] = None
            self.ledger.move_to_end(name)
            while len(self.ledger) > self.config.limits.ledger_size:
                self.ledger.popitem(last=False)
            self._ledger_dirty = True

    def reject(self, data: bytes, attributes: Mapping[str, str], rej: Rejected) -> Outcome:
        self.metrics.rejected.labels(rej.reason).inc()
        LOG.warning("message rejected", extra={"reason": rej.reason, "detail": rej.detail[:300],
                                                "attributes": {str(k)[:64]: str(v)[:128]
                                                               for k, v in list(attributes.items())[:20]},
                                                "bytes": len(data)})
        if self.dead_letter is not None:
            try:
                self.dead_letter(data, attributes, rej.reason, rej.detail)
            except Exception as exc:  # noqa: BLE001
                self.metrics.errors.labels("dead_letter").inc()
                LOG.warning("dead-letter publish failed; will retry", extra={"error": str(exc)[:200]})
                self.stop.wait(self.backoff.next())
                return Outcome.NACK
        return Outcome.ACK

    # --- Forbid queue -------------------------------------------------------------
    def enqueue(self, req: JobRequest, policy: str) -> None:
        entry = {"key": req.key, "trigger": req.trigger, "job": req.job, "params": req.params,
                 "data_uri": req.data_uri, "generation": req.generation, "source_object": req.source_object,
                 "event_time": req.event_time, "policy": policy}

        def mutate(data: dict[str, Any]) -> dict[str, Any] | None:
            queue = data.get("queue") if isinstance(data.get("queue"), dict) else {}
            old = queue.get(req.trigger)
            if old and old.get("key") == req.key:
                return None
            if old and (old.get("generation") or 0) > (req.generation or 0):
                self.metrics.skipped.labels("coalesced").inc()  # an older version than the queued one
                return None
            if old:
                self.metrics.skipped.labels("coalesced").inc()
            queue[req.trigger] = entry
            return {"queue": queue}

        self.sink.update_state(mutate)
        self.metrics.queued.labels(req.trigger).inc()
        LOG.info("version queued behind a running job", extra={"trigger": req.trigger, "key": req.key})

    def drain_queue(self) -> int:
        """Start queued versions whose trigger has no running job. Returns how many were started."""
        data = self.sink.read_state()
        queue = data.get("queue") if isinstance(data.get("queue"), dict) else {}
        started = 0
        for trigger, entry in list(queue.items()):
            if self.sink.running(trigger):
                continue
            req = JobRequest(key=entry["key"], trigger=entry["trigger"], job=entry["job"],
                             params=entry.get("params") or {}, data_uri=entry.get("data_uri"),
                             generation=entry.get("generation"), source_object=entry.get("source_object"),
                             event_time=entry.get("event_time"))
            if req.job in self.specs:
                self.run(req, "Allow")
                started += 1

            def mutate(d: dict[str, Any], trigger: str = trigger, key: str = entry["key"]) -> dict[str, Any] | None:
                q = d.get("queue") if isinstance(d.get("queue"), dict) else {}
                if (q.get(trigger) or {}).get("key") != key:
                    return None
                del q[trigger]
                return {"queue": q}

            self.sink.update_state(mutate)
        return started

    # --- debounce and ledger ---------------------------------------------------------
    def fire_due(self) -> None:
        """Create jobs for quiet debounce versions; ack their held messages, or nack on failure."""
        for cand, handles in self.debouncer.due():
            outcome = self.guarded(lambda c=cand: self.submit(c), b"", {})
            for h in handles:
                (h.ack if outcome is Outcome.ACK else h.nack)()
        self.metrics.pending_versions.set(len(self.debouncer))

    def flush_ledger(self) -> None:
        with self._ledger_lock:
            if not self._ledger_dirty:
                return
            ours = list(self.ledger)
            self._ledger_dirty = False
        size = self.config.limits.ledger_size

        def mutate(data: dict[str, Any]) -> dict[str, Any]:
            theirs = (data.get("ledger") or {}).get("names") if isinstance(data.get("ledger"), dict) else None
            merged = OrderedDict.fromkeys([n for n in theirs or [] if isinstance(n, str)])
            for n in ours:
                merged[n] = None
                merged.move_to_end(n)
            return {"ledger": {"names": list(merged)[-size:]}}

        try:
            self.sink.update_state(mutate)
        except Exception:
            with self._ledger_lock:
                self._ledger_dirty = True
            raise

    def release_held(self) -> int:
        """Shutdown: nack every message the debouncer holds, for prompt redelivery."""
        handles = self.debouncer.drain()
        for h in handles:
            h.nack()
        return len(handles)
