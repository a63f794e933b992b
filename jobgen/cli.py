"""The `jobgen` command line.

Start-up stays light: each command imports what it needs (pydantic and Jinja2 for rendering, the
kubernetes client only for commands that talk to a cluster). User errors print one message per
problem, naming file and field, and exit 2; cluster errors print one line and exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from jobgen import __version__
from jobgen.errors import ApiRejected, ClusterError, UserError

OUTPUT_FORMATS = click.Choice(["yaml", "json"])


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message if message.startswith("error") else f"error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns known errors into messages and exit codes instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _fail("\n".join(f"error: {line}" for line in str(exc).splitlines()), exc.exit_code)
        except ClusterError as exc:
            _fail(str(exc), exc.exit_code)
        except ApiRejected as exc:
            _fail(f"the apiserver rejected the request ({exc.status} {exc.reason}): {exc}", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            sys.exit(0)


def _pairs(values: tuple[str, ...], option: str, typed: bool) -> list[tuple[str, Any]]:
    from jobgen.loader import parse_set_value

    out = []
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected PATH=VALUE, got {item!r}", param_hint=option)
        out.append((key, parse_set_value(raw) if typed else raw))
    return out


def _set_options(fn: Any) -> Any:
    fn = click.option(
        "--templates",
        "template_dir",
        type=click.Path(file_okay=False, exists=True),
        envvar="JOBGEN_TEMPLATES",
        help="Directory searched for templates before the packaged ones.",
    )(fn)
    fn = click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="NAME=VALUE",
        help="Hyperparameter value, checked against its declared type and bounds.",
    )(fn)
    fn = click.option(
        "--set-string",
        "set_strings",
        multiple=True,
        metavar="PATH=VALUE",
        help="Like --set, but the value is always a string.",
    )(fn)
    return click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="PATH=VALUE",
        help="Override a spec field, e.g. --set replicas.Worker.replicas=4 (helm syntax).",
    )(fn)


def _cluster_options(fn: Any) -> Any:
    fn = click.option(
        "--kubeconfig", envvar="KUBECONFIG", type=click.Path(dir_okay=False), help="Path to the kubeconfig file."
    )(fn)
    return click.option("--context", "context", help="The kube context to use.")(fn)


# The --dry-run and -o of the commands that server-side apply (their values go to _apply_and_report).
_apply_dry_run = click.option(
    "--dry-run",
    type=click.Choice(["none", "client", "server"]),
    default="none",
    show_default=True,
    help="client: render and validate only; server: ask the apiserver to validate without persisting.",
)
_apply_output = click.option(
    "-o", "--output", type=click.Choice(["name", "yaml", "json"]), default="name", show_default=True
)


def _render_file(
    path: str, sets: tuple[str, ...], set_strings: tuple[str, ...], params: tuple[str, ...], template_dir: str | None
) -> dict[str, Any]:
    """Render a spec, or read a manifest as is (``--set``/``--param`` only apply to specs)."""
    from jobgen.loader import is_manifest, read_document, spec_from_document

    overrides = _pairs(sets, "--set", True) + _pairs(set_strings, "--set-string", False)
    param_values = dict(_pairs(params, "--param", False))
    doc = read_document(path)
    if is_manifest(doc):
        if overrides or param_values:
            raise UserError.one(
                "", "--set/--set-string/--param apply to job specs, not to kubeflow.org manifests", path
            )
        return doc
    from jobgen.render import render

    return render(spec_from_document(doc, path, overrides), param_values, template_dir, source=path)


def _validated(manifest: dict[str, Any], path: str) -> dict[str, Any]:
    from jobgen.validate import manifest_problems

    problems = manifest_problems(manifest)
    if problems:
        raise UserError(problems, f"{path} (rendered {manifest.get('kind')})")
    return manifest


def _emit(data: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        from jobgen.render import dump_yaml

        click.echo(dump_yaml(data), nl=False)


def _apply_and_report(
    manifest: dict[str, Any],
    resource: str,
    apply: Callable[[Any, bool], dict[str, Any]],
    dry_run: str,
    output: str,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Server-side apply ``manifest`` with ``apply(cluster, server_dry_run)`` (not at all for
    ``--dry-run=client``), then print ``RESOURCE/NAME serverside-applied`` (``-o name``) or the object."""
    if dry_run == "client":
        result, suffix = manifest, " (dry run)"
    else:
        from jobgen import kube

        result = apply(kube.connect(context, kubeconfig), dry_run == "server")
        suffix = " (server dry run)" if dry_run == "server" else ""
    if output == "name":
        click.echo(f"{resource}/{result['metadata']['name']} serverside-applied{suffix}")
    else:
        _emit(result, output)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobgen")
def main() -> None:
    """Render, validate and submit Kubeflow PyTorchJob/TFJob (kubeflow.org/v1) training jobs."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@_set_options
@click.option("-o", "--output", type=OUTPUT_FORMATS, default="yaml", show_default=True)
def render(
    spec: str,
    sets: tuple[str, ...],
    set_strings: tuple[str, ...],
    params: tuple[str, ...],
    template_dir: str | None,
    output: str,
) -> None:
    """Print the PyTorchJob/TFJob manifest rendered from SPEC."""
    _emit(_render_file(spec, sets, set_strings, params, template_dir), output)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@_set_options
def validate(
    files: tuple[str, ...],
    sets: tuple[str, ...],
    set_strings: tuple[str, ...],
    params: tuple[str, ...],
    template_dir: str | None,
) -> None:
    """Validate job specs or manifests offline.

    Checks the vendored training-operator v1.9.4 CRD schema, the Kubernetes v1.36 pod template
    schema and the operator webhook's rules. Exits 2 if any file has a problem.
    """
    failed: list[UserError] = []
    for path in files:
        try:
            manifest = _validated(_render_file(path, sets, set_strings, params, template_dir), path)
        except UserError as exc:
            failed.append(exc)
            continue
        click.echo(f"{path}: valid {manifest['kind']} {manifest['metadata']['name']}")
    if failed:
        raise UserError([], None, hint="\n".join(str(exc) for exc in failed))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@_set_options
@_apply_dry_run
@click.option("--force-conflicts", is_flag=True, help="Take over fields that another field manager owns.")
@_apply_output
@_cluster_options
def submit(
    spec: str,
    sets: tuple[str, ...],
    set_strings: tuple[str, ...],
    params: tuple[str, ...],
    template_dir: str | None,
    dry_run: str,
    force_conflicts: bool,
    output: str,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Render, validate and server-side apply SPEC (field manager "jobgen"). Idempotent."""
    manifest = _validated(_render_file(spec, sets, set_strings, params, template_dir), spec)
    _apply_and_report(
        manifest,
        f"{manifest['kind'].lower()}.kubeflow.org",
        lambda cluster, server: cluster.apply(manifest, dry_run=server, force_conflicts=force_conflicts),
        dry_run,
        output,
        context,
        kubeconfig,
    )


@main.command()
@click.argument("name", required=False)
@click.option("-n", "--namespace", help="Namespace (default: the kube context's).")
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-l", "--selector", help="Label selector, e.g. team=vision.")
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True)
@click.option(
    "--sweep",
    "sweep_name",
    default=None,
    metavar="NAME",
    help="Rank the trials of sweep NAME by the metric each published to the model registry.",
)
@_cluster_options
def status(
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
    output: str,
    sweep_name: str | None,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Show state, replicas ready/succeeded/failed, age, and why a job is Pending or Failed.

    Prediction Jobs (jobgen predict) are listed too, with their indexes as the replicas."""
    from jobgen import kube
    from jobgen.status import status_table, summarize

    cluster = kube.connect(context, kubeconfig)
    ns = namespace or cluster.namespace
    if sweep_name:
        from dataclasses import asdict

        from jobgen import sweep as sweeps

        ranked = sweeps.rank(cluster, sweep_name, ns)
        if output == "table":
            click.echo(sweeps.rank_table(ranked))
        else:
            _emit([asdict(r) for r in ranked], output)
        return
    from jobgen.predict import status as predictions

    if name:
        job = cluster.get_job(name, ns)
        prediction = predictions.one(cluster, name, ns) if job is None else None
        if prediction is not None:
            statuses = [prediction]
        elif job is not None:
            statuses = [summarize(job, cluster.job_pods(name, ns), cluster.events(name, ns))]
        else:
            raise UserError.one("NAME", f"no PyTorchJob, TFJob or prediction Job named {name!r} in namespace {ns!r}")
    else:
        jobs = _all_namespaces(cluster, selector) if all_namespaces else cluster.list_jobs(ns, selector)
        statuses = []
        for job in sorted(jobs, key=lambda j: (j["metadata"]["namespace"], j["metadata"]["name"])):
            state = summarize(job)
            if state.reason or state.state == "Pending":
                meta = job["metadata"]
                state = summarize(job, cluster.job_pods(meta["name"], meta["namespace"]))
            statuses.append(state)
        statuses += predictions.statuses(cluster, None if all_namespaces else ns, selector)
    if output == "table":
        if not statuses:
            click.echo(f"No jobs found in namespace {ns}." if not all_namespaces else "No jobs found.", err=True)
            return
        click.echo(status_table(statuses))
    else:
        _emit([s.as_dict() for s in statuses] if not name else statuses[0].as_dict(), output)


def _all_namespaces(cluster: Any, selector: str | None) -> list[dict[str, Any]]:
    return [j for ns in cluster.namespaces() for j in cluster.list_jobs(ns, selector)]


def _job(cluster: Any, name: str, namespace: str) -> dict[str, Any]:
    job: dict[str, Any] | None = cluster.get_job(name, namespace)
    if job is None:
        raise UserError.one("NAME", f"no PyTorchJob or TFJob named {name!r} in namespace {namespace!r}")
    return job


@main.command()
@click.argument("name")
@click.option(
    "--replica",
    default=None,
    metavar="ROLE-INDEX",
    help="Which replica, e.g. master-0, worker-1 (default: master-0, chief-0 or worker-0).",
)
@click.option("-f", "--follow", is_flag=True, help="Stream new log lines.")
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Lines from the end to show.")
@click.option("-n", "--namespace")
@_cluster_options
def logs(
    name: str,
    replica: str | None,
    follow: bool,
    tail: int | None,
    namespace: str | None,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Print the logs of one replica of job NAME."""
    from jobgen import kube
    from jobgen.kubeflow import view

    cluster = kube.connect(context, kubeconfig)
    ns = namespace or cluster.namespace
    typed = view(_job(cluster, name, ns))
    found = typed.find_replica(replica) if replica else typed.primary_replica()
    if found is None:
        choices = ", ".join(f"{r.lower()}-0..{typed.replica_count(r) - 1}" for r in typed.roles())
        raise UserError.one("--replica", f"{replica!r} is not a replica of {name}; expected one of {choices}")
    out = sys.stdout.buffer
    for chunk in cluster.pod_logs(typed.pod_name(*found), ns, typed.kind.container, follow, tail):
        out.write(chunk)
        out.flush()


@main.command()
@click.argument("name")
@click.option("-n", "--namespace")
@_cluster_options
def delete(name: str, namespace: str | None, context: str | None, kubeconfig: str | None) -> None:
    """Delete job NAME (its pods and Services go with it)."""
    from jobgen import kube

    cluster = kube.connect(context, kubeconfig)
    ns = namespace or cluster.namespace
    job = _job(cluster, name, ns)
    cluster.delete_job(job["kind"], name, ns)
    click.echo(f"{job['kind'].lower()}.kubeflow.org/{name} deleted")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--local",
    "local",
    is_flag=True,
    required=True,
    help="Run every replica as a local process (CPU, gloo) with the operator's env contract.",
)
@_set_options
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=None, help="Stop every replica after this many seconds."
)
@click.option("--dry-run", is_flag=True, help="Print each replica's command and env as JSON; run nothing.")
def run(
    spec: str,
    local: bool,
    sets: tuple[str, ...],
    set_strings: tuple[str, ...],
    params: tuple[str, ...],
    template_dir: str | None,
    timeout: float | None,
    dry_run: bool,
) -> None:
    """Run SPEC (or a manifest) on this machine, one process per replica.

    Each replica gets the env training-operator v1.9.4 would inject (MASTER_ADDR, RANK, WORLD_SIZE,
    PET_*, or TF_CONFIG), with addresses on 127.0.0.1. Exits with the first failing replica's code.
    """
    from jobgen import localrun

    manifest = _validated(_render_file(spec, sets, set_strings, params, template_dir), spec)
    replicas = localrun.plan(manifest, source=spec)
    if dry_run:
        click.echo(localrun.describe(replicas))
        return
    code = localrun.run(replicas, timeout=timeout)
    click.echo(localrun.summary(replicas), err=True)
    state = "Succeeded" if code == 0 else "Failed"
    click.echo(f"{manifest['kind'].lower()}/{manifest['metadata']['name']} {state} (local)", err=True)
    sys.exit(code)


@main.command()
@click.option(
    "--config",
    "config",
    required=True,
    type=click.Path(dir_okay=False),
    help="Watcher config (YAML): jobs, triggers, sources; see docs/watcher.md.",
)
@click.option(
    "--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])
)
@_cluster_options
def watch(config: str, log_level: str, context: str | None, kubeconfig: str | None) -> None:
    """Retrain on new data: GCS notifications/polling/requests → one job per data version."""
    from jobgen.watcher.server import main as watch_main

    sys.exit(watch_main(config, kubeconfig=kubeconfig, context=context, log_level=log_level))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--set", "sets", multiple=True, metavar="PATH=VALUE", help="Override a spec field, e.g. --set parallelism=4."
)
@click.option(
    "--run",
    "run",
    default=None,
    metavar="ID",
    help="Another prediction over the same input (the job name hashes the input and this id).",
)
@_apply_dry_run
@_apply_output
@_cluster_options
def predict(
    spec: str,
    sets: tuple[str, ...],
    run: str | None,
    dry_run: str,
    output: str,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Submit the batch prediction SPEC (kind BatchPrediction) as an Indexed Job; see docs/prediction.md.

    One Job per input: submitting the same input again changes nothing."""
    from jobgen.predict import submit as predictions

    _, manifest = predictions.build(spec, _pairs(sets, "--set", True), run)
    _apply_and_report(
        manifest,
        "job.batch",
        lambda cluster, server: predictions.apply(cluster, manifest, server_dry_run=server),
        dry_run,
        output,
        context,
        kubeconfig,
    )


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@_set_options
@click.option(
    "--grid",
    multiple=True,
    metavar="NAME=V1,V2,…",
    help="Values of one hyperparameter (repeatable; the sweep is their cartesian product).",
)
@click.option(
    "--random",
    "random_count",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="N trials sampled from the declared choices / min-max ranges (log-uniform for wide ranges).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random.")
@click.option("--name", default=None, help="Sweep name (default: <job>-<hash of the trials>, so reruns match).")
@click.option(
    "--parallelism",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Trials running at once; the rest wait suspended.",
)
@click.option(
    "--wait/--detach",
    default=True,
    show_default=True,
    help="Wait and resume trials until all finish, or create them and return (rerun to continue).",
)
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="Stop waiting after this many seconds.")
@click.option("--dry-run", is_flag=True, help="Print the trials; create nothing.")
@_cluster_options
def sweep(
    spec: str,
    sets: tuple[str, ...],
    set_strings: tuple[str, ...],
    params: tuple[str, ...],
    template_dir: str | None,
    grid: tuple[str, ...],
    random_count: int | None,
    seed: int,
    name: str | None,
    parallelism: int,
    wait: bool,
    timeout: float | None,
    dry_run: bool,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Run a hyperparameter sweep of SPEC: one job per trial, labelled jobgen.io/sweep=NAME.

    Rank the finished trials with `jobgen status --sweep NAME`.
    """
    from jobgen import sweep as sweeps
    from jobgen.loader import load_spec

    if bool(grid) == bool(random_count):
        raise UserError.one("--grid/--random", "give either --grid NAME=V1,V2 (repeatable) or --random N")
    overrides = _pairs(sets, "--set", True) + _pairs(set_strings, "--set-string", False)
    job_spec = load_spec(spec, overrides)
    fixed = dict(_pairs(params, "--param", False))
    typed_grid = sweeps.parse_grid(job_spec, list(grid), spec) if grid else None
    if fixed:  # fixed values become defaults of every trial, checked like any other value
        from jobgen.render import resolve_params

        values = resolve_params(job_spec, fixed, spec)
        hps = {n: hp.model_copy(update={"default": values[n]}) for n, hp in job_spec.hyperparameters.items()}
        job_spec = job_spec.model_copy(update={"hyperparameters": hps})
    name_, trials = sweeps.plan(job_spec, typed_grid, random_count, seed, name)
    manifests = sweeps.manifests(job_spec, name_, trials, parallelism, template_dir, spec)
    if dry_run:
        for trial in trials:
            click.echo(f"{trial.name}  {json.dumps(trial.params, sort_keys=True)}")
        return
    from jobgen import kube

    cluster = kube.connect(context, kubeconfig)
    states = sweeps.run(cluster, name_, manifests, parallelism, wait, timeout, echo=click.echo)
    if wait:
        click.echo(f"sweep {name_}: " + ", ".join(f"{n} {states.get(n, '?')}" for n in sorted(states)))
        click.echo(f"rank it: jobgen status --sweep {name_} -n {job_spec.namespace}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@_set_options
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    default="pipeline.yaml",
    show_default=True,
    help="Where to write the compiled KFP v2 pipeline (IR YAML).",
)
@click.option(
    "--image-registry",
    default=None,
    metavar="REGISTRY",
    help="Registry of the component images built from images/ (default: the spec image's registry).",
)
@click.option("--image-tag", default=None, help="Tag of the component images (default: the spec image's tag).")
def pipeline(
    spec: str,
    sets: tuple[str, ...],
    set_strings: tuple[str, ...],
    params: tuple[str, ...],
    template_dir: str | None,
    output: str,
    image_registry: str | None,
    image_tag: str | None,
) -> None:
    """Compile SPEC into a KFP v2 pipeline: validate data → train (PyTorchJob) → evaluate → register.

    The spec's hyperparameters become typed pipeline parameters.
    """
    from jobgen.pipelines.compile import compile_spec

    path = compile_spec(
        spec,
        sets=_pairs(sets, "--set", True) + _pairs(set_strings, "--set-string", False),
        params=dict(_pairs(params, "--param", False)),
        template_dir=template_dir,
        output=output,
        image_registry=image_registry,
        image_tag=image_tag,
    )
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
