"""Sources: Pub/Sub streaming pull (GCS notifications, retrain requests) and a polling fallback.

Pub/Sub: streaming pull with flow control (max messages/bytes leased at once); the client library
extends the ack deadline of every leased message until it is acked or nacked, up to
``maxLeaseSeconds``. A message is acked only after its job exists (or it was deliberately skipped
or dead-lettered); a failure nacks it after a backoff. On stop, pulling stops first, in-flight
callbacks finish, and leased-but-unstarted messages are released.

Polling: for buckets without notifications. Versions are folders under the trigger's prefix that
sort in arrival order (timestamps, zero-padded numbers). Each poll lists folder names from
``startOffset`` = the oldest version not yet handled (cost ∝ new versions), then reads only the
marker objects (marker mode) or the objects of the new versions (debounce mode). Progress is kept in
the state ConfigMap (key ``poll``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jobgen.watcher.app import Outcome, Watcher
from jobgen.watcher.config import PollSource, PubSubSource, RequestSource, Trigger
from jobgen.watcher.obs import LOG
from jobgen.watcher.rules import Candidate, glob_regex


class PubSubPuller:
    """One streaming pull subscription feeding ``handler(data, attributes, message) -> Outcome``."""

    def __init__(self, cfg: PubSubSource | RequestSource, handler: Callable[[bytes, Mapping[str, str], Any], Outcome],
                 name: str, subscriber: Any = None) -> None:
        from google.cloud import pubsub_v1

        self.cfg = cfg
        self.handler = handler
        self.name = name
        self.subscriber = subscriber or pubsub_v1.SubscriberClient()
        self.future: Any = None
        self.executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        max_bytes = getattr(self.cfg, "max_bytes", 4 * 1024 * 1024)
        flow = pubsub_v1.types.FlowControl(max_messages=self.cfg.max_messages, max_bytes=max_bytes,
                                           max_lease_duration=getattr(self.cfg, "max_lease_seconds", 3600),
                                           min_duration_per_lease_extension=self.cfg.lease_extension_seconds,
                                           max_duration_per_lease_extension=self.cfg.lease_extension_seconds)
        threads = getattr(self.cfg, "threads", 4)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"{self.name}-worker")
        self.future = self.subscriber.subscribe(self.cfg.subscription, self._callback, flow_control=flow,
                                                scheduler=ThreadScheduler(executor=self.executor),
                                                await_callbacks_on_shutdown=True)
        LOG.info("subscribed", extra={"source": self.name, "subscription": self.cfg.subscription})

    def _callback(self, message: Any) -> None:
        try:
            outcome = self.handler(message.data, dict(message.attributes), message)
        except Exception:  # noqa: BLE001 - never lose a message to a bug: redeliver it
            LOG.error("handler crashed; message released", exc_info=True)
            outcome = Outcome.NACK
        if outcome is Outcome.ACK:
            message.ack()
        elif outcome is Outcome.NACK:
            message.nack()

    @property
    def alive(self) -> bool:
        return self.future is not None and not self.future.done()

    def stop(self, timeout: float = 30.0) -> None:
        if self.future is None:
            return
        self.future.cancel()  # stop pulling; in-flight callbacks finish, unstarted messages are nacked
        try:
            self.future.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - CancelledError/timeout: we are stopping either way
            pass
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


class DeadLetterPublisher:
    """Rejected messages → a Pub/Sub topic, with the reason in attributes (then the original is acked)."""

    def __init__(self, topic: str, publisher: Any = None) -> None:
        from google.cloud import pubsub_v1

        self.topic = topic
        self.publisher = publisher or pubsub_v1.PublisherClient()

    def __call__(self, data: bytes, attributes: Mapping[str, str], reason: str, detail: str) -> None:
        attrs = {str(k)[:256]: str(v)[:1024] for k, v in list(attributes.items())[:50]}
        attrs.update({"deadLetterReason": reason, "deadLetterDetail": detail[:1024]})
        self.publisher.publish(self.topic, data, **attrs).result(timeout=30)


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Poller:
    """The polling fallback for ``triggers`` (marker or debounce mode, versionDepth 1)."""

    STATE_KEY = "poll"

    def __init__(self, cfg: PollSource, watcher: Watcher, triggers: list[Trigger], client: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.watcher = watcher
        self.triggers = [t for t in triggers if t.version_depth == 1]
        for t in triggers:
            if t.version_depth != 1:
                LOG.warning("polling needs versionDepth 1; trigger not polled", extra={"trigger": t.name})
        self._client = client
        self.clock = clock
        self.calls = 0  # list pages + object reads of the last poll
        self.items = 0  # names (folders and objects) those calls returned: the cost that could grow
        self.last_poll_ok = 0.0

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client()
        return self._client

    def poll_once(self) -> int:
        """One poll of every trigger; returns the number of versions handled. Raises on failures."""
        state = self.watcher.sink.read_state().get(self.STATE_KEY)
        state = state if isinstance(state, dict) else {}
        self.calls = self.items = 0
        handled = 0
        for trig in self.triggers:
            st = state.get(trig.name) if isinstance(state.get(trig.name), dict) else {}
            new_st, n = self._poll_trigger(trig, st)
            handled += n
            if new_st != st:
                self.watcher.sink.update_state(lambda d, name=trig.name, s=new_st: {
                    self.STATE_KEY: {**(d.get(self.STATE_KEY) if isinstance(d.get(self.STATE_KEY), dict) else {}),
                                     name: s}})
        self.last_poll_ok = time.monotonic()
        return handled

    def _versions(self, trig: Trigger, start: str | None) -> list[str]:
        kwargs: dict[str, Any] = {"prefix": trig.prefix, "delimiter": "/"}
        if start:
            kwargs["start_offset"] = start
        it = self.client.list_blobs(trig.bucket, **kwargs)
        for page in it.pages:
            self.calls += 1
            self.items += sum(1 for _ in page) + len(page.prefixes)
        return sorted(p for p in it.prefixes if (start is None or p >= start))

    def _poll_trigger(self, trig: Trigger, st: dict[str, Any]) -> tuple[dict[str, Any], int]:
        handled: dict[str, int] = {k: v for k, v in (st.get("handled") or {}).items() if isinstance(v, int)}
        pending: list[str] = [p for p in st.get("pending") or [] if isinstance(p, str)]
        start = min(pending) if pending else st.get("after")
        versions = self._versions(trig, start)
        recheck = sorted(handled)[-self.cfg.recheck_versions:] if self.cfg.recheck_versions else []
        todo = sorted(set(versions) | set(pending) | set(recheck))
        done_now = 0
        still_pending = []
        for version in todo:
            if not version.startswith(trig.prefix):
                continue
            from jobgen.watcher.events import Rejected, check_object_name

            try:
                check_object_name(version, self.watcher.config.limits.max_object_name_bytes,
                                  self.watcher.config.limits.allow_unicode_names)
            except Rejected as rej:
                self.watcher.metrics.rejected.labels(rej.reason).inc()
                LOG.warning("version rejected", extra={"reason": rej.reason, "detail": rej.detail})
                handled[version] = -1
                continue
            cand = self._complete(trig, version)
            if cand is None:
                if version not in handled:
                    still_pending.append(version)
                continue
            if handled.get(version) == cand.generation:
                continue  # seen before, unchanged
            if version in handled and trig.overwrites == "ignore":
                handled[version] = cand.generation
                continue
            self.watcher.metrics.received.labels("poll").inc()
            try:
                self.watcher.submit(cand, received=time.monotonic())
            except Rejected as rej:  # e.g. a data URI that no job may receive: never retried
                self.watcher.metrics.rejected.labels(rej.reason).inc()
                LOG.warning("version rejected", extra={"reason": rej.reason, "detail": rej.detail[:300]})
            handled[version] = cand.generation
            done_now += 1
        newest = sorted(handled)[-max(self.cfg.recheck_versions, 1):]
        after = max([st.get("after") or "", *handled]) if handled else st.get("after")
        return {"after": after, "pending": still_pending[-1000:], "handled": {v: handled[v] for v in newest}}, done_now

    def _complete(self, trig: Trigger, version: str) -> Candidate | None:
        bucket = self.client.bucket(trig.bucket)
        if trig.completion == "marker":
            for marker in trig.markers:
                self.calls += 1
                blob = bucket.get_blob(version + marker)
                if blob is not None:
                    self.items += 1
                    return Candidate(trig.name, trig.bucket, version, version + marker, int(blob.generation),
                                     version + marker)
            return None
        newest, source = 0.0, ""
        kwargs: dict[str, Any] = {"prefix": version}
        if trig.glob:
            kwargs["match_glob"] = trig.glob
        it = self.client.list_blobs(trig.bucket, **kwargs)
        count = 0
        for page in it.pages:
            self.calls += 1
            for blob in page:
                self.items += 1
                if trig.glob and not glob_regex(trig.glob).match(blob.name):
                    continue  # servers without matchGlob support return everything
                count += 1
                t = blob.updated.timestamp() if blob.updated else 0.0
                if t >= newest:
                    newest, source = t, blob.name
        if count == 0 or self.clock() - newest < trig.quiet_seconds:
            return None
        return Candidate(trig.name, trig.bucket, version, version, 0, source)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
                self.watcher.backoff.reset()
                wait = self.cfg.interval_seconds
            except Exception as exc:  # noqa: BLE001 - a failed poll is retried with backoff
                self.watcher.metrics.errors.labels("poll").inc()
                wait = self.watcher.backoff.next()
                LOG.warning("poll failed; retrying", extra={"error": str(exc)[:300], "retry_in": wait})
            stop.wait(wait)


def describe(obj: Any) -> str:
    return json.dumps(obj, default=str)[:200]
