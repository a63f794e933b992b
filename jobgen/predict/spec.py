"""The prediction spec: ``kind: BatchPrediction``, one batch prediction job over a set of GCS inputs.

Placement and resources are the training spec's own models (:class:`jobgen.spec.Placement`,
:class:`jobgen.spec.Resources`), so GPU placement reads and renders exactly as for training.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from jobgen.errors import FieldError
from jobgen.names import is_dns1035
from jobgen.spec import (
    Placement,
    Resources,
    valid_annotations,
    valid_dns1123_label,
    valid_env,
    valid_image,
    valid_labels,
)
from jobgen.uris import parse_gs

KIND = "BatchPrediction"
LATEST = "LATEST"
DEFAULT_COMMAND = ("python", "-m", "trainer.predict")

_GLOB_CHARS = re.compile(r"[*?\[]")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, allow_inf_nan=False
    )


def check_gs_uri(value: str, what: str, glob: bool = False) -> str:
    """``value`` if it is ``gs://<bucket>[/<path>]`` (globs only where ``glob``); else ValueError."""
    parse_gs(value)  # the one gs:// parser: ValueError says what was expected
    if not glob and _GLOB_CHARS.search(value):
        raise ValueError(f"{value!r} contains a glob character (*, ? or [); {what} must be a plain prefix")
    return value


def split_input(uri: str) -> tuple[str, str]:
    """``gs://b/p/*.npy`` → (``gs://b/p``, ``*.npy``); a URI without a glob → (URI, ``**``)."""
    match = _GLOB_CHARS.search(uri)
    if match is None:
        return uri.rstrip("/"), "**"
    cut = uri.rfind("/", 0, match.start())
    prefix, pattern = uri[:cut], uri[cut + 1 :]
    if prefix in ("gs:/", "gs:") or prefix.count("/") < 2:
        raise ValueError(f"{uri!r}: the glob must come after the bucket name, e.g. gs://bucket/inputs/*.npy")
    return prefix, pattern


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as GCS's matchGlob reads it: ``*`` and ``?`` stay within one path segment, ``**`` spans
    segments (``**/`` also matches nothing), ``[abc]``/``[!abc]`` are character classes."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                raise ValueError(f"unclosed '[' in glob {pattern!r}")
            body = pattern[i + 1 : end]
            neg = body.startswith("!")
            body = body[1:] if neg else body
            out += "[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(rf"^{out}$")


class Input(_Model):
    """What to predict: the objects under ``prefix`` whose path (relative to it) matches ``glob``."""

    prefix: StrictStr = Field(..., description="gs://bucket/prefix of the inputs.")
    glob: StrictStr = Field(
        "**",
        description="Glob of the input paths relative to prefix (e.g. *.npy, **/*.npz). "
        "Objects whose name starts with '_' or '.' (markers) never match.",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return check_gs_uri(v, "input.prefix").rstrip("/")

    @field_validator("glob")
    @classmethod
    def _glob(cls, v: str) -> str:
        if not v or v.startswith("/"):
            raise ValueError(f"{v!r} is not a relative glob; expected e.g. *.npy or **/*.npz")
        glob_regex(v)
        return v


class ModelRef(_Model):
    """The registered model: a registry root (OUTPUT_URI of the training job) and a version."""

    uri: StrictStr = Field(..., description="Registry root gs://<models>/<model> (holds LATEST and <version>/).")
    version: StrictStr = Field(LATEST, description="LATEST (resolved once, when the job starts) or a pinned version.")

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        check_gs_uri(v, "model.uri")
        if v.rstrip("/").count("/") < 3:
            raise ValueError(f"{v!r} names a bucket only; expected the registry root gs://<models>/<model>")
        return v.rstrip("/")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.match(v) or v == "_COMPLETE":
            raise ValueError(f"{v!r} is not a model version; expected LATEST or a version such as v3")
        return v


class PredictionSpec(_Model):
    """A batch prediction job: a Kubernetes ``batch/v1`` Indexed Job."""

    api_version: Literal["jobgen/v1"] = "jobgen/v1"  # the spec format version (jobgen.spec.API_VERSION)
    kind: Literal["BatchPrediction"]
    name: StrictStr = Field(..., description="Prediction name (DNS-1035); jobs are named <name>-<hash of the input>.")
    namespace: StrictStr = "default"
    image: StrictStr = Field(..., min_length=1)
    command: list[StrictStr] = Field(list(DEFAULT_COMMAND), description="The predictor's command.")
    args: list[StrictStr] = Field(default_factory=list, description="Extra args after the rendered ones.")
    input: Input
    model: ModelRef
    output: StrictStr = Field(..., description="gs:// prefix; each job writes under <output>/<job name>/.")
    batch_size: Annotated[StrictInt, Field(ge=1, le=1 << 20)] = Field(256, description="Examples per forward pass.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when resources.gpu > 0.")
    parallelism: Annotated[StrictInt, Field(ge=1, le=1000)] = Field(1, description="Pods running at once.")
    completions: Annotated[StrictInt, Field(ge=1, le=10000)] | None = Field(
        None, description="Indexes (disjoint shares of the inputs); default: parallelism."
    )
    backoff_limit_per_index: Annotated[StrictInt, Field(ge=0, le=100)] = Field(
        2, description="Retries of one index before it counts as failed (other indexes carry on)."
    )
    max_failed_indexes: Annotated[StrictInt, Field(ge=0)] | None = Field(
        None, description="Fail the whole job once more indexes than this have failed."
    )
    active_deadline_seconds: Annotated[StrictInt, Field(ge=1)] | None = None
    ttl_seconds_after_finished: Annotated[StrictInt, Field(ge=0)] | None = None
    prefetch: Annotated[StrictInt, Field(ge=1, le=256)] = Field(8, description="Inputs read ahead of the device.")
    resources: Resources = Resources.model_validate({})  # frozen models: one shared default is safe
    placement: Placement = Placement.model_validate({})
    env: dict[StrictStr, StrictStr | StrictInt | StrictFloat | StrictBool] = Field(default_factory=dict)
    service_account: StrictStr | None = None
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    pod_annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    @field_validator("input", mode="before")
    @classmethod
    def _input_shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                prefix, glob = split_input(v)
            except ValueError:
                return {"prefix": v}  # reported by Input's validators
            return {"prefix": prefix, "glob": glob}
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"uri": v} if isinstance(v, str) else v

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return check_gs_uri(v, "output").rstrip("/")

    _dns1123 = field_validator("namespace", "service_account")(valid_dns1123_label)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not is_dns1035(v):
            raise ValueError(
                f"{v!r} is not a DNS-1035 label; expected ≤ 63 lower-case letters, digits and '-', "
                "starting with a letter and ending alphanumeric"
            )
        return v

    _image = field_validator("image")(valid_image)
    _env = field_validator("env")(valid_env)
    _labels = field_validator("labels")(valid_labels)
    _annotations = field_validator("annotations", "pod_annotations")(valid_annotations)

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must not be empty; expected the predictor's command, e.g. [python, -m, trainer.predict]")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> PredictionSpec:
        if self.device == "cuda" and self.resources.gpu < 1:
            raise FieldError(
                ("device",),
                "is cuda but resources.gpu is 0; request GPUs (resources.gpu ≥ 1 "
                "with placement.accelerator) or use device cpu/auto",
            )
        if self.device == "cpu" and self.resources.gpu > 0:
            raise FieldError(
                ("device",),
                f"is cpu but resources.gpu is {self.resources.gpu}; the GPUs would "
                "sit idle: use device cuda/auto or drop resources.gpu",
            )
        if self.resources.gpu > 0 and not self.placement.accelerator:
            raise FieldError(
                ("resources", "gpu"),
                f"gpu is {self.resources.gpu} but placement.accelerator is "
                "not set; expected an accelerator type such as nvidia-l4 (GKE schedules GPUs by "
                "accelerator)",
            )
        if self.completions is not None and self.parallelism > self.completions:
            raise FieldError(
                ("parallelism",),
                f"is {self.parallelism} but completions is {self.completions}; more pods than indexes would never run",
            )
        if self.max_failed_indexes is not None and self.max_failed_indexes >= self.indexes:
            raise FieldError(("maxFailedIndexes",), f"must be below the number of indexes ({self.indexes})")
        out = self.output.rstrip("/") + "/"
        if (self.input.prefix.rstrip("/") + "/").startswith(out) or out.startswith(self.input.prefix + "/"):
            raise FieldError(
                ("output",),
                f"{self.output!r} overlaps input.prefix {self.input.prefix!r}; "
                "outputs would become inputs of the next run",
            )
        return self

    @property
    def indexes(self) -> int:
        """Number of indexes (the Job's completions)."""
        return self.completions if self.completions is not None else self.parallelism

    @property
    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if self.resources.gpu > 0 else "cpu"
        return self.device
