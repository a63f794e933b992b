"""The pipeline target: one Kubeflow Pipelines run per (trigger, data key), across replicas.

KFP has no unique constraint on run names, so "find a run of this name, else create one" is not
atomic between two replicas. The claim makes it so:

1. create the claim ``claims/<trigger>/<sha256(key)>`` in state ``creating`` with ``ifGenerationMatch=0``:
   exactly one replica wins and only the winner creates the run;
2. the winner creates the run (``jobgen.pipelines.runs.create_run``: find by the derived name, then
   create, so a retry after a crash finds the run instead of making a second one);
3. the winner rewrites the claim to ``created`` (compare-and-swap on the generation it wrote).

A replica that finds a ``creating`` claim waits (a transient condition, retried with the one policy)
until it turns ``created``; a ``creating`` claim older than ``state.claimLeaseSeconds`` belongs to a
replica that died between 1 and 3: it is taken over by compare-and-swap, and step 2's find-by-name
picks up a run the dead replica may have created.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jobgen.errors import UserError
from jobgen.watcher.config import PipelineTarget
from jobgen.watcher.retrying import Transient
from jobgen.watcher.sensor.events import Rejected
from jobgen.watcher.state import Claim, ClaimStore, _dump, parse_iso
from jobgen.watcher.targets import Fired
from jobgen.watcher.targets.naming import JobRequest

CreateRun = Callable[..., Any]


def _default_create_run(*args: Any, **kwargs: Any) -> Any:
    from jobgen.pipelines.runs import create_run

    return create_run(*args, **kwargs)


class PipelineRunTarget:
    def __init__(
        self,
        claims: ClaimStore,
        targets: Mapping[str, PipelineTarget],
        packages: Mapping[str, Path],
        trigger_params: Mapping[str, Mapping[str, Any]],
        lease_seconds: float,
        create_run: CreateRun = _default_create_run,
    ) -> None:
        self.claims = claims
        self.targets = targets
        self.packages = packages
        self.trigger_params = trigger_params
        self.lease_seconds = lease_seconds
        self.create_run = create_run

    def fire(self, req: JobRequest) -> Fired:
        claim = self.claims.get(req.trigger, req.key)
        if claim is None:
            claim, ours = self.claims.put(Claim(req.trigger, req.key, "creating", kind="PipelineRun"))
            if not ours:
                return self.fire(req)
        elif claim.state == "creating":
            age = time.time() - (parse_iso(claim.at) or 0.0)
            if age < self.lease_seconds:
                raise Transient("kfp", f"another replica is creating the run of {req.key[:120]} ({age:.0f}s ago)")
            taken = Claim(req.trigger, req.key, "creating", kind="PipelineRun")
            stored = self.claims.blobs.replace(
                self.claims.path(req.trigger, req.key), _dump(taken.content()), claim.generation
            )
            if stored is None:
                return self.fire(req)  # someone else took it over, or finished: read again
            claim = Claim(**{**taken.content(), "generation": stored.generation})
        else:
            return Fired("deduped", claim.name, claim.kind, claim.state)
        # This replica holds the claim.
        target = self.targets[req.job]
        params = {**self.trigger_params.get(req.trigger, {}), **req.params}
        generation: int | str = (
            req.generation if req.generation is not None else hashlib.sha256(req.key.encode()).hexdigest()[:12]
        )
        try:
            run = self.create_run(
                target.host,
                self.packages[req.job],
                params,
                data_uri=req.data_uri or f"request:{req.trigger}",
                generation=generation,
                experiment=target.experiment,
                namespace=target.namespace,
            )
        except UserError as exc:
            raise Rejected("render", str(exc)[:500]) from None
        except Exception as exc:
            raise _kfp_error(exc) from None
        done = Claim(
            req.trigger, req.key, "created", name=run.name, kind="PipelineRun", uid=str(run.run_id), released=True
        )
        if (
            self.claims.blobs.replace(self.claims.path(req.trigger, req.key), _dump(done.content()), claim.generation)
            is None
        ):
            raise Transient("gcs", "the pipeline claim changed while the run was being created")
        return Fired("created" if run.created else "deduped", run.name, "PipelineRun")

    def running(self, trigger: str) -> list[dict[str, Any]]:
        return []

    def stop(self, item: dict[str, Any]) -> None:
        return None


def _kfp_error(exc: Exception) -> Exception:
    """KFP client failures: connection problems and 5xx/429 are transient, other HTTP errors permanent."""
    status = getattr(exc, "status", None)
    if isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.startswith("urllib3"):
        return Transient("kfp", f"{type(exc).__name__}: {str(exc)[:200]}")
    if isinstance(status, int):
        if status >= 500 or status in (401, 403, 408, 429):
            return Transient("kfp", f"HTTP {status}: {str(getattr(exc, 'reason', ''))[:200]}")
        return Rejected("kfp_rejected", f"HTTP {status}: {str(getattr(exc, 'body', exc))[:300]}")
    return exc
