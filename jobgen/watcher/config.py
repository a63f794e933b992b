"""The watcher's configuration file (YAML), validated by pydantic; errors name the file and field.

See docs/watcher.md for every field; charts/retrain-watcher renders this file from Helm values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator, \
    model_validator
from pydantic.alias_generators import to_camel

from jobgen.errors import Problem, UserError
from jobgen.spec import JobSpec, ScalarValue

_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_SUBSCRIPTION = re.compile(r"^projects/[a-z][-a-z0-9.:]{3,62}/subscriptions/[A-Za-z][-A-Za-z0-9._~%+]{2,254}$")
_TOPIC = re.compile(r"^projects/[a-z][-a-z0-9.:]{3,62}/topics/[A-Za-z][-A-Za-z0-9._~%+]{2,254}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class PipelineTarget(_Model):
    """Start a Kubeflow Pipelines run of a compiled pipeline instead of creating a bare job."""

    host: StrictStr = Field(..., description="KFP API endpoint, e.g. https://<kfp-host>/pipeline.")
    package: StrictStr = Field(..., description="Pipeline compiled by `jobgen pipeline SPEC -o FILE`, "
                               "relative to the config file.")
    experiment: StrictStr | None = Field(None, description="KFP experiment of the runs.")
    namespace: StrictStr | None = Field(None, description="KFP (multi-user) namespace of the runs.")


class JobRef(_Model):
    """A job spec: a file (relative to the config file) or inline."""

    file: StrictStr | None = Field(None, description="Path of a jobgen spec, relative to the config file.")
    spec: dict[str, Any] | None = Field(None, description="An inline jobgen spec.")
    pipeline: PipelineTarget | None = Field(None, description="Run this pipeline per data version instead of "
                                            "creating the job; the spec still declares the hyperparameters.")

    @model_validator(mode="after")
    def _one(self) -> "JobRef":
        if (self.file is None) == (self.spec is None):
            raise ValueError("set exactly one of file or spec")
        return self


class Trigger(_Model):
    """New data in a bucket/prefix → one job per completed data version."""

    name: StrictStr = Field(..., description="Trigger name (a label value: lower-case, ≤ 63 chars).")
    job: StrictStr = Field(..., description="Key of `jobs` to run.")
    bucket: StrictStr
    prefix: StrictStr = Field("", description="Object prefix of the data; versions are the next path segment(s).")
    glob: StrictStr | None = Field(None, description="Only objects whose full name matches this glob (GCS "
                                   "matchGlob syntax: *, **, ?, [..], {a,b}).")
    version_depth: Annotated[StrictInt, Field(ge=0, le=8)] = Field(
        1, description="Path segments after prefix that name a version (0: the prefix itself is the version).")
    completion: Literal["marker", "debounce"] = "marker"
    markers: list[StrictStr] = Field(default_factory=lambda: ["_SUCCESS"],
                                     description="Base names that complete a version in marker mode.")
    quiet_seconds: Annotated[float, Field(gt=0, le=86400)] = Field(
        300, description="Debounce mode: a version is complete after this long without new objects.")
    overwrites: Literal["ignore", "retrain"] = Field(
        "ignore", description="A finalize with overwroteGeneration (the object was replaced).")
    metadata_updates: Literal["ignore", "retrain"] = "ignore"
    concurrency: Literal["Forbid", "Replace", "Allow"] = Field(
        "Forbid", description="When a job of this trigger is still running: Forbid queues the newest version "
        "(coalescing older queued ones); Replace deletes the running job; Allow runs both.")
    params: dict[StrictStr, ScalarValue] = Field(default_factory=dict, description="Hyperparameters for its jobs.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _LABEL_VALUE.match(v):
            raise ValueError(f"{v!r} is not valid; expected lower-case letters, digits and '-', ≤ 63 chars")
        return v

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET.match(v):
            raise ValueError(f"{v!r} is not a bucket name (3-222 of a-z 0-9 . _ -)")
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
        200, description="Flow control: messages leased at once.")
    max_bytes: Annotated[StrictInt, Field(ge=1024)] = Field(16 * 1024 * 1024, description="Flow control: bytes.")
    max_lease_seconds: Annotated[StrictInt, Field(ge=60)] = Field(
        7200, description="Ack deadlines are extended while work is in flight, up to this long.")
    threads: Annotated[StrictInt, Field(ge=1, le=64)] = 8
    lease_extension_seconds: Annotated[StrictInt, Field(ge=10, le=600)] = Field(
        60, description="Each ack-deadline extension (and the stream's ack deadline): how soon another "
        "replica gets the messages of a watcher that died.")

    _check = field_validator("subscription")(lambda v: _check_path(v, _SUBSCRIPTION, "subscription"))


class PollSource(_Model):
    interval_seconds: Annotated[float, Field(ge=1)] = 60
    recheck_versions: Annotated[StrictInt, Field(ge=0, le=100)] = Field(
        1, description="The newest handled versions re-read each poll (to see overwritten markers).")


class RequestSource(_Model):
    subscription: StrictStr = Field(..., description="Subscription of retrain requests "
                                    '({"job": NAME, "params": {...}, "id": OPTIONAL}).')
    max_messages: Annotated[StrictInt, Field(ge=1, le=1000)] = 20
    lease_extension_seconds: Annotated[StrictInt, Field(ge=10, le=600)] = 60
    concurrency: Literal["Forbid", "Replace", "Allow"] = "Allow"

    _check = field_validator("subscription")(lambda v: _check_path(v, _SUBSCRIPTION, "subscription"))


class Sources(_Model):
    pubsub: PubSubSource | None = None
    poll: PollSource | None = None
    requests: RequestSource | None = None

    @model_validator(mode="after")
    def _some(self) -> "Sources":
        if self.pubsub is None and self.poll is None and self.requests is None:
            raise ValueError("configure at least one of pubsub, poll, requests")
        return self


class DeadLetter(_Model):
    topic: StrictStr | None = Field(None, description="Rejected messages are published here (with the reason), "
                                    "then acked. Without a topic they are logged, counted and acked.")

    _check = field_validator("topic")(lambda v: v if v is None else _check_path(v, _TOPIC, "topic"))


class Server(_Model):
    host: StrictStr = "0.0.0.0"  # noqa: S104 - a pod's probe/metrics port
    port: Annotated[StrictInt, Field(ge=0, le=65535)] = 8080


class Limits(_Model):
    max_object_name_bytes: Annotated[StrictInt, Field(ge=16, le=1024)] = Field(
        512, description="Longer object names are rejected (GCS allows 1024).")
    allow_unicode_names: StrictBool = Field(False, description="Accept non-ASCII object names.")
    max_message_bytes: Annotated[StrictInt, Field(ge=1024)] = 65536
    dedupe_cache: Annotated[StrictInt, Field(ge=100)] = Field(100_000, description="Keys remembered in memory.")
    ledger_size: Annotated[StrictInt, Field(ge=10, le=5000)] = Field(
        2000, description="Handled keys kept in the state ConfigMap (covers jobs deleted by their TTL).")
    max_pending_versions: Annotated[StrictInt, Field(ge=1)] = 1000


class Retry(_Model):
    initial_seconds: Annotated[float, Field(gt=0)] = 0.5
    max_seconds: Annotated[float, Field(gt=0)] = 30


class WatcherConfig(_Model):
    namespace: StrictStr = Field("training", description="Where jobs are created.")
    state_config_map: StrictStr = Field("retrain-watcher-state", description="ConfigMap holding queue/poll/ledger "
                                        "state; it must exist (the chart creates it).")
    jobs: dict[StrictStr, JobRef]
    triggers: list[Trigger] = Field(default_factory=list)
    sources: Sources
    dead_letter: DeadLetter = Field(default_factory=DeadLetter)
    server: Server = Field(default_factory=Server)
    limits: Limits = Field(default_factory=Limits)
    retry: Retry = Field(default_factory=Retry)
    queue_check_seconds: Annotated[float, Field(gt=0)] = Field(
        15, description="How often queued (Forbid) versions are checked against running jobs.")
    ledger_flush_seconds: Annotated[float, Field(gt=0)] = 2.0

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, v: dict[str, JobRef]) -> dict[str, JobRef]:
        for key in v:
            if not _LABEL_VALUE.match(key) or len(key) > 40:
                raise ValueError(f"job name {key!r} is not valid; expected lower-case letters, digits and '-', "
                                 "≤ 40 chars")
        if not v:
            raise ValueError("at least one job is required")
        return v

    @model_validator(mode="after")
    def _refs(self) -> "WatcherConfig":
        names = set()
        for i, trig in enumerate(self.triggers):
            if trig.job not in self.jobs:
                raise _At(("triggers", i, "job"), f"{trig.job!r} is not a key of jobs ({', '.join(self.jobs)})")
            if trig.name in names:
                raise _At(("triggers", i, "name"), f"duplicate trigger name {trig.name!r}")
            names.add(trig.name)
        if (self.sources.pubsub or self.sources.poll) and not self.triggers:
            raise _At(("triggers",), "pubsub and poll sources need at least one trigger")
        return self


class _At(ValueError):
    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


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
            loc = cause.loc if isinstance(cause, _At) else tuple(
                s for s in err["loc"] if not (isinstance(s, str) and ("[" in s or s.startswith("function-"))))
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
                raise UserError.one(f"jobs.{name}.pipeline.package", f"{path} is not a file; compile one with "
                                    "`jobgen pipeline SPEC -o FILE`", str(config_path or "config"))
            out[name] = path
    return out


def load_jobs(config: WatcherConfig, config_path: str | Path | None) -> dict[str, JobSpec]:
    """The job specs the config names, validated (errors name the spec file or config field)."""
    from jobgen.loader import load_spec, parse_spec

    base = Path(config_path).parent if config_path else Path.cwd()
    specs = {}
    for name, ref in config.jobs.items():
        if ref.file is not None:
            specs[name] = load_spec(base / ref.file)
        else:
            assert ref.spec is not None
            specs[name] = parse_spec(ref.spec, f"{config_path or 'config'}: jobs.{name}.spec")
    for i, trig in enumerate(config.triggers):
        from jobgen.render import resolve_params

        try:
            resolve_params(specs[trig.job], trig.params)
        except UserError as exc:
            raise UserError([Problem(f"triggers[{i}].params", str(p.message)) for p in exc.problems],
                            str(config_path)) from None
    return specs
