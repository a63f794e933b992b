"""Hyperparameter sweeps: a family of jobs from one spec, run with a parallelism limit.

`jobgen sweep SPEC --grid lr=0.01,0.1 --grid batch-size=32,64` (or `--random N`) renders one job
per trial, labelled ``jobgen.io/sweep=<name>`` and ``jobgen.io/trial=<i>`` with its parameters in
the ``jobgen.io/params`` annotation. Trials beyond the parallelism limit are created suspended
(runPolicy.suspend) and resumed as running trials finish, so every trial is visible in the cluster
from the start and a rerun of the same command picks up where an interrupted one stopped.
Names are deterministic: the same sweep submitted twice is the same set of jobs.

`jobgen status --sweep NAME` ranks the trials by the metric their training published to the
model registry (``metrics.json`` of the version whose ``lineage.json`` names the trial's job).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobgen.errors import Problem, UserError
from jobgen.kubeflow import view
from jobgen.names import derived, is_dns1035, max_job_name_len
from jobgen.spec import Hyperparameter, JobSpec, coerce_param

SWEEP_LABEL = "jobgen.io/sweep"
TRIAL_LABEL = "jobgen.io/trial"
PARAMS_ANNOTATION = "jobgen.io/params"
MAX_TRIALS = 1000
SWEEP_NAME_MAX = 40


@dataclass
class Trial:
    index: int
    name: str
    params: dict[str, Any]


def parse_grid(spec: JobSpec, grid: list[str], source: str | None) -> dict[str, list[Any]]:
    """``name=v1,v2`` items → typed value lists, checked against the spec's declarations."""
    out: dict[str, list[Any]] = {}
    problems: list[Problem] = []
    for item in grid:
        name, sep, raw = item.partition("=")
        where = f"--grid {name or item}"
        hp = spec.hyperparameters.get(name)
        if not sep or not name or not raw:
            problems.append(Problem(where, f"expected NAME=V1,V2,…, got {item!r}"))
            continue
        if hp is None:
            declared = ", ".join(spec.hyperparameters) or "none"
            problems.append(Problem(where, f"unknown hyperparameter; declared: {declared}"))
            continue
        values = []
        for text in raw.split(","):
            try:
                values.append(coerce_param(hp, text))
            except ValueError as exc:
                problems.append(Problem(where, f"{text!r}: {exc}"))
        if name in out:
            problems.append(Problem(where, "given twice"))
        out[name] = list(dict.fromkeys(values))
    if problems:
        raise UserError(problems, source)
    return out


def _sample(hp: Hyperparameter, rng: random.Random) -> Any:
    if hp.choices:
        return rng.choice(hp.choices)
    if hp.type in ("int", "float") and hp.min is not None and hp.max is not None:
        lo, hi = hp.min, hp.max
        if hp.type == "int":
            return rng.randint(math.ceil(lo), math.floor(hi))
        if lo > 0 and hi / lo >= 100:  # wide positive ranges (learning rates): log-uniform
            return math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return rng.uniform(lo, hi)
    if hp.type == "bool":
        return rng.choice([False, True])
    return hp.default


def random_trials(spec: JobSpec, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` samples of every hyperparameter that has choices, a min and max, or is a bool."""
    searchable = {
        n: hp
        for n, hp in spec.hyperparameters.items()
        if hp.choices or hp.type == "bool" or (hp.min is not None and hp.max is not None)
    }
    if not searchable:
        raise UserError.one(
            "hyperparameters", "--random needs hyperparameters with choices, or min and max, to sample from"
        )
    rng = random.Random(seed)
    return [{n: _sample(hp, rng) for n, hp in searchable.items()} for _ in range(count)]


def sweep_name(spec: JobSpec, trials: list[dict[str, Any]], name: str | None) -> str:
    """The given name, or ``<job>-<hash of the trials>``: the same sweep always gets the same name."""
    if name is not None:
        if not is_dns1035(name, SWEEP_NAME_MAX):
            raise UserError.one(
                "--name", f"{name!r} is not valid; expected a DNS-1035 label of at most {SWEEP_NAME_MAX} characters"
            )
        return name
    return derived(spec.name, json.dumps([spec.name, trials], sort_keys=True, default=str), SWEEP_NAME_MAX)


def plan(
    spec: JobSpec, grid: dict[str, list[Any]] | None, random_count: int | None, seed: int, name: str | None
) -> tuple[str, list[Trial]]:
    if grid:
        keys = list(grid)
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    else:
        combos = random_trials(spec, random_count or 0, seed)
    if not combos:
        raise UserError.one("--grid/--random", "the sweep has no trials")
    if len(combos) > MAX_TRIALS:
        raise UserError.one("--grid/--random", f"{len(combos)} trials; at most {MAX_TRIALS}")
    sweep = sweep_name(spec, combos, name)
    limit = min(max_job_name_len(spec.role_sizes()), 63)
    width = len(str(len(combos) - 1))
    trials = []
    for i, params in enumerate(combos):
        suffix = f"-t{i:0{width}d}"
        base = sweep[: limit - len(suffix)].rstrip("-")
        trials.append(Trial(index=i, name=f"{base}{suffix}", params=params))
    return sweep, trials


def manifests(
    spec: JobSpec, sweep: str, trials: list[Trial], parallelism: int, template_dir: str | None, source: str | None
) -> list[dict[str, Any]]:
    """One validated manifest per trial; those past the parallelism limit start suspended."""
    from jobgen.render import render
    from jobgen.validate import manifest_problems

    out = []
    for trial in trials:
        labels = {**spec.labels, SWEEP_LABEL: sweep, TRIAL_LABEL: str(trial.index)}
        annotations = {**spec.annotations, PARAMS_ANNOTATION: json.dumps(trial.params, sort_keys=True)}
        trial_spec = spec.model_copy(update={"name": trial.name, "labels": labels, "annotations": annotations})
        manifest = render(trial_spec, trial.params, template_dir, source)
        manifest["spec"]["runPolicy"]["suspend"] = trial.index >= parallelism
        problems = manifest_problems(manifest)
        if problems:
            raise UserError(problems, f"{source} (trial {trial.index})")
        out.append(manifest)
    return out


def run(
    cluster: Any,
    sweep: str,
    manifests_: list[dict[str, Any]],
    parallelism: int,
    wait: bool,
    timeout: float | None,
    poll: float = 2.0,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Create every trial (idempotently), then resume suspended ones as running ones finish."""
    from jobgen.kubeflow import TERMINAL_STATES, state_of

    namespace = manifests_[0]["metadata"]["namespace"]
    existing = {j["metadata"]["name"]: j for j in cluster.list_jobs(namespace, f"{SWEEP_LABEL}={sweep}")}
    by_name = {m["metadata"]["name"]: m for m in manifests_}
    for name, manifest in by_name.items():
        if name in existing:  # keep a resumed trial resumed on a rerun
            manifest["spec"]["runPolicy"]["suspend"] = bool(existing[name]["spec"].get("runPolicy", {}).get("suspend"))
        cluster.apply(manifest)
    echo(f"sweep {sweep}: {len(by_name)} trials in namespace {namespace}, parallelism {parallelism}")
    deadline = None if timeout is None else time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        jobs = {
            j["metadata"]["name"]: j
            for j in cluster.list_jobs(namespace, f"{SWEEP_LABEL}={sweep}")
            if j["metadata"]["name"] in by_name
        }
        for name, job in sorted(jobs.items()):
            state = "Suspended" if job["spec"].get("runPolicy", {}).get("suspend") else state_of(job)[0]
            if states.get(name) != state:
                echo(f"  {name}: {state}")
                states[name] = state
        active = [n for n, s in states.items() if s not in (*TERMINAL_STATES, "Suspended")]
        waiting = sorted(
            (n for n, s in states.items() if s == "Suspended"),
            key=lambda n: by_name[n]["metadata"]["labels"][TRIAL_LABEL].zfill(6),
        )
        for name in waiting[: max(parallelism - len(active), 0)]:
            by_name[name]["spec"]["runPolicy"]["suspend"] = False
            cluster.apply(by_name[name])
            states[name] = "Resumed"
            echo(f"  {name}: resumed")
        if not wait or (len(states) == len(by_name) and all(s in TERMINAL_STATES for s in states.values())):
            return states
        if deadline is not None and time.monotonic() > deadline:
            echo(f"sweep {sweep}: timed out; rerun the same command to continue")
            return states
        time.sleep(poll)


@dataclass
class Ranked:
    name: str
    state: str
    params: dict[str, Any]
    metric: str | None
    value: float | None
    version: str | None


def rank(cluster: Any, sweep: str, namespace: str) -> list[Ranked]:
    """The sweep's trials, best first by the metric each published to the registry."""
    from jobgen.kubeflow import state_of

    jobs = cluster.list_jobs(namespace, f"{SWEEP_LABEL}={sweep}")
    if not jobs:
        raise UserError.one("--sweep", f"no jobs of sweep {sweep!r} in namespace {namespace!r}")
    results = _registry_results(jobs)
    rows = []
    for job in jobs:
        name = job["metadata"]["name"]
        params = json.loads((job["metadata"].get("annotations") or {}).get(PARAMS_ANNOTATION, "{}"))
        found = results.get(name)
        rows.append(
            Ranked(
                name=name,
                state=state_of(job)[0],
                params=params,
                metric=found and found.metric,
                value=found and found.value,
                version=found and found.version,
            )
        )
    modes = {r.metrics.get("promotion_mode", "max") for r in results.values()}
    sign = -1 if modes == {"min"} else 1
    rows.sort(key=lambda r: (r.value is None, -sign * (r.value or 0.0), r.name))
    return rows


def _output_uris(job: dict[str, Any]) -> set[str]:
    typed = view(job)
    return {
        e["value"]
        for role in typed.roles()
        for e in typed.container(role).get("env", [])
        if e.get("name") == "OUTPUT_URI" and "value" in e
    }


def _registry_results(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """job name -> the registry version (trainer.registry.Published) whose lineage names it."""
    from trainer.registry import Registry

    names = {j["metadata"]["name"] for j in jobs}
    out: dict[str, Any] = {}
    for uri in sorted(set().union(*(_output_uris(j) for j in jobs))):
        out.update(Registry(uri).published_by(names))
    return out


def rank_table(rows: list[Ranked]) -> str:
    from jobgen.status import table

    lines = [["RANK", "NAME", "STATE", "METRIC", "VALUE", "MODEL VERSION", "PARAMS"]]
    for i, r in enumerate(rows, 1):
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
        lines.append(
            [
                str(i) if r.value is not None else "-",
                r.name,
                r.state,
                r.metric or "-",
                "-" if r.value is None else f"{r.value:.4f}",
                r.version or "-",
                params,
            ]
        )
    return table(lines)
