"""Pub/Sub sources: streaming pull of GCS notifications and of retrain requests, and the
dead-letter publisher.

Streaming pull with flow control (max messages/bytes leased at once); the client library extends
the ack deadline of every leased message until it is acked or nacked, up to ``maxLeaseSeconds``. So
a message whose work waits for an unreachable backend stays leased and costs no delivery attempt;
the sensor nacks it only when its lease budget is spent (docs/watcher.md has the arithmetic against
the subscription's dead-letter policy).

Shutdown (:meth:`PubSubPuller.stop`, after the shared stop event is set so in-flight retries end):
the stream stops pulling first (a nack sent while it still pulled would come straight back to this
subscriber), then the client waits for the callbacks (``await_callbacks_on_shutdown``), whose
nacks its dispatcher sends as unary requests before it stops. The old shutdown nacked messages
held by the debouncer after the client had stopped, when nothing sent them any more; nothing is
held now.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jobgen.watcher.config import PubSubSource, RequestSource
from jobgen.watcher.obs import LOG
from jobgen.watcher.retrying import Transient
from jobgen.watcher.sensor.sensor import Delivery, Outcome

Handler = Callable[[bytes, Mapping[str, str], Delivery], Outcome]


class PubSubPuller:
    """One streaming pull subscription feeding ``handler(data, attributes, delivery) -> Outcome``."""

    def __init__(self, cfg: PubSubSource | RequestSource, handler: Handler, name: str, subscriber: Any = None) -> None:
        from google.cloud import pubsub_v1

        self.cfg = cfg
        self.handler = handler
        self.name = name
        self.subscriber = subscriber or pubsub_v1.SubscriberClient()
        self.future: Any = None
        self.executor: ThreadPoolExecutor | None = None
        self.draining = False
        self._inflight = 0
        self._cond = threading.Condition()

    def start(self) -> None:
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        max_bytes = getattr(self.cfg, "max_bytes", 4 * 1024 * 1024)
        flow = pubsub_v1.types.FlowControl(
            max_messages=self.cfg.max_messages,
            max_bytes=max_bytes,
            max_lease_duration=self.cfg.max_lease_seconds,
            min_duration_per_lease_extension=self.cfg.lease_extension_seconds,
            max_duration_per_lease_extension=self.cfg.lease_extension_seconds,
        )
        self.executor = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix=f"{self.name}-worker")
        self.future = self.subscriber.subscribe(
            self.cfg.subscription,
            self._callback,
            flow_control=flow,
            scheduler=ThreadScheduler(executor=self.executor),
            await_callbacks_on_shutdown=True,
        )
        LOG.info("subscribed", extra={"source": self.name, "subscription": self.cfg.subscription})

    def _callback(self, message: Any) -> None:
        if self.draining:
            message.nack()
            return
        with self._cond:
            self._inflight += 1
        try:
            published = message.publish_time.timestamp() if getattr(message, "publish_time", None) else None
            delivery = Delivery.now(self.name, float(self.cfg.max_lease_seconds), published)
            try:
                outcome = self.handler(message.data, dict(message.attributes), delivery)
            except Exception:
                LOG.error("handler crashed; message released", exc_info=True)
                outcome = Outcome.NACK
            if outcome is Outcome.ACK:
                message.ack()
            else:
                message.nack()
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.future is not None and not self.future.done()

    def drain(self, timeout: float = 30.0) -> None:
        """Stop taking work and wait for in-flight callbacks (used by :meth:`stop`)."""
        self.stop(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self.future is None:
            return
        self.draining = True
        self.future.cancel()  # stop pulling; unstarted messages are nacked by the client
        try:
            self.future.result(timeout=timeout)
        except Exception as exc:  # CancelledError/timeout: we are stopping either way
            LOG.debug("subscriber stopped", extra={"source": self.name, "error": repr(exc)[:200]})
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


class DeadLetterPublisher:
    """Rejected messages → a Pub/Sub topic, with the reason in attributes (then the original is acked)."""

    def __init__(self, topic: str, publisher: Any = None) -> None:
        from google.cloud import pubsub_v1

        self.topic = topic
        self.publisher = publisher or pubsub_v1.PublisherClient()

    def __call__(self, data: bytes, attributes: Mapping[str, str], reason: str, detail: str) -> None:
        try:
            attrs = {str(k)[:256]: str(v)[:1024] for k, v in list(attributes.items())[:50]}
        except Exception:
            attrs = {}
        attrs.update({"deadLetterReason": reason, "deadLetterDetail": detail[:1024]})
        try:
            self.publisher.publish(self.topic, bytes(data), **attrs).result(timeout=30)
        except Exception as exc:
            raise Transient("pubsub", f"dead-letter publish to {self.topic} failed: {str(exc)[:200]}") from None
