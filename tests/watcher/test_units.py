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
from jobgen.watcher.sensor.events import Rejected, parse_notification, parse_request
from jobgen.watcher.sensor.rules import Candidate, Pending, Rule, Skip, glob_matcher
from jobgen.watcher.targets.naming import JobRequest, build_manifest, data_key, job_name

# The watcher imports prometheus-client (the [watcher] extra); without it these tests cannot run.
pytest.importorskip("prometheus_client", reason="prometheus-client is missing: pip install -e '.[watcher]'")

REPO = Path(__file__).resolve().parents[2]


def note(
    name: str, gen: int = 1700000000000001, event: str = "OBJECT_FINALIZE", bucket: str = "data-bkt", **extra: str
) -> tuple[bytes, dict[str, str]]:
    payload = {
        "kind": "storage#object",
        "bucket": bucket,
        "name": name,
        "generation": str(gen),
        "metageneration": "1",
        "size": "3",
    }
    attrs = {
        "eventType": event,
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": str(gen),
        "payloadFormat": "JSON_API_V1",
        "notificationConfig": "projects/_/buckets/x/notificationConfigs/1",
        **extra,
    }
    return json.dumps(payload).encode(), attrs


# --- events -----------------------------------------------------------------------------
def test_parse_finalize():
    ev = parse_notification(*note("mnist/v1/_SUCCESS", 42, overwroteGeneration="41"))
    assert ev.key == ("data-bkt", "mnist/v1/_SUCCESS", 42) and ev.overwrote_generation == 41


@pytest.mark.parametrize(
    "data,attrs,reason",
    [
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
    ],
)
def test_hostile_notifications_are_rejected(data, attrs, reason):
    with pytest.raises(Rejected) as exc:
        parse_notification(data, attrs)
    assert exc.value.reason == reason


def test_unicode_names_allowed_when_configured():
    assert parse_notification(*note("mnist/données/_SUCCESS"), allow_unicode=True).name.endswith("_SUCCESS")


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"{", "bad_payload"),
        (b'"x"', "bad_payload"),
        (b'{"job": 1}', "bad_request"),
        (b'{"job": "a", "params": []}', "bad_request"),
        (b'{"job": "a", "extra": 1}', "bad_request"),
        (b'{"job": "a", "params": {"lr": {"$ne": 1}}}', "bad_param"),
        (b'{"job": "a", "params": {"lr": NaN}}', "bad_payload"),
    ],
)
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
    assert isinstance(c, Candidate) and (c.key_object, c.key_generation, c.generation, c.data_uri) == (
        "mnist/v1/",
        0,
        7,
        "gs://data-bkt/mnist/v1/",
    )
    # A second marker in the same folder is the same version (same key).
    c2 = Rule(trig(markers=["_SUCCESS", "_DONE"])).decide(ev("mnist/v1/_DONE", 8))
    assert isinstance(c2, Candidate) and (c2.key_object, c2.key_generation) == (c.key_object, c.key_generation)
    assert rule.decide(ev("mnist/v1/sub/_SUCCESS")) == Skip("t", "not_marker")
    assert rule.decide(parse_notification(*note("mnist/v1/_SUCCESS", event="OBJECT_DELETE"))) == Skip("t", "deleted")


def test_overwrite_and_metadata_policies():
    assert Rule(trig()).decide(ev("mnist/v1/_SUCCESS", 9, overwroteGeneration="7")) == Skip("t", "overwrite")
    c = Rule(trig(overwrites="retrain")).decide(ev("mnist/v1/_SUCCESS", 9, overwroteGeneration="7"))
    assert isinstance(c, Candidate) and c.generation == 9 and c.key_generation == 9
    meta = parse_notification(*note("mnist/v1/_SUCCESS", 9, event="OBJECT_METADATA_UPDATE"))
    assert Rule(trig()).decide(meta) == Skip("t", "metadata_update")
    c = Rule(trig(metadataUpdates="retrain")).decide(meta)
    assert isinstance(c, Candidate) and c.key_object.endswith("#metageneration=1")


def test_glob_and_depth():
    rule = Rule(trig(glob="mnist/**/*.tfrecord", completion="debounce", versionDepth=2))
    assert rule.decide(ev("mnist/2026/11/x.csv")) is None
    p = rule.decide(ev("mnist/2026/11/x.tfrecord"))
    assert isinstance(p, Pending) and p.version_prefix == "mnist/2026/11/"
    assert glob_matcher("a/{b,c}/*.txt").match("a/c/z.txt") and not glob_matcher("a/*.txt").match("a/b/z.txt")
    assert glob_matcher("a/[0-9]?").match("a/5x") and not glob_matcher("a/[!0-9]?").match("a/5x")
    assert glob_matcher("**/x.csv").match("x.csv") and glob_matcher("**/x.csv").match("a/b/x.csv")
    assert not glob_matcher("**/x.csv").match("ax.csv") and glob_matcher("a/**").match("a/b/c")


def test_glob_with_many_stars_is_linear():
    """A backtracking regex needs seconds here; the automaton is linear in the name."""
    import time

    g = glob_matcher("*a*a*a*a*a*a*a*a*a*a*a*a*b")
    name = "a" * 5000
    t = time.perf_counter()
    assert not g.match(name) and g.match("a" * 12 + "b")
    assert time.perf_counter() - t < 2.0  # a regex takes minutes; generous for a loaded 2-core machine


def test_debounce_is_durable_and_waits_for_quiet():
    from jobgen.watcher.sensor.debounce import Debounce
    from jobgen.watcher.state import MemBlobs, PendingStore

    now = [1000.0]
    blobs = MemBlobs()
    d = Debounce(PendingStore(blobs), lambda _t: 10, clock=lambda: now[0])
    p = lambda v, g: Pending("t", "b", v, g, False, v + f"f{g}")  # noqa: E731
    for g in range(1, 1001):  # a 1,000-object version: one durable write per `lag` seconds, not per object
        d.add(p("a/", g))
    writes_after_burst = len(blobs.objects)
    assert writes_after_burst == 1
    now[0] += 5
    d.add(p("b/", 2))
    assert d.due() == []
    now[0] += 11  # a/ quiet for 16 s ≥ 10 + lag(2.5)
    ((cand, rec),) = d.due()
    assert cand.version_prefix == "a/" and cand.generation == 1000 and cand.key_generation == 0
    # A restart (a new Debounce over the same bucket) still knows b/ is pending.
    d2 = Debounce(PendingStore(blobs), lambda _t: 10, clock=lambda: now[0])
    assert d2.refresh() == 2
    d.done(rec)
    now[0] += 20
    assert [c.version_prefix for c, _ in d2.due()] == ["b/"]


# --- trigger ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO / "jobs" / "cpu-ddp.yaml")


def test_job_name_is_deterministic_and_fits(spec):
    a = job_name("t", spec.name, data_key("b", "x/", 1))
    assert a == job_name("t", spec.name, data_key("b", "x/", 1))
    assert a != job_name("t", spec.name, data_key("b", "x/", 2)) != job_name("t", spec.name, data_key("b2", "x/", 1))
    # Two triggers on the same spec and data never share a name.
    assert job_name("t2", spec.name, data_key("b", "x/", 1)) != a
    name = job_name("t", "a" * 50, data_key("b", "y" * 1000, 3))
    assert len(name) + len("-evaluator-9999") <= 63 and name[0].isalpha()


def test_job_name_does_not_depend_on_replicas(spec):
    """Long spec names were cut by the replica count; now only (trigger, spec name, key) matter."""
    long = spec.model_copy(update={"name": "a" * 60})
    key = data_key("data-bkt", "mnist/v1/", 0)
    req = JobRequest(key=key, trigger="t", job="j", params={}, data_uri="gs://data-bkt/mnist/v1/", generation=1)
    few = build_manifest(long, req, "ns")
    roles = few["spec"]["pytorchReplicaSpecs"]
    more = long.model_copy(
        update={"replicas": {**long.replicas, "Worker": long.replicas["Worker"].model_copy(update={"replicas": 40})}}
    )
    assert (
        build_manifest(more, req, "ns")["metadata"]["name"] == few["metadata"]["name"] == job_name("t", "a" * 60, key)
    )
    assert "Worker" in roles


def test_build_manifest_injects_data_uri_and_generation(spec):
    req = JobRequest(
        key=data_key("data-bkt", "mnist/v1/", 0),
        trigger="t",
        job="j",
        params={"epochs": 5},
        data_uri="gs://data-bkt/mnist/v1/",
        generation=77,
        source_object="gs://data-bkt/mnist/v1/_SUCCESS",
    )
    m = build_manifest(spec, req, "ns1")
    assert m["metadata"]["namespace"] == "ns1" and m["metadata"]["finalizers"] == ["retrain.jobgen.io/claim"]
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


STATE = {"bucket": "state-bkt"}


def test_config_errors_name_file_and_field(tmp_path):
    doc = {
        "state": STATE,
        "jobs": {"j": {"file": "nope.yaml"}},
        "sources": {"pubsub": {"subscription": "projects/p/x"}},
        "triggers": [{"name": "t", "job": "k", "bucket": "data-bkt", "prefix": "no-slash", "bogus": 1}],
    }
    with pytest.raises(UserError) as exc:
        parse_config(doc, "w.yaml")
    text = str(exc.value)
    assert "w.yaml: sources.pubsub.subscription:" in text and "triggers[0].prefix:" in text
    assert "triggers[0].bogus: unknown field" in text
    with pytest.raises(UserError, match=r"triggers\[0\].job: 'k' is not a key of jobs"):
        parse_config(
            {**doc, "sources": {"poll": {}}, "triggers": [{"name": "t", "job": "k", "bucket": "data-bkt"}]}, "w.yaml"
        )
    cfg = parse_config(
        {
            "state": STATE,
            "jobs": {"j": {"file": "nope.yaml"}},
            "sources": {"poll": {}},
            "triggers": [{"name": "t", "job": "j", "bucket": "data-bkt"}],
        },
        str(tmp_path / "w.yaml"),
    )
    with pytest.raises(UserError, match=r"nope\.yaml: cannot read file"):
        load_jobs(cfg, tmp_path / "w.yaml")


def test_trigger_params_checked_against_spec(tmp_path):
    for params in ({"lr": "fast"}, {"epochs": 10**12}):
        cfg = parse_config(
            {
                "state": STATE,
                "jobs": {"j": {"file": str(REPO / "jobs" / "cpu-ddp.yaml")}},
                "sources": {"poll": {}},
                "triggers": [{"name": "t", "job": "j", "bucket": "data-bkt", "params": params}],
            },
            "w.yaml",
        )
        with pytest.raises(UserError, match=r"triggers\[0\].params"):
            load_jobs(cfg, tmp_path / "w.yaml")


def test_config_rejects_quiet_longer_than_lease_and_bad_globs():
    base = {
        "state": STATE,
        "jobs": {"j": {"file": "x.yaml"}},
        "sources": {"pubsub": {"subscription": "projects/proj-x/subscriptions/sub", "maxLeaseSeconds": 600}},
    }
    with pytest.raises(UserError, match=r"triggers\[0\].quietSeconds: 900 is longer than"):
        parse_config(
            {
                **base,
                "triggers": [
                    {"name": "t", "job": "j", "bucket": "data-bkt", "completion": "debounce", "quietSeconds": 900}
                ],
            },
            "w.yaml",
        )
    with pytest.raises(UserError, match=r"triggers\[0\].glob"):
        parse_config(
            {
                **base,
                "triggers": [
                    {
                        "name": "t",
                        "job": "j",
                        "bucket": "data-bkt",
                        "glob": "{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}",
                    }
                ],
            },
            "w.yaml",
        )


def test_cli_watch_bad_config_no_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "w.yaml"
    bad.write_text("jobs: [\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.cli", "watch", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr and "Traceback" not in proc.stderr


# --- the app over fakes of the watcher's own interfaces ------------------------------------------
def make_app(tmp_path, **trigger: Any):
    from jobgen.watcher.app import App
    from jobgen.watcher.state import MemBlobs
    from tests.watcher.fakes import FakeCluster, ScriptedBlobs

    cfg = parse_config(
        {
            "state": STATE,
            "jobs": {"j": {"file": str(REPO / "jobs" / "cpu-ddp.yaml")}},
            "sources": {"pubsub": {"subscription": "projects/proj-x/subscriptions/sub"}},
            "retry": {"initialSeconds": 0.001, "maxSeconds": 0.01},
            "triggers": [
                {"name": "t", "job": "j", "bucket": "data-bkt", "prefix": "mnist/", "concurrency": "Allow", **trigger}
            ],
        },
        "w.yaml",
    )
    dead: list[tuple[str, str]] = []
    app = App(
        cfg,
        load_jobs(cfg, tmp_path / "w.yaml"),
        FakeCluster(),
        ScriptedBlobs(MemBlobs()),
        dead_letter=lambda d, a, reason, detail: dead.append((reason, detail)),
    )
    app.dead = dead
    return app


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


def deliver(app, data_attrs, deadline: float | None = None):
    import time as _t

    from jobgen.watcher.sensor.sensor import Delivery

    d = Delivery("pubsub", _t.monotonic(), None if deadline is None else _t.monotonic() + deadline)
    return app.sensor.on_notification(*data_attrs, d)


def request(app, raw: bytes):
    from jobgen.watcher.sensor.sensor import Delivery

    return app.sensor.on_request(raw, {}, Delivery("requests"))


def test_app_dedupes_on_key_not_message(app):
    from jobgen.watcher.app import Outcome

    for _ in range(3):  # the same notification three times (new message IDs make no difference)
        assert deliver(app, note("mnist/v1/_SUCCESS", 11)) is Outcome.ACK
    assert len(app.api.jobs) == 1 and len(app.api.events) == 1
    assert app.metrics.value("retrain_events_deduped_total", trigger="t") == 2
    (job,) = app.api.jobs.values()
    assert job["metadata"]["finalizers"] == []  # released once the claim existed
    # A restart forgets memory, and the job was deleted by its TTL: the claim still dedupes.
    app.sensor.done = type(app.sensor.done)(10)
    app.api.finish(job["metadata"]["name"], ttl_delete=True)
    assert not app.api.jobs
    assert deliver(app, note("mnist/v1/_SUCCESS", 11)) is Outcome.ACK
    assert not app.api.jobs and len(app.api.created) == 1


def test_crash_between_create_and_claim_recovers_without_duplicate(app):
    """The job exists (with its finalizer) but the claim was never written: a TTL cannot remove the
    job, and the redelivery records it instead of creating a second one."""
    from jobgen.watcher.app import Outcome

    app.stores.blobs.crash_creates = 1  # the process dies right before writing the claim
    with pytest.raises(RuntimeError):
        app.sensor.fire_candidate(Rule(app.config.triggers[0]).decide(ev("mnist/v1/_SUCCESS", 5)))
    (name,) = app.api.jobs
    app.api.finish(name, ttl_delete=True)
    assert name in app.api.jobs  # held by the finalizer
    assert deliver(app, note("mnist/v1/_SUCCESS", 5)) is Outcome.ACK
    assert name not in app.api.jobs and app.api.created == [name]  # recorded, released, TTL-deleted
    assert deliver(app, note("mnist/v1/_SUCCESS", 5)) is Outcome.ACK and app.api.created == [name]


def test_two_replicas_share_claims(tmp_path):
    """Two apps over one cluster and one state bucket; a job TTL-deleted between deliveries."""
    from jobgen.watcher.app import App

    a = make_app(tmp_path)
    b = App(a.config, a.job_target.specs, a.api, a.stores.blobs)
    threads = [
        threading.Thread(
            target=lambda app=app: [deliver(app, note(f"mnist/v{i}/_SUCCESS", 100 + i)) for i in range(50)]
        )
        for app in (a, b, a, b)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(a.api.created) == 50 and len(a.api.jobs) == 50
    for name in list(a.api.jobs):
        a.api.finish(name, ttl_delete=True)
    for i in range(50):
        deliver(b, note(f"mnist/v{i}/_SUCCESS", 100 + i))
    assert len(a.api.created) == 50 and not a.api.jobs


def test_duplicate_created_after_ttl_race_is_deleted(app):
    """Replica B read "no claim"; meanwhile A created, claimed, released, and the TTL deleted the
    job; B's create then succeeds: B sees the claim naming another uid and deletes its duplicate."""
    from jobgen.watcher.state import Claim

    cand = Rule(app.config.triggers[0]).decide(ev("mnist/v1/_SUCCESS", 5))
    req = app.sensor.request_of(cand)
    app.stores.claims.put(Claim("t", req.key, "created", "other", "PyTorchJob", "ns", "uid-of-a", True))
    app.stores.blobs.stale_reads.add(app.stores.claims.path("t", req.key))  # B read before A's claim
    fired = app.job_target.fire(req)
    assert fired.result == "deduped" and not app.api.jobs and len(app.api.deleted) == 1


def test_name_collision_is_reported_not_swallowed(app):
    from jobgen.watcher.app import Outcome

    cand = Rule(app.config.triggers[0]).decide(ev("mnist/v1/_SUCCESS", 5))
    req = app.sensor.request_of(cand)
    name = app.job_target.name_of(req)
    app.api.jobs[name] = {
        "kind": "PyTorchJob",
        "metadata": {"name": name, "uid": "x", "annotations": {"retrain.jobgen.io/key": "other"}},
    }
    assert deliver(app, note("mnist/v1/_SUCCESS", 5)) is Outcome.ACK
    assert app.dead == [("name_collision", app.dead[0][1])] and "collision" in app.dead[0][1]
    assert app.metrics.value("retrain_dead_lettered_total", reason="name_collision") == 1
    assert [e[1] for e in app.api.events] == ["RetrainNameCollision"]


def test_transient_failure_keeps_the_message_until_the_backend_returns(app):
    from jobgen.watcher.app import Outcome

    app.api.fail = 25  # 25 failed calls in a row: retried in place, no nack
    assert deliver(app, note("mnist/v2/_SUCCESS", 12), deadline=60) is Outcome.ACK
    assert len(app.api.jobs) == 1 and app.dead == []
    assert app.metrics.value("retrain_errors_total", stage="kubernetes") >= 25
    assert app.outages.current() == {} and app.metrics.value("retrain_outage", backend="kubernetes") == 0
    app.stores.blobs.inner.fail = 5
    assert deliver(app, note("mnist/v3/_SUCCESS", 13), deadline=60) is Outcome.ACK and len(app.api.jobs) == 2


def test_transient_failure_past_the_lease_budget_nacks_and_reports_outage(app):
    from jobgen.watcher.app import Outcome

    app.api.fail = 10**9
    assert deliver(app, note("mnist/v2/_SUCCESS", 12), deadline=0.2) is Outcome.NACK
    assert app.dead == [] and app.metrics.value("retrain_outage", backend="kubernetes") == 1
    assert "kubernetes" in app.outages.current()


def test_app_dead_letters_hostile_input(app, caplog):
    from jobgen.watcher.app import Outcome

    caplog.set_level(logging.WARNING, "jobgen.watcher")
    assert deliver(app, (b"\xff\xfe", note("mnist/v1/_SUCCESS")[1])) is Outcome.ACK
    assert request(app, b'{"job": "j", "params": {"lr": "0.1\\n{{ 7*7 }}"}}') is Outcome.ACK
    assert request(app, b'{"job": "j", "params": {"nope": 1}}') is Outcome.ACK
    assert request(app, b'{"job": "j", "params": {"epochs": "many"}}') is Outcome.ACK
    assert request(app, b'{"job": "j", "params": {"epochs": 100000000000000}}') is Outcome.ACK
    assert [r for r, _ in app.dead] == ["bad_payload", "bad_param", "bad_param", "bad_param", "bad_param"]
    assert not app.api.jobs
    assert sum(1 for r in caplog.records if r.getMessage() == "message rejected") == 5


@pytest.mark.parametrize(
    "attrs",
    [
        {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": "b",
            "objectId": "x",
            "objectGeneration": "1",
            "payloadFormat": "JSON_API_V1",
        },
        {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "x" * 10, "objectGeneration": "1" * 40},
        {"eventType": 5, "bucketId": None, "objectId": [], "objectGeneration": {}},
    ],
)
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{" * 100000,
        b'{"bucket": "b", "name": "x", "generation": [1]}',
        b'{"bucket": "b", "name": "x", "generation": "1", "size": "-1"}',
        b"\x80",
    ],
)
def test_every_parse_failure_is_a_clean_rejection(app, data, attrs):
    from jobgen.watcher.app import Outcome

    assert deliver(app, (data, attrs)) is Outcome.ACK
    assert len(app.dead) == 1 and app.dead[0][0] != "internal"


def test_app_retrain_request(app):
    from jobgen.watcher.app import Outcome

    assert request(app, b'{"job": "j", "params": {"lr": 0.01}, "id": "r1"}') is Outcome.ACK
    assert request(app, b'{"job": "j", "params": {"lr": 0.01}, "id": "r1"}') is Outcome.ACK
    (job,) = app.api.jobs.values()
    args = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert "--lr=0.01" in args


def test_forbid_queue_orders_by_generation_and_isolates_bad_entries(tmp_path):
    app = make_app(tmp_path, concurrency="Forbid")
    deliver(app, note("mnist/v1/_SUCCESS", 20))
    (first,) = app.api.jobs
    deliver(app, note("mnist/v3/_SUCCESS", 40))
    deliver(app, note("mnist/v2/_SUCCESS", 30))  # late and older than the queued one: superseded
    assert len(app.api.jobs) == 1
    assert app.metrics.value("retrain_events_skipped_total", reason="superseded") == 1
    # A corrupt entry of another trigger never blocks this one.
    app.stores.blobs.inner.create("queue/other/00000000000000000001-x.json", b"not json")
    assert app.sensor.drain_queue() == 0  # still running
    app.api.finish(first)
    assert app.sensor.drain_queue() == 1
    gens = sorted(j["metadata"]["labels"]["retrain.jobgen.io/generation"] for j in app.api.jobs.values())
    assert gens == ["20", "40"] and not list(app.stores.blobs.list("queue/"))
    assert app.metrics.value("retrain_events_rejected_total", reason="bad_queue_entry") == 1


def test_forbid_requests_do_not_coalesce(tmp_path):
    from jobgen.watcher.config import RequestSource

    app = make_app(tmp_path)
    object.__setattr__(
        app.config.sources,
        "requests",
        RequestSource(subscription="projects/proj-x/subscriptions/req", concurrency="Forbid"),
    )
    assert request(app, b'{"job": "j", "params": {"lr": 0.1}, "id": "a"}').value == "ack"
    assert request(app, b'{"job": "j", "params": {"lr": 0.2}, "id": "b"}').value == "ack"
    assert request(app, b'{"job": "j", "params": {"lr": 0.3}, "id": "c"}').value == "ack"
    assert len(app.api.jobs) == 1
    for _ in range(2):
        (running,) = [n for n, j in app.api.jobs.items() if "status" not in j]
        app.api.finish(running)
        assert app.sensor.drain_queue() == 1
    assert len(app.api.jobs) == 3  # three distinct requests, three jobs, in order


def test_replace_never_displaces_a_newer_version(tmp_path):
    app = make_app(tmp_path, concurrency="Replace")
    deliver(app, note("mnist/v1/_SUCCESS", 20))
    (first,) = app.api.jobs
    deliver(app, note("mnist/v2/_SUCCESS", 30))
    assert app.api.deleted == [first]
    app.api.remove_finalizer("PyTorchJob", first, "retrain.jobgen.io/claim")
    assert len(app.api.jobs) == 1
    deliver(app, note("mnist/v1/_SUCCESS", 20))  # redelivery of v1: its claim says done
    deliver(app, note("mnist/v0/_SUCCESS", 10))  # a late, older version: superseded, v2 keeps running
    assert app.api.deleted == [first] and len(app.api.jobs) == 1 and len(app.api.created) == 2
    assert app.metrics.value("retrain_events_skipped_total", reason="superseded") == 1


def test_two_triggers_on_one_object(tmp_path):
    from jobgen.watcher.app import App

    base = make_app(tmp_path)
    cfg = parse_config(
        {
            "state": STATE,
            "jobs": {"j": {"file": str(REPO / "jobs" / "cpu-ddp.yaml")}},
            "sources": {"pubsub": {"subscription": "projects/proj-x/subscriptions/sub"}},
            "triggers": [
                {
                    "name": n,
                    "job": "j",
                    "bucket": "data-bkt",
                    "prefix": "mnist/",
                    "concurrency": "Allow",
                    "params": {"epochs": e},
                    "completion": "debounce",
                    "quietSeconds": 1,
                }
                for n, e in (("a", 1), ("b", 2))
            ],
        },
        "w.yaml",
    )
    app = App(cfg, base.job_target.specs, base.api, base.stores.blobs)
    deliver(app, note("mnist/v1/part-0", 5))
    # A restart right after the ack: both triggers' pending versions are in the state bucket.
    app2 = App(cfg, base.job_target.specs, base.api, base.stores.blobs)
    assert app2.sensor.debounce.refresh() == 2
    app2.sensor.debounce.clock = lambda: 10**10
    assert app2.sensor.fire_due() == 2
    assert len(app2.api.jobs) == 2  # same spec, same data, two triggers: two names


def test_json_log_lines(capsys):
    from jobgen.watcher.obs import JsonFormatter

    rec = logging.LogRecord("jobgen.watcher", logging.INFO, __file__, 1, "job created", (), None)
    rec.job = "x"
    line = json.loads(JsonFormatter().format(rec))
    assert line["msg"] == "job created" and line["job"] == "x" and line["level"] == "info"


def test_claims_serialize_one_key(app):
    """Eight threads on one key (this replaced the per-key locks): one job, one claim, one Event."""
    cand = Rule(app.config.triggers[0]).decide(ev("mnist/v1/_SUCCESS", 5))
    results: list[str] = []
    ts = [
        threading.Thread(target=lambda: results.append(app.retry.call(lambda: app.sensor.fire_candidate(cand))))
        for _ in range(8)
    ]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert sorted(results).count("created") == 1 and len(app.api.created) == 1 and len(app.api.events) == 1


def test_pipeline_runs_are_created_once_across_replicas(tmp_path):
    """Two replicas' pipeline targets over one state bucket, eight threads on one version: one run.
    A claim left 'creating' by a dead replica is taken over after the lease."""
    from types import SimpleNamespace

    from jobgen.watcher.config import PipelineTarget
    from jobgen.watcher.obs import Metrics
    from jobgen.watcher.retrying import Outages, RetryPolicy
    from jobgen.watcher.state import Claim, ClaimStore, MemBlobs, _dump
    from jobgen.watcher.targets.pipeline import PipelineRunTarget

    runs: list[str] = []
    lock = threading.Lock()

    def create_run(host, package, params, *, data_uri, generation, experiment, namespace):
        with lock:  # a KFP server: find by name, else create (not atomic across callers by itself)
            name = f"run-{data_uri}-{generation}"
            if name in runs:
                return SimpleNamespace(name=name, run_id=str(runs.index(name)), created=False)
            threading.Event().wait(0.01)
            runs.append(name)
            return SimpleNamespace(name=name, run_id=str(len(runs) - 1), created=True)

    blobs = MemBlobs()
    targets = [
        PipelineRunTarget(
            ClaimStore(blobs),
            {"j": PipelineTarget(host="h", package="p.yaml")},
            {"j": tmp_path / "p.yaml"},
            {},
            lease_seconds=60,
            create_run=create_run,
        )
        for _ in range(2)
    ]
    retry = RetryPolicy(0.001, 0.01, threading.Event(), Outages(Metrics()))
    req = JobRequest(key=data_key("b", "v1/", 0), trigger="t", job="j", params={}, data_uri="gs://b/v1/", generation=5)
    results: list[str] = []
    ts = [
        threading.Thread(target=lambda i=i: results.append(retry.call(lambda: targets[i % 2].fire(req)).result))
        for i in range(8)
    ]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(runs) == 1 and results.count("created") == 1
    # A replica died after claiming v2 and before creating its run: the claim is taken over.
    req2 = JobRequest(key=data_key("b", "v2/", 0), trigger="t", job="j", params={}, data_uri="gs://b/v2/", generation=6)
    stale = Claim("t", req2.key, "creating", kind="PipelineRun", at="2020-01-01T00:00:00Z")
    blobs.create(ClaimStore(blobs).path("t", req2.key), _dump(stale.content()))
    assert targets[0].fire(req2).result == "created" and len(runs) == 2
    assert targets[1].fire(req2).result == "deduped" and len(runs) == 2
