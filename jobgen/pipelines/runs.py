"""Idempotent pipeline runs on a KFP endpoint: one run per data generation.

:func:`create_run` derives the run's name from the pipeline and the data version (URI +
generation) unless given one, checks the parameters against the compiled package's typed inputs,
looks for a run of that name and creates one only when there is none. So a caller that retries
(the watcher after a crash between creating the run and recording it, a redelivered notification)
gets the same run back instead of a second training.

KFP itself has no unique constraint on run names: two callers racing on the very same name can
both create. This check alone does not prevent that; the watcher's pipeline target makes creation
exclusive across replicas with a claim object in its state bucket (jobgen/watcher/targets/pipeline.py,
tested in tests/watcher/test_pipeline_target.py); see docs/pipelines.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobgen.errors import Problem, UserError

RUN_NAME_MAX = 128


@dataclass
class RunRef:
    run_id: str
    name: str
    created: bool  # False: a run of this name already existed and was returned
    state: str | None = None


def derive_run_name(pipeline_name: str, data_uri: str, generation: int | str) -> str:
    """``<pipeline>-<data version>-g<generation>-<hash>``: deterministic, readable, bounded.

    The hash covers the full data URI and generation, so truncating the readable part never merges
    two data versions."""
    from jobgen.names import shorten

    version = re.sub(r"[^a-z0-9]+", "-", data_uri.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-") or "data"
    return shorten(
        f"{pipeline_name}-{version}-g{generation}", RUN_NAME_MAX, salt=f"{data_uri.rstrip('/')}#{generation}"
    )


def _package(package_path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(Path(package_path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError.one("", f"cannot read the pipeline package: {exc.strerror or exc}", str(package_path)) from None
    except yaml.YAMLError as exc:
        raise UserError.one("", f"not a compiled pipeline (YAML): {exc}", str(package_path)) from None
    if not isinstance(doc, dict) or "root" not in doc or "pipelineInfo" not in doc:
        raise UserError.one("", "not a compiled KFP v2 pipeline (no root/pipelineInfo)", str(package_path))
    return doc


def check_arguments(package: dict[str, Any], params: dict[str, Any], source: str) -> dict[str, Any]:
    """Check ``params`` against the pipeline's typed inputs; returns them with the KFP types."""
    inputs = (package["root"].get("inputDefinitions") or {}).get("parameters") or {}
    problems: list[Problem] = []
    out: dict[str, Any] = {}
    for name, value in params.items():
        decl = inputs.get(name)
        if decl is None:
            problems.append(Problem(name, f"unknown pipeline parameter; declared: {', '.join(sorted(inputs))}"))
            continue
        kind = decl.get("parameterType")
        try:
            out[name] = _coerce(kind, value)
        except ValueError as exc:
            problems.append(Problem(name, str(exc)))
    for name, decl in inputs.items():
        if name not in params and not decl.get("isOptional") and "defaultValue" not in decl:
            problems.append(Problem(name, "required pipeline parameter (it has no default)"))
    if problems:
        raise UserError(problems, source)
    return out


def _coerce(kind: str | None, value: Any) -> Any:
    text = value.strip() if isinstance(value, str) else None
    if kind == "STRING":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError(f"expected a bool, got {value!r}")
    if kind == "NUMBER_INTEGER":
        if isinstance(value, bool):
            raise ValueError(f"expected an int, got {value!r}")
        if isinstance(value, int):
            return value
        if text is not None and re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        raise ValueError(f"expected an int, got {value!r}")
    if kind == "NUMBER_DOUBLE":
        if isinstance(value, bool):
            raise ValueError(f"expected a float, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a float, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite float, got {value!r}")
        return number
    return value  # STRUCT/LIST: passed as they are


def find_runs(client: Any, name: str, namespace: str | None = None) -> list[Any]:
    """Runs whose display name is exactly ``name`` (all pages), oldest first."""
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    runs: list[Any] = []
    token = ""
    while True:
        resp = client.list_runs(page_token=token, page_size=100, namespace=namespace, filter=flt)
        runs += [r for r in (resp.runs or []) if r.display_name == name]
        token = resp.next_page_token or ""
        if not token:
            break
    return sorted(runs, key=lambda r: str(r.created_at or ""))


def create_run(
    host: str | None,
    package_path: str | Path,
    params: dict[str, Any] | None = None,
    run_name: str | None = None,
    *,
    data_uri: str | None = None,
    generation: int | str | None = None,
    experiment: str | None = None,
    namespace: str | None = None,
    client: Any = None,
) -> RunRef:
    """Create a run of the compiled pipeline at ``package_path`` unless one of the same name exists.

    The name is ``run_name``, or else derived from the pipeline name, ``data_uri`` and ``generation``
    (:func:`derive_run_name`); ``data_uri`` is also the run's ``data_uri`` argument unless ``params``
    has one. Parameters are checked against the package first: a bad one raises
    :class:`UserError` before the endpoint is contacted.
    """
    source = str(package_path)
    package = _package(package_path)
    params = dict(params or {})
    inputs = (package["root"].get("inputDefinitions") or {}).get("parameters") or {}
    if data_uri is not None and "data_uri" in inputs:
        params.setdefault("data_uri", data_uri)  # the run trains on the data version it is named after
    arguments = check_arguments(package, params, source)
    if run_name is None:
        if data_uri is None or generation is None:
            raise UserError.one("run_name", "give a run name, or data_uri and generation to derive it from", source)
        run_name = derive_run_name(package["pipelineInfo"]["name"], data_uri, generation)
    if client is None:
        import kfp

        client = kfp.Client(host=host)  # its namespace argument is KFP's own, not the user's
    existing = find_runs(client, run_name, namespace)
    if existing:
        run = existing[0]
        return RunRef(run.run_id, run_name, created=False, state=getattr(run, "state", None))
    result = client.create_run_from_pipeline_package(
        str(package_path), arguments=arguments, run_name=run_name, experiment_name=experiment, namespace=namespace
    )
    return RunRef(result.run_id, run_name, created=True, state=getattr(result.run_info, "state", None))
