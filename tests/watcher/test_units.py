"""Unit tests per stage: events (parsing), rules (filter/batch), trigger (names, rendering), config,
app (dedupe/backoff/dead-letter with an in-memory sink), obs (JSON logs, metrics)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from jobgen.errors import UserError
from jobgen.loader import load_spec
from jobgen.watcher.config import Trigger, load_config, load_jobs, parse_config
from jobgen.watcher.events import Rejected, parse_notification, parse_request
from jobgen.watcher.rules import Candidate, Debouncer, Pending, Rule, Skip, glob_regex
from jobgen.watcher.trigger import JobRequest, build_manifest, data_key, job_name

# The watcher imports prometheus-client (the [watcher] extra); without it these tests cannot run.
pytest.importorskip("prometheus_client", reason="prometheus-client is missing: pip install -e '.[watcher]'")

REPO = Path(__file__).resolve().parents[2]


def note(name: str, gen: int = 1700000000000001, event: str = "OBJECT_FINALIZE", bucket: str = "data-bkt",
         **extra: str) -> tuple[bytes, dict[str, str]]:
    payload = {"kind": "storage#object", "bucket": bucket, "name": name, "generation": str(gen),
               "metageneration": "1", "size": "3"}
    attrs = {"eventType": event, "bucketId": bucket, "objectId": name, "objectGeneration": str(gen),
             "payloadFormat": "JSON_API_V1", "notificationConfig": "projects/_/buckets/x/notificationConfigs/1",
             **extra}
    return json.dumps(payload).encode(), attrs


# --- events -----------------------------------------------------------------------------
def test_parse_finalize():
    ev = parse_notification(*note("mnist/v1/_SUCCESS", 42, overwroteGeneration="41"))
    assert ev.key == ("data-bkt", "mnist/v1/_SUCCESS", 42) and ev.overwrote_generation == 41


@pytest.mark.parametrize("data,attrs,reason", [
    (b"not json", note("a/b")[1], "bad_payload"),
    (b"[1,2]", note("a/b")[1], "bad_payload"),
    (note("a/b")[0], {k: v for k, v in note("a/b")[1].items() if k != "objectGeneration"}, "missing_attribute"),
    (note("a/b")[0], {**note("a/b")[1], "eventType": "OBJECT_EXPLODE"}, "bad_event_type"),
    (note("a/b")[0], {**note("a/b")[1], "objectGeneration": "12abc"}, "bad_attribute"),
    (note("a/b")[0], {**note("a/b")[1], "objectGeneration": "-5"}, "bad_attribute"),
    (note("other/x")[0], note("a/b")[1], "bad_payload"),  # payload disagrees with attributes
    (*note("mnist/../../etc/passwd"), "bad_object_name"),
    (*note("mnist/v1/\x00_SUCCESS"), "bad_object_name"),
    (*note("mnist/v1/\u202e_SUCCESS"), "bad_object_name"),
    (*note("mnist/v1/données/_SUCCESS"), "bad_object_name"),
    (*note("mnist/v1/" + "a" * 1024), "bad_object_name"),
    (*note("/abs/_SUCCESS"), "bad_object_name"),
    (b"x" * 70000, note("a/b")[1], "too_large"),
])
def test_hostile_notifications_are_rejected(data, attrs, reason):
    with pytest.raises(Rejected) as exc:
        parse_notification(data, attrs)
    assert exc.value.reason == reason


def test_unicode_names_allowed_when_configured():
    assert parse_notification(*note("mnist/données/_SUCCESS"), allow_unicode=True).name.endswith("_SUCCESS")


@pytest.mark.parametrize("raw,reason", [
    (b"{", "bad_payload"), (b'"x"', "bad_payload"), (b'{"job": 1}', "bad_request"),
    (b'{"job": "a", "params": []}', "bad_request"), (b'{"job": "a", "extra": 1}', "bad_request"),
    (b'{"job": "a", "params": {"lr": {"$ne": 1}}}', "bad_param"), (b'{"job": "a", "params": {"lr": NaN}}',
                                                                   "bad_payload"),
])
def test_hostile_requests_rejected(raw, reason):
    with pytest.raises(Rejected) as exc:
        parse_request(raw)
    assert exc.value.reason == reason


# --- rules ------------------------------------------------------------------------------
def trig(**kw: Any) -> Trigger:
    base = {"name": "t", "job": "j", "bucket": "data-bkt", "prefix": "mnist/"}
    return Trigger.model_validate({**base, **kw})


def ev(name: str, gen: int = 5, **kw: str):
    return parse_notification(*note(name, gen, **kw))


def test_marker_mode():
    rule = Rule(trig())
    assert rule.decide(ev("other/v1/_SUCCESS")) is None
    assert rule.decide(ev("mnist/v1/part-0")) == Skip("t", "not_marker")
    assert rule.decide(ev("mnist/_SUCCESS")) == Skip("t", "outside_version")
    c = rule.decide(ev("mnist/v1/_SUCCESS", 7))
    assert isinstance(c, Candidate) and (c.key_object, c.generation, c.data_uri) == (
        "mnist/v1/_SUCCESS", 7, "gs://data-bkt/mnist/v1/")
    assert rule.decide(ev("mnist/v1/sub/_SUCCESS")) == Skip("t", "not_marker")
    assert rule.decide(parse_notification(*note("mnist/v1/_SUCCESS", event="OBJECT_DELETE"))) == Skip("t", "deleted")


def test_overwrite_and_metadata_policies():
    assert Rule(trig()).decide(ev("mnist/v1/_SUCCESS", 9, overwroteGeneration="7")) == Skip("t", "overwrite")
    c = Rule(trig(overwrites="retrain")).decide(ev("mnist/v1/_SUCCESS", 9, overwroteGeneration="7"))
    assert isinstance(c, Candidate) and c.generation == 9
    meta = parse_notification(*note("mnist/v1/_SUCCESS", 9, event="OBJECT_METADATA_UPDATE"))
    assert Rule(trig()).decide(meta) == Skip("t", "metadata_update")
    c = Rule(trig(metadataUpdates="retrain")).decide(meta)
    assert isinstance(c, Candidate) and c.key_object.endswith("#metageneration=1")


def test_glob_and_depth():
    rule = Rule(trig(glob="mnist/**/*.tfrecord", completion="debounce", versionDepth=2))
    assert rule.decide(ev("mnist/2026/11/x.csv")) is None
    p = rule.decide(ev("mnist/2026/11/x.tfrecord"))
    assert isinstance(p, Pending) and p.version_prefix == "mnist/2026/11/"
    assert glob_regex("a/{b,c}/*.txt").match("a/c/z.txt") and not glob_regex("a/*.txt").match("a/b/z.txt")
    assert glob_regex("a/[0-9]?").match("a/5x")


def test_debouncer_waits_for_quiet_and_is_bounded():
    now = [0.0]
    d = Debouncer(lambda _t: 10, max_versions=2, clock=lambda: now[0])
    p = lambda v, g: Pending("t", "b", v, g, False, v + "f")  # noqa: E731
    assert d.add(p("a/", 1), "h1") and d.add(p("a/", 3), "h2") and d.add(p("b/", 2), "h3")
    assert not d.add(p("c/", 1), "h4")  # full: the caller nacks
    now[0] = 5
    d.add(p("b/", 4), "h5")
    assert d.due() == []
    now[0] = 10
    (cand, handles), = d.due()
    assert cand.version_prefix == "a/" and cand.generation == 0 and handles == ["h1", "h2"]
    assert sorted(d.drain()) == ["h3", "h5"] and len(d) == 0


# --- trigger ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO / "jobs" / "cpu-ddp.yaml")


def test_job_name_is_deterministic_and_fits(spec):
    a = job_name(spec, data_key("b", "x/_SUCCESS", 1))
    assert a == job_name(spec, data_key("b", "x/_SUCCESS", 1))
    assert a != job_name(spec, data_key("b", "x/_SUCCESS", 2)) != job_name(spec, data_key("b2", "x/_SUCCESS", 1))
    long = spec.model_copy(update={"name": "a" * 50})
    name = job_name(long, data_key("b", "y" * 1000, 3))
    assert len(name) + len("-worker-0") <= 63 and name[0].isalpha()


def test_build_manifest_injects_data_uri_and_generation(spec):
    req = JobRequest(key=data_key("data-bkt", "mnist/v1/_SUCCESS", 77), trigger="t", job="j",
                     params={"epochs": 5}, data_uri="gs://data-bkt/mnist/v1/", generation=77,
                     source_object="gs://data-bkt/mnist/v1/_SUCCESS")
    m = build_manifest(spec, req, "ns1")
    assert m["metadata"]["namespace"] == "ns1"
    assert m["metadata"]["annotations"]["retrain.jobgen.io/object"] == "gs://data-bkt/mnist/v1/_SUCCESS"
    assert m["metadata"]["labels"]["retrain.jobgen.io/generation"] == "77"
    c = m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["DATA_URI"] == "gs://data-bkt/mnist/v1/" and env["DATA_GENERATION"] == "77"
    assert "--epochs=5" in c["args"]


# --- config -----------------------------------------------------------------------------
def test_example_config_loads():
    path = REPO / "jobs" / "watcher" / "watcher.yaml"
    cfg = load_config(path)
    assert set(load_jobs(cfg, path)) == {"cpu-ddp"}


def test_config_errors_name_file_and_field(tmp_path):
    doc = {"jobs": {"j": {"file": "nope.yaml"}}, "sources": {"pubsub": {"subscription": "projects/p/x"}},
           "triggers": [{"name": "t", "job": "k", "bucket": "data-bkt", "prefix": "no-slash", "bogus": 1}]}
    with pytest.raises(UserError) as exc:
        parse_config(doc, "w.yaml")
    text = str(exc.value)
    assert "w.yaml: sources.pubsub.subscription:" in text and "triggers[0].prefix:" in text
    assert "triggers[0].bogus: unknown field" in text
    with pytest.raises(UserError, match=r"triggers\[0\].job: 'k' is not a key of jobs"):
        parse_config({**doc, "sources": {"poll": {}}, "triggers": [{"name": "t", "job": "k", "bucket": "data-bkt"}]},
                     "w.yaml")
    cfg = parse_config({"jobs": {"j": {"file": "nope.yaml"}}, "sources": {"poll": {}},
                        "triggers": [{"name": "t", "job": "j", "bucket": "data-bkt"}]}, str(tmp_path / "w.yaml"))
    with pytest.raises(UserError, match="nope.yaml: cannot read file"):
        load_jobs(cfg, tmp_path / "w.yaml")


def test_trigger_params_checked_against_spec(tmp_path):
    cfg = parse_config({"jobs": {"j": {"file": str(REPO / "jobs" / "cpu-ddp.yaml")}}, "sources": {"poll": {}},
                        "triggers": [{"name": "t", "job": "j", "bucket": "data-bkt", "params": {"lr": "fast"}}]},
                       "w.yaml")
    with pytest.raises(UserError, match=r"triggers\[0\].params"):
        load_jobs(cfg, tmp_path / "w.yaml")


def test_cli_watch_bad_config_no_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "w.yaml"
    bad.write_text("jobs: [\n")
    proc = subprocess.run([sys.executable, "-m", "jobgen.cli", "watch", "--config", str(bad)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr and "Traceback" not in proc.stderr


# --- app with an in-memory sink ------------------------------------------------------------
class MemSink:
    """Implements KubeSink's interface in memory (the integration tests use the real apiserver)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        self.fail = 0
        self.events: list[str] = []
        self.cluster = None

    def create(self, manifest):
        from jobgen.errors import ClusterError

        if self.fail:
            self.fail -= 1
            raise ClusterError("down")
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            return None
        self.jobs[name] = manifest
        return manifest

    def running(self, trigger):
        return []

    def event(self, job, reason, message, type_="Normal"):
        self.events.append(message)

    def read_state(self):
        return json.loads(json.dumps(self.state))

    def update_state(self, mutate):
        changes = mutate(self.read_state())
        if changes:
            self.state.update(changes)


@pytest.fixture
def watcher(tmp_path):
    from jobgen.watcher.app import Watcher

    cfg = parse_config({"jobs": {"j": {"file": str(REPO / "jobs" / "cpu-ddp.yaml")}},
                        "sources": {"pubsub": {"subscription": "projects/proj-x/subscriptions/sub"}},
                        "retry": {"initialSeconds": 0.001, "maxSeconds": 0.01},
                        "triggers": [{"name": "t", "job": "j", "bucket": "data-bkt", "prefix": "mnist/",
                                      "concurrency": "Allow"}]}, "w.yaml")
    dead: list[tuple[str, str]] = []
    w = Watcher(cfg, load_jobs(cfg, tmp_path / "w.yaml"), MemSink(),
                dead_letter=lambda d, a, reason, detail: dead.append((reason, detail)))
    w.dead = dead
    return w


def test_app_dedupes_on_key_not_message(watcher):
    from jobgen.watcher.app import Outcome

    for _ in range(3):  # the same notification three times (new message IDs make no difference)
        assert watcher.on_notification(*note("mnist/v1/_SUCCESS", 11)) is Outcome.ACK
    assert len(watcher.sink.jobs) == 1 and len(watcher.sink.events) == 1
    assert watcher.metrics.value("retrain_events_deduped_total", trigger="t") == 2
    watcher.done = type(watcher.done)(10)  # a restart forgets memory: AlreadyExists still dedupes
    assert watcher.on_notification(*note("mnist/v1/_SUCCESS", 11)) is Outcome.ACK
    assert len(watcher.sink.jobs) == 1


def test_app_nacks_on_cluster_failure_then_succeeds(watcher):
    from jobgen.watcher.app import Outcome

    watcher.sink.fail = 1
    assert watcher.on_notification(*note("mnist/v2/_SUCCESS", 12)) is Outcome.NACK
    assert watcher.metrics.value("retrain_errors_total", stage="cluster") == 1 and not watcher.sink.jobs
    assert watcher.on_notification(*note("mnist/v2/_SUCCESS", 12)) is Outcome.ACK and len(watcher.sink.jobs) == 1


def test_app_dead_letters_hostile_input(watcher, caplog):
    from jobgen.watcher.app import Outcome

    caplog.set_level(logging.WARNING, "jobgen.watcher")
    assert watcher.on_notification(b"\xff\xfe", note("mnist/v1/_SUCCESS")[1]) is Outcome.ACK
    assert watcher.on_request(b'{"job": "j", "params": {"lr": "0.1\\n{{ 7*7 }}"}}', {}) is Outcome.ACK
    assert watcher.on_request(b'{"job": "j", "params": {"nope": 1}}', {}) is Outcome.ACK
    assert watcher.on_request(b'{"job": "j", "params": {"epochs": "many"}}', {}) is Outcome.ACK
    assert [r for r, _ in watcher.dead] == ["bad_payload", "bad_param", "bad_param", "bad_param"]
    assert not watcher.sink.jobs
    assert sum(1 for r in caplog.records if r.getMessage() == "message rejected") == 4


def test_app_retrain_request(watcher):
    from jobgen.watcher.app import Outcome

    assert watcher.on_request(b'{"job": "j", "params": {"lr": 0.01}, "id": "r1"}', {}) is Outcome.ACK
    assert watcher.on_request(b'{"job": "j", "params": {"lr": 0.01}, "id": "r1"}', {}) is Outcome.ACK
    (job,) = watcher.sink.jobs.values()
    args = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert "--lr=0.01" in args


def test_forbid_queue_coalesces(watcher):
    class Busy(MemSink):
        def running(self, trigger):
            return [{"metadata": {"name": "other"}}] if self.busy else []

    sink = Busy()
    sink.busy = True
    watcher.sink = sink
    watcher.triggers["t"] = watcher.triggers["t"].model_copy(update={"concurrency": "Forbid"})
    import jobgen.kube as kube

    orig = kube.get_job
    kube.get_job = lambda cluster, name, ns, kind=None: sink.jobs.get(name)
    try:
        watcher.on_notification(*note("mnist/v1/_SUCCESS", 20))
        watcher.on_notification(*note("mnist/v3/_SUCCESS", 40))
        watcher.on_notification(*note("mnist/v2/_SUCCESS", 30))  # older than the queued one: dropped
        assert not sink.jobs and sink.state["queue"]["t"]["generation"] == 40
        assert watcher.drain_queue() == 0
        sink.busy = False
        assert watcher.drain_queue() == 1
        (job,) = sink.jobs.values()
        assert job["metadata"]["labels"]["retrain.jobgen.io/generation"] == "40" and sink.state["queue"] == {}
    finally:
        kube.get_job = orig


def test_json_log_lines(capsys):
    from jobgen.watcher.obs import JsonFormatter

    rec = logging.LogRecord("jobgen.watcher", logging.INFO, __file__, 1, "job created", (), None)
    rec.job = "x"
    line = json.loads(JsonFormatter().format(rec))
    assert line["msg"] == "job created" and line["job"] == "x" and line["level"] == "info"


def test_keylocks_serialize_one_key():
    from jobgen.watcher.app import _KeyLocks

    locks, inside, peak = _KeyLocks(), [0], [0]

    def work():
        with locks.hold("k"):
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            threading.Event().wait(0.01)
            inside[0] -= 1

    ts = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert peak[0] == 1 and not locks._locks


def test_replace_deletes_the_running_job(watcher):
    class Running(MemSink):
        def __init__(self):
            super().__init__()
            self.deleted = []

        def running(self, trigger):
            return [j for n, j in self.jobs.items() if n not in self.deleted]

        def delete(self, job):
            self.deleted.append(job["metadata"]["name"])

    sink = Running()
    watcher.sink = sink
    watcher.triggers["t"] = watcher.triggers["t"].model_copy(update={"concurrency": "Replace"})
    import jobgen.kube as kube

    orig = kube.get_job
    kube.get_job = lambda cluster, name, ns, kind=None: sink.jobs.get(name)
    try:
        watcher.on_notification(*note("mnist/v1/_SUCCESS", 20))
        (first,) = sink.jobs
        watcher.on_notification(*note("mnist/v2/_SUCCESS", 30))
        assert sink.deleted == [first] and len(sink.jobs) == 2
        watcher.on_notification(*note("mnist/v2/_SUCCESS", 30))  # redelivery: nothing deleted or created
        assert sink.deleted == [first] and len(sink.jobs) == 2
    finally:
        kube.get_job = orig
