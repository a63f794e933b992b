"""``jobgen pipeline``: a job spec → a KFP v2 pipeline (IR YAML) with typed runtime parameters.

The pipeline is validate-data → train (PyTorchJob) → evaluate → register. Its parameters are the
spec's hyperparameters (their KFP types and defaults; names with ``-`` become ``_``) plus
:data:`FIXED_PARAMETERS`. The spec itself (after ``--set``) and any custom templates are embedded
as constants of the train step, which renders the job at run time with the run's values.
Everything the user can get wrong is rejected here, before anything compiles or runs.
"""

from __future__ import annotations

import inspect
import json
import keyword
import re
from pathlib import Path
from typing import Any

from jobgen.errors import Problem, UserError

KFP_TYPES = {"int": int, "float": float, "str": str, "bool": bool}

# name → (type, default or None for "from the spec", help)
FIXED_PARAMETERS: dict[str, tuple[type, Any, str]] = {
    "data_uri": (str, None, "data set prefix gs://…/ with manifest.json (default: the spec's storage.data)"),
    "output_uri": (str, None, "model registry root (default: the spec's storage.output)"),
    "checkpoint_uri": (str, None, "checkpoint root (default: the spec's storage.checkpoints, may be empty)"),
    "namespace": (str, None, "namespace of the PyTorchJob (default: the spec's namespace)"),
    "min_examples": (int, 1, "validate-data fails with fewer training examples"),
    "timeout_seconds": (int, 3600, "train fails (and deletes the job per delete_policy) after this long"),
    "delete_policy": (str, "OnSuccess", "delete the PyTorchJob: Always | OnSuccess | Never"),
    "poll_seconds": (float, 5.0, "how often train checks the job's status"),
    "eval_tolerance": (float, 1e-3, "evaluate fails if its metric differs more from the trainer's"),
}


def parameter_name(hp_name: str) -> str:
    """The pipeline parameter for hyperparameter ``hp_name`` (``batch-size`` → ``batch_size``)."""
    return re.sub(r"[^0-9a-zA-Z_]", "_", hp_name)


def split_image(image: str) -> tuple[str, str | None]:
    """``registry/path/name:tag`` → (``registry/path``, ``tag``); tag None for a digest or none."""
    ref = image.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    tag = last.rpartition(":")[2] if ":" in last else None
    if "@" in image:
        tag = None
    return head, tag


def component_images(spec_image: str, registry: str | None, tag: str | None) -> tuple[str, str]:
    """(trainer image, launcher image): ``<registry>/trainer:<tag>`` and ``<registry>/watcher:<tag>``,
    each part from the flags or else from the spec's image (as `make images` names them)."""
    spec_registry, spec_tag = split_image(spec_image)
    registry = (registry or spec_registry).rstrip("/")
    tag = tag or spec_tag
    problems = []
    if not registry:
        problems.append(Problem("image", f"cannot tell the image registry from {spec_image!r}; pass --image-registry"))
    if not tag:
        problems.append(Problem("image", f"cannot tell the image tag from {spec_image!r}; pass --image-tag"))
    elif not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        problems.append(Problem("--image-tag", f"not a valid image tag: {tag!r}"))
    if problems:
        raise UserError(problems)
    return f"{registry}/trainer:{tag}", f"{registry}/watcher:{tag}"


def _spec_doc(spec_path: str | Path, sets: list[tuple[str, Any]] | None) -> tuple[dict[str, Any], Any]:
    from jobgen.loader import apply_sets, is_manifest, parse_spec, read_document

    source = str(spec_path)
    doc = read_document(spec_path)
    if is_manifest(doc):
        raise UserError.one("apiVersion", "this is a kubeflow.org manifest, not a job spec", source)
    if sets:
        doc = apply_sets(doc, sets, source)
    spec = parse_spec(doc, source)
    if spec.kind != "PyTorchJob":
        raise UserError.one("kind", f"the pipeline trains with a PyTorchJob; this spec is a {spec.kind}", source)
    try:
        doc = json.loads(json.dumps(doc))
    except (TypeError, ValueError) as exc:
        raise UserError.one("", f"the spec must be JSON-serialisable to embed in a pipeline: {exc}", source) from None
    return doc, spec


def _templates(template_dir: str | None) -> dict[str, str]:
    """Custom templates, embedded so the train step renders exactly what `jobgen render` would."""
    if not template_dir:
        return {}
    root = Path(template_dir)
    if not root.is_dir():
        raise UserError.one("--templates", f"not a directory: {template_dir}")
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(root.iterdir()) if p.is_file()}


def pipeline_parameters(spec: Any, defaults: dict[str, Any], source: str) -> list[inspect.Parameter]:
    """Typed pipeline parameters: hyperparameters first, then the fixed ones."""
    problems: list[Problem] = []
    params: list[inspect.Parameter] = []
    seen: dict[str, str] = {}
    for hp_name, hp in spec.hyperparameters.items():
        pname = parameter_name(hp_name)
        if not pname.isidentifier() or keyword.iskeyword(pname) or pname[0].isdigit():
            problems.append(
                Problem(
                    f"hyperparameters.{hp_name}",
                    f"cannot be a pipeline parameter ({pname!r} is not a Python identifier)",
                )
            )
            continue
        if pname in FIXED_PARAMETERS:
            problems.append(Problem(f"hyperparameters.{hp_name}", f"clashes with the pipeline parameter {pname!r}"))
            continue
        if pname in seen:
            problems.append(
                Problem(
                    f"hyperparameters.{hp_name}",
                    f"becomes pipeline parameter {pname!r}, like hyperparameter {seen[pname]!r}",
                )
            )
            continue
        seen[pname] = hp_name
        params.append(
            inspect.Parameter(
                pname, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[hp_name], annotation=KFP_TYPES[hp.type]
            )
        )
    if problems:
        raise UserError(problems, source)
    storage = spec.storage
    spec_defaults = {
        "data_uri": storage.data,
        "output_uri": storage.output,
        "checkpoint_uri": storage.checkpoints or "",
        "namespace": spec.namespace,
    }
    for pname, (ptype, default, _help) in FIXED_PARAMETERS.items():
        value = spec_defaults.get(pname, default)
        kw = {} if value is None else {"default": value}  # no storage.data: a required parameter
        params.append(inspect.Parameter(pname, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ptype, **kw))
    # Required (no default) parameters must come first in a Python signature.
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)
    return params


def build_pipeline(
    spec_path: str | Path,
    sets: list[tuple[str, Any]] | None = None,
    params: dict[str, str] | None = None,
    template_dir: str | None = None,
    image_registry: str | None = None,
    image_tag: str | None = None,
) -> Any:
    """The KFP pipeline (a GraphComponent) for the spec; every user error raises UserError first."""
    from jobgen.render import render, resolve_params
    from jobgen.validate import manifest_problems

    source = str(spec_path)
    doc, spec = _spec_doc(spec_path, sets)
    defaults = resolve_params(spec, params, "-p")  # unknown names, type and range errors
    templates = _templates(template_dir)
    manifest = render(spec, defaults, template_dir, source)  # the job as the defaults render it
    problems = manifest_problems(manifest)
    if problems:
        raise UserError(problems, f"{source} (rendered)")
    trainer_image, launcher_image = component_images(spec.image, image_registry, image_tag)
    signature = inspect.Signature(pipeline_parameters(spec, defaults, source), return_annotation=str)
    hp_params = {hp_name: parameter_name(hp_name) for hp_name in spec.hyperparameters}

    from kfp import dsl

    from jobgen.pipelines.components import make_components

    comps = make_components(trainer_image, launcher_image)
    spec_json = json.dumps(doc, sort_keys=True)

    order = list(signature.parameters)

    def pipeline_func(*args: Any, **named: Any) -> Any:
        kwargs = {**dict(zip(order, args, strict=False)), **named}  # KFP passes the channels positionally
        check = comps.validate_data(data_uri=kwargs["data_uri"], min_examples=kwargs["min_examples"])
        check.set_display_name("validate-data").set_caching_options(False)
        job = comps.train(
            spec_json=spec_json,
            hyperparameters={hp: kwargs[p] for hp, p in hp_params.items()},
            templates=templates,
            data_uri=kwargs["data_uri"],
            output_uri=kwargs["output_uri"],
            checkpoint_uri=kwargs["checkpoint_uri"],
            namespace=kwargs["namespace"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            timeout_seconds=kwargs["timeout_seconds"],
            delete_policy=kwargs["delete_policy"],
            poll_seconds=kwargs["poll_seconds"],
        )
        job.set_display_name("train").set_caching_options(False).after(check)
        ev = comps.evaluate(
            output_uri=kwargs["output_uri"],
            data_uri=kwargs["data_uri"],
            job_name=job.output,
            tolerance=kwargs["eval_tolerance"],
        )
        ev.set_display_name("evaluate").set_caching_options(False)
        reg = comps.register(
            output_uri=kwargs["output_uri"],
            version=ev.outputs["version"],
            metric=ev.outputs["metric"],
            value=ev.outputs["value"],
            mode=ev.outputs["mode"],
        )
        reg.set_display_name("register").set_caching_options(False)
        return reg.output  # the promotion decision (JSON), the pipeline's output

    # KFP reads the pipeline's parameters from __signature__, which typeshed does not declare on functions
    pipeline_func.__signature__ = signature  # type: ignore[attr-defined]
    pipeline_func.__name__ = parameter_name(spec.name)
    pipeline_func.__annotations__ = {**{p.name: p.annotation for p in signature.parameters.values()}, "return": str}
    from jobgen.names import sanitize

    return dsl.pipeline(
        pipeline_func,
        name=sanitize(f"{spec.name}-pipeline"),
        description=f"{spec.name}: validate data → train (PyTorchJob) → evaluate → register. "
        f"Hyperparameters: {', '.join(spec.hyperparameters) or 'none'}.",
    )


def compile_spec(
    spec_path: str | Path,
    sets: list[tuple[str, Any]] | None = None,
    params: dict[str, str] | None = None,
    template_dir: str | None = None,
    output: str | Path = "pipeline.yaml",
    image_registry: str | None = None,
    image_tag: str | None = None,
) -> Path:
    """Compile the spec's pipeline to ``output`` (KFP IR YAML); returns the path written."""
    pipeline = build_pipeline(spec_path, sets, params, template_dir, image_registry, image_tag)
    from kfp import compiler

    out = Path(output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(pipeline, str(out))
    except OSError as exc:
        raise UserError.one("--output", f"cannot write {out}: {exc.strerror or exc}") from None
    return out
