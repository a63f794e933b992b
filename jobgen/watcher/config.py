"""The watcher's configuration file (YAML), validated by pydantic; errors name the file and field.

See docs/watcher.md for every field; charts/retrain-watcher renders this file from Helm values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from jobgen.errors import Problem, UserError
from jobgen.spec import JobSpec, ScalarValue

if TYPE_CHECKING:
    from jobgen.predict.spec import PredictionSpec

_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_SUBSCRIPTION = re.compile(r"^projects/[a-z][-a-z0-9.:]{3,62}/subscriptions/[A-Za-z][-A-Za-z0-9._~%+]{2,254}$")
_TOPIC = re.compile(r"^projects/[a-z][-a-z0-9.:]{3,62}/topics/[A-Za-z][-A-Za-z0-9._~%+]{2,254}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class PipelineTarget(_Model):
    """Start a Kubeflow Pipelines run of a compiled pipeline instead of creating a bare job."""

    host: StrictStr = Field(..., description="KFP API endpoint, e.g. https://<kfp-host>/pipeline.")
    package: StrictStr = Field(
        ..., description="Pipeline compiled by `jobgen pipeline SPEC -o FILE`, relative to the config file."
    )
    experiment: StrictStr | None = Field(None, description="KFP experiment of the runs.")
    namespace: StrictStr | None = Field(None, description="KFP (multi-user) namespace of the runs.")


class JobRef(_Model):
    """A job spec: a file (relative to the config file) or inline."""

    file: StrictStr | None = Field(None, description="Path of a jobgen spec, relative to the config file.")
    spec: dict[str, Any] | None = Field(None, description="An inline jobgen spec.")
    pipeline: PipelineTarget | None = Field(
        None,
        description="Run this pipeline per data version instead of "
        "creating the job; the spec still declares the hyperparameters.",
    )

    @model_validator(mode="after")
    def _one(self) -> JobRef:
        if (self.file is None) == (self.spec is None):
            raise ValueError("set exactly one of file or spec")
        return self


class Trigger(_Model):
    """New data in a bucket/prefix → one job per completed data version."""

    name: StrictStr = Field(..., description="Trigger name (a label value: lower-case, ≤ 63 chars).")
    job: StrictStr = Field(..., description="Key of `jobs` to run.")
    bucket: StrictStr
    prefix: StrictStr = Field("", description="Object prefix of the data; versions are the next path segment(s).")
    glob: StrictStr | None = Field(
        None,
        description="Only objects whose full name matches this glob (GCS matchGlob syntax: *, **, ?, [..], {a,b}).",
    )
    version_depth: Annotated[StrictInt, Field(ge=0, le=8)] = Field(
        1, description="Path segments after prefix that name a version (0: the prefix itself is the version)."
    )
    completion: Literal["marker", "debounce"] = "marker"
    markers: list[StrictStr] = Field(
        default_factory=lambda: ["_SUCCESS"], description="Base names that complete a version in marker mode."
    )
    quiet_seconds: Annotated[float, Field(gt=0, le=86400)] = Field(
        300, description="Debounce mode: a version is complete after this long without new objects."
    )
    overwrites: Literal["ignore", "retrain"] = Field(
        "ignore", description="A finalize with overwroteGeneration (the object was replaced)."
    )
    metadata_updates: Literal["ignore", "retrain"] = "ignore"
    concurrency: Literal["Forbid", "Replace", "Allow"] = Field(
        "Forbid",
        description="When a job of this trigger is still running: Forbid queues the newest version "
        "(coalescing older queued ones); Replace deletes the running job; Allow runs both.",
    )
    params: dict[StrictStr, ScalarValue] = Field(default_factory=dict, description="Hyperparameters for its jobs.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _LABEL_VALUE.match(v):
            raise ValueError(f"{v!r} is not valid; expected lower-case letters, digits and '-', ≤ 63 chars")
        return v

    _bucket = field_validator("bucket")(lambda v: _check_bucket(v))

    @field_validator("glob")
    @classmethod
    def _glob(cls, v: str | None) -> str | None:
        if v is not None:
            from jobgen.watcher.sensor.rules import Glob

            if not v or len(v) > 1024:
                raise ValueError("expected a glob of 1-1024 characters")
            Glob(v)  # raises ValueError on too many {a,b} alternatives
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v.startswith("/") or "//" in v or any(seg in (".", "..") for seg in v.split("/")):
            raise ValueError(f"{v!r} is not a clean object prefix (no leading '/', '//', '.' or '..')")
        if v and not v.endswith("/"):
            raise ValueError(f"{v!r} must end with '/' (a folder of versions), e.g. {v + '/'!r}")
        return v

    @field_validator("markers")
    @classmethod
    def _markers(cls, v: list[str]) -> list[str]:
        for m in v:
            if not m or "/" in m:
                raise ValueError(f"marker {m!r} must be a base name without '/'")
        return v


class PubSubSource(_Model):
    subscription: StrictStr = Field(..., description="projects/<project>/subscriptions/<name> of GCS notifications.")
    max_messages: Annotated[StrictInt, Field(ge=1, le=10000)] = Field(
        200, description="Flow control: messages leased at once."
    )
    max_bytes: Annotated[StrictInt, Field(ge=1024)] = Field(16 * 1024 * 1024, description="Flow control: bytes.")
    max_lease_seconds: Annotated[StrictInt, Field(ge=60, le=86400)] = Field(
        3600,
        description="While a backend (apiserver, GCS, KFP) is unreachable a message stays leased (its ack "
        "deadline extended) and is retried, for at most this long after it arrived; then it is nacked.",
    )
    threads: Annotated[StrictInt, Field(ge=1, le=64)] = 8
    lease_extension_seconds: Annotated[StrictInt, Field(ge=10, le=600)] = Field(
        60,
        description="Each ack-deadline extension (and the stream's ack deadline): how soon another "
        "replica gets the messages of a watcher that died.",
    )

    _check = field_validator("subscription")(lambda v: _check_path(v, _SUBSCRIPTION, "subscription"))


class PollSource(_Model):
    interval_seconds: Annotated[float, Field(ge=1, le=86400)] = 60


class RequestSource(_Model):
    subscription: StrictStr = Field(
        ..., description='Subscription of retrain requests ({"job": NAME, "params": {...}, "id": OPTIONAL}).'
    )
    max_messages: Annotated[StrictInt, Field(ge=1, le=1000)] = 20
    lease_extension_seconds: Annotated[StrictInt, Field(ge=10, le=600)] = 60
    max_lease_seconds: Annotated[StrictInt, Field(ge=60, le=86400)] = 3600
    threads: Annotated[StrictInt, Field(ge=1, le=64)] = 4
    concurrency: Literal["Forbid", "Replace", "Allow"] = "Allow"

    _check = field_validator("subscription")(lambda v: _check_path(v, _SUBSCRIPTION, "subscription"))


class Sources(_Model):
    pubsub: PubSubSource | None = None
    poll: PollSource | None = None
    requests: RequestSource | None = None

    @model_validator(mode="after")
    def _some(self) -> Sources:
        if self.pubsub is None and self.poll is None and self.requests is None:
            raise ValueError("configure at least one of pubsub, poll, requests")
        return self


class DeadLetter(_Model):
    topic: StrictStr | None = Field(
        None,
        description="Rejected messages are published here (with the reason), "
        "then acked. Without a topic they are logged, counted and acked.",
    )

    _check = field_validator("topic")(lambda v: v if v is None else _check_path(v, _TOPIC, "topic"))


class Server(_Model):
    host: StrictStr = "0.0.0.0"  # noqa: S104 - a pod's probe/metrics port
    port: Annotated[StrictInt, Field(ge=0, le=65535)] = 8080


class Limits(_Model):
    max_object_name_bytes: Annotated[StrictInt, Field(ge=16, le=1024)] = Field(
        512, description="Longer object names are rejected (GCS allows 1024)."
    )
    allow_unicode_names: StrictBool = Field(False, description="Accept non-ASCII object names.")
    max_message_bytes: Annotated[StrictInt, Field(ge=1024, le=10 * 1024 * 1024)] = 65536
    dedupe_cache: Annotated[StrictInt, Field(ge=100, le=10_000_000)] = Field(
        100_000, description="Claims known to be complete, cached in memory (a claim never changes once complete)."
    )
    max_numeric_param: Annotated[float, Field(gt=0, le=1e15)] = Field(
        1e9,
        description="Bound on the magnitude of a numeric parameter whose hyperparameter declares no maximum "
        "(retrain requests and trigger params).",
    )


class State(_Model):
    """Durable state shared by every replica: a GCS bucket (terraform's <prefix>-watcher-state)."""

    bucket: StrictStr = Field(..., description="State bucket: claims/, pending/, queue/, poll/ objects.")
    prefix: StrictStr = Field("", description="Object prefix inside the bucket (several watchers can share one).")
    retention_days: Annotated[StrictInt, Field(ge=1, le=3650)] = Field(
        30,
        description="Must equal the bucket's lifecycle age (terraform watcher_state_retention_days): "
        'events older than this are acked and ignored (retrain_events_skipped{reason="expired"}).',
    )
    claim_lease_seconds: Annotated[float, Field(ge=1, le=3600)] = Field(
        60, description="Advanced: a Forbid/Replace decision older than this is re-taken."
    )

    _bucket = field_validator("bucket")(lambda v: _check_bucket(v))

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and (not v.endswith("/") or v.startswith("/") or "//" in v):
            raise ValueError(f"{v!r} must be empty or a folder ending in '/'")
        return v


class Retry(_Model):
    """The one retry policy for transient failures: exponential backoff with full jitter."""

    initial_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    max_seconds: Annotated[float, Field(gt=0, le=600)] = 30


class WatcherConfig(_Model):
    namespace: StrictStr = Field("training", description="Where jobs are created.")
    state: State
    jobs: dict[StrictStr, JobRef]
    triggers: list[Trigger] = Field(default_factory=list)
    sources: Sources
    dead_letter: DeadLetter = Field(default_factory=lambda: DeadLetter.model_validate({}))
    server: Server = Field(default_factory=Server)
    limits: Limits = Field(default_factory=lambda: Limits.model_validate({}))
    retry: Retry = Field(default_factory=Retry)
    queue_check_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        15, description="How often queued (Forbid) versions are checked against running jobs."
    )
    pending_check_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        5, description="How often durable pending (debounce) versions are re-read from the state bucket."
    )

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, v: dict[str, JobRef]) -> dict[str, JobRef]:
        for key in v:
            if not _LABEL_VALUE.match(key) or len(key) > 40:
                raise ValueError(
                    f"job name {key!r} is not valid; expected lower-case letters, digits and '-', ≤ 40 chars"
                )
        if not v:
            raise ValueError("at least one job is required")
        return v

    @model_validator(mode="after")
    def _refs(self) -> WatcherConfig:
        names = set()
        for i, trig in enumerate(self.triggers):
            if trig.job not in self.jobs:
                raise _At(("triggers", i, "job"), f"{trig.job!r} is not a key of jobs ({', '.join(self.jobs)})")
            if trig.name in names:
                raise _At(("triggers", i, "name"), f"duplicate trigger name {trig.name!r}")
            names.add(trig.name)
        if (self.sources.pubsub or self.sources.poll) and not self.triggers:
            raise _At(("triggers",), "pubsub and poll sources need at least one trigger")
        lease = self.sources.pubsub.max_lease_seconds if self.sources.pubsub else None
        for i, trig in enumerate(self.triggers):
            if lease is not None and trig.completion == "debounce" and trig.quiet_seconds > lease:
                raise _At(
                    ("triggers", i, "quietSeconds"),
                    f"{trig.quiet_seconds:g} is longer than "
                    f"sources.pubsub.maxLeaseSeconds ({lease}); expected at most the maximum lease",
                )
        return self


class _At(ValueError):
    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _check_bucket(v: str) -> str:
    if not _BUCKET.match(v):
        raise ValueError(f"{v!r} is not a bucket name (3-222 of a-z 0-9 . _ -)")
    return v


def _check_path(v: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(v):
        kind = "subscriptions" if what == "subscription" else "topics"
        raise ValueError(f"{v!r} is not a {what} path; expected projects/<project>/{kind}/<name>")
    return v


def _fmt(loc: tuple[Any, ...]) -> str:
    out = ""
    for seg in loc:
        out += f"[{seg}]" if isinstance(seg, int) else ("." if out else "") + str(seg)
    return out


def parse_config(doc: Any, source: str) -> WatcherConfig:
    if not isinstance(doc, dict):
        raise UserError.one("", f"expected a YAML mapping at the top level, got {type(doc).__name__}", source)
    try:
        return WatcherConfig.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            cause = (err.get("ctx") or {}).get("error")
            loc = (
                cause.loc
                if isinstance(cause, _At)
                else tuple(
                    s for s in err["loc"] if not (isinstance(s, str) and ("[" in s or s.startswith("function-")))
                )
            )
            msg = str(cause) if cause is not None else err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            elif "input" in err and not isinstance(err["input"], (dict, list)) and cause is None:
                msg += f" (got {err['input']!r})"
            problems.append(Problem(_fmt(loc), msg.removeprefix("Value error, ")))
        raise UserError(problems, source) from None


def load_config(path: str | Path) -> WatcherConfig:
    from jobgen.loader import read_document

    return parse_config(read_document(path), str(path))


def pipeline_packages(config: WatcherConfig, config_path: str | Path | None) -> dict[str, Path]:
    """job → compiled pipeline file, for jobs with a pipeline target (checked to exist)."""
    base = Path(config_path).parent if config_path else Path.cwd()
    out = {}
    for name, ref in config.jobs.items():
        if ref.pipeline is not None:
            path = base / ref.pipeline.package
            if not path.is_file():
                raise UserError.one(
                    f"jobs.{name}.pipeline.package",
                    f"{path} is not a file; compile one with `jobgen pipeline SPEC -o FILE`",
                    str(config_path or "config"),
                )
            out[name] = path
    return out


def _documents(config: WatcherConfig, config_path: str | Path | None) -> dict[str, tuple[dict[str, Any], str]]:
    """job → (its spec document, where it came from)."""
    from jobgen.loader import read_document

    base = Path(config_path).parent if config_path else Path.cwd()
    out = {}
    for name, ref in config.jobs.items():
        if ref.file is not None:
            out[name] = (read_document(base / ref.file), str(base / ref.file))
        else:
            assert ref.spec is not None
            out[name] = (ref.spec, f"{config_path or 'config'}: jobs.{name}.spec")
    return out


def load_jobs(config: WatcherConfig, config_path: str | Path | None) -> dict[str, JobSpec]:
    """The training job specs the config names, validated (errors name the spec file or config
    field). Prediction specs (``kind: BatchPrediction``) are :func:`load_predictions`'."""
    from jobgen.loader import spec_from_document
    from jobgen.predict.load import is_prediction

    specs = {
        name: spec_from_document(doc, source)
        for name, (doc, source) in _documents(config, config_path).items()
        if not is_prediction(doc)
    }
    for i, trig in enumerate(config.triggers):
        if trig.job not in specs:
            continue  # a prediction job: checked by load_predictions
        from jobgen.render import resolve_params
        from jobgen.watcher.sensor.events import Rejected
        from jobgen.watcher.sensor.sensor import check_bounds

        try:
            values = resolve_params(specs[trig.job], trig.params)
            check_bounds(specs[trig.job], {k: values[k] for k in trig.params}, config.limits.max_numeric_param)
        except UserError as exc:
            raise UserError(
                [Problem(f"triggers[{i}].params", str(p.message)) for p in exc.problems], str(config_path)
            ) from None
        except Rejected as rej:
            raise UserError.one(f"triggers[{i}].params", rej.detail, str(config_path)) from None
    return specs


def load_predictions(
    config: WatcherConfig, config_path: str | Path | None
) -> tuple[WatcherConfig, dict[str, PredictionSpec]]:
    """The prediction specs (``kind: BatchPrediction``) the config names, validated, and the config
    with their triggers' concurrency resolved to Allow: every input version is predicted, none is
    queued, coalesced or replaced. Forbid/Replace set explicitly, trigger params or a pipeline on a
    prediction job are errors naming the config field."""
    from jobgen.predict.load import is_prediction, parse

    source = str(config_path or "config")
    specs = {
        name: parse(doc, where) for name, (doc, where) in _documents(config, config_path).items() if is_prediction(doc)
    }
    for name in specs:
        if config.jobs[name].pipeline is not None:
            raise UserError.one(
                f"jobs.{name}.pipeline", "a prediction job (kind BatchPrediction) cannot run as a pipeline", source
            )
    triggers = []
    for i, trig in enumerate(config.triggers):
        if trig.job in specs:
            if trig.params:
                raise UserError.one(
                    f"triggers[{i}].params",
                    f"job {trig.job!r} is a prediction job, which has no hyperparameters; remove params",
                    source,
                )
            if "concurrency" in trig.model_fields_set and trig.concurrency != "Allow":
                raise UserError.one(
                    f"triggers[{i}].concurrency",
                    f"{trig.concurrency} would queue, coalesce or replace input versions of prediction job "
                    f"{trig.job!r}; expected Allow (the default for prediction jobs: every version is predicted)",
                    source,
                )
        triggers.append(trig.model_copy(update={"concurrency": "Allow"}) if trig.job in specs else trig)
    return config.model_copy(update={"triggers": triggers}), specs
