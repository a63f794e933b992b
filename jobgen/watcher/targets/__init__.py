"""Targets: what a completed data version (or a retrain request) starts.

- :mod:`.job`: a PyTorchJob/TFJob rendered by jobgen (:class:`~.job.TrainingJobTarget`);
- :mod:`.predict`: a batch/v1 Indexed Job for a BatchPrediction spec (:class:`~.predict.PredictionJobTarget`,
  on the same claim protocol: :class:`~.job.ClaimedJobTarget`);
- :mod:`.pipeline`: a Kubeflow Pipelines run (:class:`~.pipeline.PipelineRunTarget`).

Every target is idempotent per (trigger, key) through the durable claims of
:mod:`jobgen.watcher.state`, so the sensor may call ``fire`` any number of times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from jobgen.watcher.targets.naming import JobRequest


@dataclass(frozen=True)
class Fired:
    """What ``fire`` did: ``created`` (this call made the claim), or ``deduped`` (already handled)."""

    result: str  # created | deduped
    name: str
    kind: str = ""
    detail: str = ""


class Target(Protocol):
    def fire(self, req: JobRequest) -> Fired:
        """Start the work for ``req`` unless its claim says it was started already. Raises
        ``Transient`` (retried), ``Rejected`` (dead-lettered) or anything else (a bug)."""

    def running(self, trigger: str) -> list[dict[str, Any]]:
        """Unfinished work of ``trigger`` (for Forbid/Replace); [] when the target has no notion of it."""

    def stop(self, item: dict[str, Any]) -> None:
        """Stop one item returned by ``running`` (Replace)."""


__all__ = ["Fired", "JobRequest", "Target"]
