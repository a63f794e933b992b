"""The sensor: parse → rules → debounce → dedupe → concurrency → target.

Sources hand it a message (``on_notification``/``on_request``) with a :class:`Delivery` and ack or nack
by the returned :class:`Outcome`:

- ACK after the work is durably done: the target's claim exists, a debounce record or a Forbid
  queue entry was written, or the message was skipped or dead-lettered on purpose;
- transient failures are retried in place by the one retry policy while the message stays leased
  (the source extends its ack deadline), until ``Delivery.deadline``; only then NACK;
- a permanent rejection (any parse failure, a name collision, a manifest the apiserver refuses, an
  unexpected exception) is published to the dead-letter topic with ``deadLetterReason`` and acked.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from jobgen.errors import UserError
from jobgen.spec import JobSpec
from jobgen.watcher.config import WatcherConfig
from jobgen.watcher.obs import LOG, Metrics
from jobgen.watcher.retrying import RetryPolicy, Stopped
from jobgen.watcher.sensor.debounce import Debounce
from jobgen.watcher.sensor.events import Rejected, parse_notification, parse_request
from jobgen.watcher.sensor.rules import Candidate, Pending, Rules, Skip
from jobgen.watcher.state import Claim, StateStores
from jobgen.watcher.targets import Target
from jobgen.watcher.targets.naming import LABEL_GENERATION, JobRequest, data_key, request_key

_SAFE_STR = re.compile(r"^[A-Za-z0-9._:/@+=,~-]{0,256}$")

DeadLetter = Callable[[bytes, Mapping[str, str], str, str], None]


class Outcome(enum.Enum):
    ACK = "ack"
    NACK = "nack"


@dataclass(frozen=True)
class Delivery:
    """Where a message came from and how long it may stay leased."""

    source: str = "pubsub"
    received: float = 0.0  # monotonic
    deadline: float | None = None  # monotonic; retries stop here and the message is nacked
    published: float | None = None  # POSIX seconds

    @classmethod
    def now(cls, source: str, max_lease: float | None, published: float | None = None) -> Delivery:
        t = time.monotonic()
        # Stop retrying a little before the lease would end, so the nack is still ours to send.
        return cls(source, t, None if max_lease is None else t + max(max_lease - 30.0, max_lease * 0.9), published)


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._d

    def add(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._d[key] = None
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


def check_bounds(spec: JobSpec, values: Mapping[str, Any], bound: float) -> None:
    """Numeric values of hyperparameters that declare no maximum/minimum stay within ±``bound``."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        hp = spec.hyperparameters.get(name)
        hi = getattr(hp, "max", None)
        lo = getattr(hp, "min", None)
        if (hi is None and value > bound) or (lo is None and value < -bound):
            raise Rejected(
                "bad_param",
                f"params.{name[:40]}: {value!r} is out of range; without a declared "
                f"min/max the watcher accepts at most ±{bound:g} (limits.maxNumericParam)",
            )


class Sensor:
    def __init__(
        self,
        config: WatcherConfig,
        specs: Mapping[str, JobSpec],
        targets: Mapping[str, Target],
        stores: StateStores,
        retry: RetryPolicy,
        metrics: Metrics,
        dead_letter: DeadLetter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.specs = specs
        self.targets = targets
        self.stores = stores
        self.retry = retry
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.clock = clock
        self.triggers = {t.name: t for t in config.triggers}
        self.rules = Rules(config.triggers)
        self.debounce = Debounce(stores.pending, lambda name: self.triggers[name].quiet_seconds, clock=clock)
        self.done = _Lru(config.limits.dedupe_cache)
        self.retention = config.state.retention_days * 86400.0

    # --- messages ------------------------------------------------------------------------------
    def on_notification(self, data: bytes, attributes: Mapping[str, str], delivery: Delivery) -> Outcome:
        self.metrics.received.labels(delivery.source).inc()
        limits = self.config.limits
        try:
            ev = parse_notification(
                data, attributes, limits.max_message_bytes, limits.max_object_name_bytes, limits.allow_unicode_names
            )
        except Rejected as rej:
            return self.reject(data, attributes, rej, delivery)
        if self.expired(ev.event_timestamp or delivery.published):
            self.metrics.skipped.labels("expired").inc()
            return Outcome.ACK
        decisions = self.rules.decide(ev)
        if not decisions:
            self.metrics.skipped.labels("no_trigger").inc()
            return Outcome.ACK
        work: list[Callable[[], Any]] = []
        for d in decisions:
            if isinstance(d, Skip):
                self.metrics.skipped.labels(d.reason).inc()
            elif isinstance(d, Pending):
                work.append(functools.partial(self.debounce.add, d))
            elif isinstance(d, Candidate):
                work.append(functools.partial(self.fire_candidate, d, ev.event_time, delivery.received))
        self.metrics.pending_versions.set(len(self.debounce))
        return self.run(work, data, attributes, delivery)

    def on_request(self, data: bytes, attributes: Mapping[str, str], delivery: Delivery) -> Outcome:
        self.metrics.received.labels(delivery.source).inc()
        try:
            req = self.parse_retrain(data)
        except Rejected as rej:
            return self.reject(data, attributes, rej, delivery)
        if self.expired(delivery.published):
            self.metrics.skipped.labels("expired").inc()
            return Outcome.ACK
        policy = self.config.sources.requests.concurrency if self.config.sources.requests else "Allow"
        return self.run([lambda: self.fire(req, policy, delivery.received)], data, attributes, delivery)

    def expired(self, when: float | None) -> bool:
        return when is not None and self.clock() - when > self.retention

    def run(
        self, work: list[Callable[[], Any]], data: bytes, attributes: Mapping[str, str], delivery: Delivery
    ) -> Outcome:
        """Each step under the retry policy; the classification of failures decides the outcome."""
        self.metrics.inflight.inc()
        try:
            for step in work:
                self.retry.call(step, delivery.deadline, what=delivery.source)
        except Rejected as rej:
            return self.reject(data, attributes, rej, delivery)
        except Stopped as stop:
            LOG.warning(
                "message released for redelivery",
                extra={"why": str(stop), "source": delivery.source, "error": str(stop.last)[:200]},
            )
            return Outcome.NACK
        except Exception as exc:  # a bug must not crash-loop on one message: dead-letter it with the reason
            LOG.error("processing failed unexpectedly; dead-lettering the message", exc_info=True)
            return self.reject(
                data, attributes, Rejected("internal", f"{type(exc).__name__}: {str(exc)[:300]}"), delivery
            )
        finally:
            self.metrics.inflight.dec()
        return Outcome.ACK

    def parse_retrain(self, data: bytes) -> JobRequest:
        from jobgen.render import resolve_params

        msg = parse_request(data, self.config.limits.max_message_bytes)
        spec = self.specs.get(msg.job)
        if spec is None and msg.job in self.targets:
            raise Rejected(
                "unknown_job", f"job {msg.job[:60]!r} is a prediction job: it runs per input version, not on request"
            )
        if spec is None:
            raise Rejected("unknown_job", f"job {msg.job[:60]!r} is not configured ({', '.join(self.specs)})")
        for key, value in msg.params.items():
            if isinstance(value, str) and not _SAFE_STR.match(value):
                raise Rejected(
                    "bad_param", f"params.{key[:40]}: strings may hold only [A-Za-z0-9._:/@+=,~-] (at most 256)"
                )
        try:
            values = resolve_params(spec, msg.params)
        except UserError as exc:
            raise Rejected("bad_param", "; ".join(f"{p.path}: {p.message}" for p in exc.problems)[:300]) from None
        except Exception as exc:
            raise Rejected("bad_param", f"params could not be checked ({type(exc).__name__})") from None
        given = {k: values[k] for k in msg.params}
        check_bounds(spec, given, self.config.limits.max_numeric_param)
        return JobRequest(
            key=request_key(msg.job, msg.request_id, given), trigger=f"request-{msg.job}", job=msg.job, params=given
        )

    # --- firing ------------------------------------------------------------------------------------
    def request_of(self, cand: Candidate, event_time: str | None = None) -> JobRequest:
        trig = self.triggers[cand.trigger]
        return JobRequest(
            key=data_key(cand.bucket, cand.key_object, cand.key_generation),
            trigger=trig.name,
            job=trig.job,
            params=dict(trig.params),
            data_uri=cand.data_uri,
            generation=cand.generation,
            source_object=f"gs://{cand.bucket}/{cand.source_object}",
            event_time=event_time,
        )

    def fire_candidate(self, cand: Candidate, event_time: str | None = None, received: float | None = None) -> str:
        trig = self.triggers[cand.trigger]
        return self.fire(self.request_of(cand, event_time), trig.concurrency, received)

    def fire(self, req: JobRequest, policy: str, received: float | None = None) -> str:
        """Start ``req`` (raises Transient/Rejected). Returns created, deduped, queued or superseded."""
        ident = (req.trigger, req.key)
        if ident in self.done:
            self.metrics.deduped.labels(req.trigger).inc()
            return "deduped"
        target = self.targets[req.job]
        if policy != "Allow" and self.stores.claims.get(req.trigger, req.key) is None:
            decided = self.apply_policy(target, req, policy)
            if decided:
                return decided
        fired = target.fire(req)
        if fired.result == "created":
            self.metrics.jobs_created.labels(req.trigger).inc()
            if received is not None:
                self.metrics.latency.observe(time.monotonic() - received)
            LOG.info(
                "job created",
                extra={
                    "job": fired.name,
                    "kind": fired.kind,
                    "trigger": req.trigger,
                    "key": req.key,
                    "data_uri": req.data_uri,
                    "generation": req.generation,
                },
            )
        else:
            self.metrics.deduped.labels(req.trigger).inc()
        self.done.add(ident)
        return fired.result

    def apply_policy(self, target: Target, req: JobRequest, policy: str) -> str | None:
        """Forbid: queue behind running work. Replace: stop older running work, never newer."""
        if req.generation is not None and not self.stores.newest.advance(req.trigger, req.generation):
            return self.supersede(req, "a newer version of this trigger was started or queued already")
        running = target.running(req.trigger)
        if policy == "Forbid":
            if not running:
                return None
            order = req.generation if req.generation is not None else time.time_ns()
            self.stores.queue.add(req.trigger, order, req.key, asdict(req))
            self.metrics.queued.labels(req.trigger).inc()
            LOG.info("version queued behind a running job", extra={"trigger": req.trigger, "key": req.key})
            return "queued"
        # Replace
        if req.generation is not None:
            for job in running:
                gen = (job["metadata"].get("labels") or {}).get(LABEL_GENERATION)
                if gen is not None and gen.isdigit() and int(gen) >= req.generation:
                    continue  # never displace the same or a newer version
                target.stop(job)
                LOG.info("replaced running job", extra={"job": job["metadata"]["name"], "trigger": req.trigger})
        else:
            for job in running:
                target.stop(job)
        return None

    def supersede(self, req: JobRequest, why: str) -> str:
        self.stores.claims.put(Claim(req.trigger, req.key, "superseded"))
        self.metrics.skipped.labels("superseded").inc()
        LOG.info("version superseded", extra={"trigger": req.trigger, "key": req.key, "why": why})
        self.done.add((req.trigger, req.key))
        return "superseded"

    # --- dead letters ------------------------------------------------------------------------------
    def reject(self, data: bytes, attributes: Mapping[str, str], rej: Rejected, delivery: Delivery) -> Outcome:
        self.metrics.rejected.labels(rej.reason).inc()
        try:
            attrs = {str(k)[:64]: str(v)[:128] for k, v in list(attributes.items())[:20]}
        except Exception:
            attrs = {"unreadable": "true"}
        LOG.warning(
            "message rejected",
            extra={"reason": rej.reason, "detail": rej.detail[:300], "attributes": attrs, "bytes": len(data)},
        )
        if self.dead_letter is None:
            return Outcome.ACK
        dead_letter = self.dead_letter
        try:
            self.retry.call(
                lambda: dead_letter(data, attributes, rej.reason, rej.detail), delivery.deadline, what="dead-letter"
            )
        except Stopped:
            return Outcome.NACK
        self.metrics.dead_lettered.labels(rej.reason).inc()
        return Outcome.ACK

    # --- loops (called by the app) ------------------------------------------------------------------
    def fire_due(self) -> int:
        """Fire quiet debounce versions. Runs under the retry policy with no deadline but shutdown."""
        fired = 0
        for cand, rec in self.debounce.due():
            try:
                self.retry.call(functools.partial(self.fire_candidate, cand), None, what="debounce")
            except Rejected as rej:
                self.metrics.rejected.labels(rej.reason).inc()
                LOG.warning(
                    "debounced version rejected",
                    extra={"reason": rej.reason, "detail": rej.detail[:300], "version": cand.data_uri},
                )
            except Stopped:
                return fired
            self.retry.call(functools.partial(self.debounce.done, rec), None, what="debounce")
            fired += 1
        self.metrics.pending_versions.set(len(self.debounce))
        return fired

    def drain_queue(self) -> int:
        """Start queued (Forbid) versions of triggers with nothing running. Each trigger and each
        entry is handled on its own: a bad one is dropped and reported, the others go on."""
        started = 0
        for trigger, paths in self.stores.queue.triggers().items():
            try:
                started += self._drain_trigger(trigger, paths)
            except Exception as exc:
                self.metrics.errors.labels("queue").inc()
                LOG.warning(
                    "queue drain failed for a trigger; retrying later",
                    extra={"trigger": trigger, "error": str(exc)[:300]},
                )
        return started

    def _drain_trigger(self, trigger: str, paths: list[str]) -> int:
        entries: list[tuple[str, JobRequest]] = []
        for path in paths:
            entry = self.stores.queue.read(path)
            problem = "unreadable entry"
            if entry is not None:
                try:
                    req = JobRequest(**entry.request)
                    problem = "" if req.job in self.targets else f"job {req.job!r} is no longer configured"
                except (TypeError, ValueError) as exc:
                    problem = str(exc)
            if problem:
                self.metrics.rejected.labels("bad_queue_entry").inc()
                LOG.warning("dropping a bad queue entry", extra={"path": path, "error": problem[:200]})
                self.stores.queue.remove(path)
                continue
            entries.append((path, req))
        if not entries:
            return 0
        target = self.targets[entries[0][1].job]
        if target.running(trigger):
            return 0
        data = sorted((e for e in entries if e[1].generation is not None), key=lambda e: e[1].generation or 0)
        requests = [e for e in entries if e[1].generation is None]
        if data:
            path, req = data[-1]  # the newest version; older queued versions are superseded by it
            for old_path, old in data[:-1]:
                self.supersede(old, "a newer version was queued behind the same running job")
                self.stores.queue.remove(old_path)
        else:
            path, req = requests[0]  # retrain requests: first in, first out, never coalesced
        try:
            self.fire(req, "Allow")
        except Rejected as rej:
            self.metrics.rejected.labels(rej.reason).inc()
            LOG.warning("queued version rejected", extra={"reason": rej.reason, "detail": rej.detail[:300]})
        self.stores.queue.remove(path)
        return 1


def describe(obj: Any) -> str:
    return json.dumps(obj, default=str)[:200]
