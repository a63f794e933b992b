"""``jobgen predict SPEC``: load, render, validate offline, then server-side apply the Indexed Job.

Everything that can be checked offline is checked before the cluster is contacted; a bad spec is
one line per problem (file and field) and nothing is applied. Applying the same spec for the same
input again is a no-op on the same Job (its name is a function of the input key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobgen.errors import UserError
from jobgen.predict import load as loader
from jobgen.predict.render import input_key, render
from jobgen.predict.spec import PredictionSpec
from jobgen.predict.validate import manifest_problems


def build(
    path: str | Path, sets: list[tuple[str, Any]] | None = None, run: str | None = None
) -> tuple[PredictionSpec, dict[str, Any]]:
    """The spec at ``path`` and its validated Job (``run`` makes a separate job over the same input:
    :func:`jobgen.predict.trigger.manifest_for_run`, what the chart's prediction schedule runs)."""
    spec = loader.load(path, sets)
    if run is not None:
        from jobgen.predict.trigger import manifest_for_run

        return spec, manifest_for_run(spec, run, source=str(path))
    manifest = render(spec, input_key(spec.input.prefix, spec.input.glob, run))
    problems = manifest_problems(manifest)
    if problems:
        raise UserError(problems, f"{path} (rendered Job)")
    return spec, manifest


def apply(cluster: Any, manifest: dict[str, Any], server_dry_run: bool = False) -> dict[str, Any]:
    """Server-side apply through jobgen's cluster access; a changed spec for an existing job is a user error."""
    from jobgen.kube import ApiRejected

    try:
        result: dict[str, Any] = cluster.apply(manifest, dry_run=server_dry_run)
    except ApiRejected as exc:
        if exc.status == 422 and "field is immutable" in str(exc):
            name = manifest["metadata"]["name"]
            raise UserError.one(
                "",
                f"Job {name} already exists for this input with a different spec (a Job's "
                "template is immutable); delete it first or pass --run ID to start another "
                "prediction over the same input",
            ) from None
        raise
    return result
