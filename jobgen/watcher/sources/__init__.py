"""Sources: where events come from.

- :mod:`.pubsub`: streaming pull of GCS notifications and of retrain requests (same class, two
  handlers), and the dead-letter publisher;
- :mod:`.poll`: the polling fallback for buckets without notifications.

A source calls a handler ``(data, attributes, Delivery) -> Outcome`` and acks/nacks accordingly;
:class:`Source` is what the app starts, probes and stops.
"""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    name: str

    def start(self) -> None: ...

    @property
    def alive(self) -> bool: ...

    def drain(self, timeout: float) -> None:
        """Stop taking work: in-flight messages finish or are nacked while the stream still runs."""

    def stop(self, timeout: float) -> None: ...
