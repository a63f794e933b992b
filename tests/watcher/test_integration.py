"""The watcher against real parts: fake-gcs-server publishing real notifications to the Pub/Sub
emulator, the local control plane (kube-apiserver, training-operator), `jobgen watch` as a process."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.watcher.conftest import wait_for

# The watcher imports prometheus-client (the [watcher] extra); without it these tests cannot run.
pytest.importorskip("prometheus_client", reason="prometheus-client is missing: pip install -e '.[watcher]'")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def env_of(job: dict) -> dict[str, str]:
    c = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def n_jobs(case, n: int):
    def check():
        jobs = case.jobs()
        return jobs if len(jobs) == n else None

    return check


def keys(jobs: list[dict]) -> list[str]:
    return [j["metadata"]["annotations"]["retrain.jobgen.io/key"] for j in jobs]


def test_one_job_per_version_republish_and_overwrite(case_factory, wenv):
    case = case_factory()
    w = case.start()
    case.upload("mnist/v1/part-0.csv", b"1,2,3")
    case.upload("mnist/v1/part-1.csv", b"4,5,6")
    gen = case.upload("mnist/v1/_SUCCESS")
    (job,) = wait_for(lambda: case.jobs(), 30, "the job")
    meta = job["metadata"]
    assert meta["annotations"]["retrain.jobgen.io/object"] == f"gs://{case.bucket}/mnist/v1/_SUCCESS"
    assert meta["labels"]["retrain.jobgen.io/generation"] == str(gen)
    env = env_of(job)
    assert env["DATA_URI"] == f"gs://{case.bucket}/mnist/v1/" and env["DATA_GENERATION"] == str(gen)
    events = wenv.cluster.get("events", namespace=case.ns)["items"]
    assert any(e["involvedObject"]["name"] == meta["name"] and e["reason"] == "RetrainTriggered" for e in events)

    # The same notification again, three times, each with a new message ID: no second job.
    notes = [m for m in case.tap_messages(3) if m.attributes["bucketId"] == case.bucket]
    marker = next(m for m in notes if m.attributes["objectId"] == "mnist/v1/_SUCCESS")
    ids = {case.publish(marker.data, **dict(marker.attributes)) for _ in range(3)}
    assert len(ids) == 3 and marker.message_id not in ids
    wait_for(lambda: w.metric("retrain_events_deduped_total") >= 3, 30, "3 dedupes")
    # An overwrite of the marker (overwroteGeneration set): policy ignore → skipped.
    case.upload("mnist/v1/_SUCCESS", b"again")
    wait_for(lambda: w.metric("retrain_events_skipped_total", reason="overwrite") >= 1, 30, "overwrite skipped")
    # A second version → a second job.
    case.upload("mnist/v2/_SUCCESS")
    wait_for(lambda: len(case.jobs()) == 2, 30, "the second job")
    time.sleep(1)
    # the counter moves after the create returns: wait for it rather than read it once
    wait_for(lambda: w.metric("retrain_jobs_created_total") == 2, 30, "the second job counted")
    assert len(case.jobs()) == 2 and w.metric("retrain_jobs_created_total") == 2
    assert w.http("/healthz")[0] == 200
    assert w.terminate() == 0
    lines = w.log_lines()
    assert all("raw" not in line for line in lines), [line for line in lines if "raw" in line][:3]
    assert any(line["msg"] == "job created" and line.get("generation") == gen for line in lines)


def test_overwrite_policy_retrain(case_factory):
    case = case_factory(overwrites="retrain")
    case.start()
    g1 = case.upload("mnist/v1/_SUCCESS")
    wait_for(lambda: len(case.jobs()) == 1, 30, "first job")
    g2 = case.upload("mnist/v1/_SUCCESS", b"fixed")
    jobs = wait_for(n_jobs(case, 2), 30, "a job for the overwrite")
    assert sorted(j["metadata"]["labels"]["retrain.jobgen.io/generation"] for j in jobs) == sorted([str(g1), str(g2)])


def test_hostile_input_dead_letter(case_factory):
    case = case_factory(requests=True)
    w = case.start()
    good = json.dumps({"bucket": case.bucket, "name": "mnist/v1/_SUCCESS", "generation": "5"}).encode()
    base = {
        "eventType": "OBJECT_FINALIZE",
        "bucketId": case.bucket,
        "objectId": "mnist/v1/_SUCCESS",
        "objectGeneration": "5",
        "payloadFormat": "JSON_API_V1",
    }

    def named(name: str) -> tuple[bytes, dict[str, str]]:
        return (
            json.dumps({"bucket": case.bucket, "name": name, "generation": "5"}).encode(),
            {**base, "objectId": name},
        )

    hostile = [
        (b"\x00\xffnot json", base),
        (good, {k: v for k, v in base.items() if k != "bucketId"}),
        (good, {**base, "eventType": "OBJECT_PWNED"}),
        named("mnist/../../../etc/_SUCCESS"),
        named("mnist/v1\x1b[31m/_SUCCESS"),
        named("mnist/v\u0131\u0307/_SUCCESS"),
        named("mnist/" + "v" * 1024 + "/_SUCCESS"),
    ]
    for data, attrs in hostile:
        case.publish(data, **attrs)
    requests = [
        {"job": "train", "params": {"lr": "0.1\nimage: evil:latest"}},  # YAML injection
        {"job": "train", "params": {"backend": "{{ lookup('env','HOME') }}"}},  # template injection
        {"job": "train", "params": {"image": "evil"}},  # unknown key
        {"job": "train", "params": {"epochs": "3; rm -rf /"}},  # wrong type
        {"job": "train", "params": {"epochs": True}},  # wrong type
        {"job": "nope", "params": {}},
    ]
    for r in requests:
        case.publish(json.dumps(r).encode(), topic=case.req_topic)
    want = len(hostile) + len(requests)
    dead = case.dead_letters(want)
    assert len(dead) == want, [d.attributes.get("deadLetterReason") for d in dead]
    reasons = sorted(d.attributes["deadLetterReason"] for d in dead)
    assert reasons.count("bad_object_name") == 4 and reasons.count("bad_param") == 5
    assert {"bad_payload", "missing_attribute", "bad_event_type", "unknown_job"} <= set(reasons)
    assert w.metric("retrain_events_rejected_total") == want
    rejected_logs = [ln for ln in w.log_lines() if ln.get("msg") == "message rejected"]
    assert len(rejected_logs) == want
    assert case.jobs() == [] and w.http("/healthz")[0] == 200 and w.proc.poll() is None
    # ... and a good request still works.
    case.publish(
        json.dumps({"job": "train", "params": {"lr": 0.01, "epochs": 4}, "id": "r-1"}).encode(), topic=case.req_topic
    )
    (job,) = wait_for(lambda: case.jobs(), 30, "the requested job")
    args = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert "--lr=0.01" in args and "--epochs=4" in args
    assert "Traceback" not in w.log_text()


def _upload_versions(case, n: int, dup: int, start: int = 0, pause: float = 0.0) -> dict[str, int]:
    """n versions with a marker each; every marker notification is also republished `dup` times."""
    gens = {}
    for i in range(start, start + n):
        name = f"mnist/v{i:05d}/_SUCCESS"
        gens[name] = case.upload(name)
        if pause:
            time.sleep(pause)
    return gens


def _check_exactly_once(case, gens: dict[str, int], timeout: float) -> None:
    t0 = time.monotonic()

    def complete():
        jobs = case.jobs()
        print(f"{time.monotonic() - t0:.0f}s: {len(jobs)} jobs", flush=True)
        return jobs if len(jobs) >= len(gens) else None

    jobs = wait_for(complete, timeout, f"{len(gens)} jobs", interval=5)
    time.sleep(2)
    jobs = case.jobs()
    ks = keys(jobs)
    assert len(jobs) == len(gens), f"{len(jobs)} jobs for {len(gens)} versions"
    assert len(set(ks)) == len(ks), "duplicate keys"
    got = {
        j["metadata"]["annotations"]["retrain.jobgen.io/object"].split("/", 3)[3]: int(
            j["metadata"]["labels"]["retrain.jobgen.io/generation"]
        )
        for j in jobs
    }
    assert got == gens
    assert len(case.claims()) == len(gens)
    assert all(not j["metadata"].get("finalizers") for j in jobs), "a finalizer was left on a job"


# The kill -9 test (20 random points) is tests/watcher/test_reliability.py::test_kill9_at_20_random_points.


def test_apiserver_restart_mid_run(case_factory, wenv):
    from jobgen.localcluster import procs

    case = case_factory()
    w = case.start()
    cluster = wenv.cluster.cluster
    pidfile = next(p for p in procs.pidfiles(cluster.state_dir) if p.name == "kube-apiserver")
    pid, _exe = pidfile.read()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    gens: dict[str, int] = {}
    uploader = threading.Thread(target=lambda: gens.update(_upload_versions(case, 60, 0, pause=0.05)))
    uploader.start()
    time.sleep(1.0)
    procs.stop(pidfile)  # SIGTERM the apiserver
    down_at = time.monotonic()
    time.sleep(4)
    procs.start("kube-apiserver", [a.decode() for a in argv], cluster.state_dir)
    wait_for(cluster.is_up, 90, "the apiserver to come back")
    uploader.join()
    _check_exactly_once(case, gens, 120)
    assert w.metric("retrain_errors_total", stage="kubernetes") >= 1, "the outage was not noticed"
    assert w.metric("retrain_dead_lettered_total") == 0
    assert w.proc.poll() is None and time.monotonic() - down_at > 4
    # Leave the shared control plane working for the next test: its controllers are back too.
    wenv.cluster.create_namespace("after-restart", timeout=180)


def test_sigterm_is_graceful(case_factory):
    case = case_factory()
    w = case.start()
    case.upload("mnist/v1/_SUCCESS")
    wait_for(lambda: case.jobs(), 30, "the job")
    t = time.monotonic()
    assert w.terminate(30) == 0 and time.monotonic() - t < 20
    msgs = [ln.get("msg") for ln in w.log_lines()]
    assert "stopping: no new messages; finishing in-flight work" in msgs and "stopped" in msgs


def test_debounce_mode(case_factory):
    case = case_factory(completion="debounce", quietSeconds=2)
    w = case.start()
    for i in range(3):
        case.upload(f"mnist/v1/part-{i}.csv", b"x")
        time.sleep(0.5)
    time.sleep(1)
    assert case.jobs() == []  # not quiet yet (at most ~1s since the last object)
    (job,) = wait_for(lambda: case.jobs(), 30, "the debounced job")
    assert env_of(job)["DATA_URI"] == f"gs://{case.bucket}/mnist/v1/"
    time.sleep(3)
    assert len(case.jobs()) == 1 and w.metric("retrain_jobs_created_total") == 1


def test_polling_fallback_persists_state(case_factory, wenv):
    case = case_factory(sources={"poll": {"intervalSeconds": 1}}, dead_letter=False)
    for i in range(3):
        case.upload(f"mnist/v{i}/data.csv", b"x")
        case.upload(f"mnist/v{i}/_SUCCESS")
    case.upload("mnist/v9/data.csv", b"x")  # incomplete: no marker yet
    w = case.start()
    wait_for(lambda: len(case.jobs()) == 3, 30, "3 polled jobs")
    blob = wenv.gcs.bucket(case.state_bucket).blob("poll/data.json")
    wait_for(blob.exists, 30, "the poll progress")
    state = json.loads(blob.download_as_bytes())
    assert sorted(state["seen"]) == ["mnist/v0/", "mnist/v1/", "mnist/v2/"]  # v9 is incomplete
    assert w.terminate() == 0
    w2 = case.start()  # restart: the state says v0-v2 are done; nothing is re-triggered
    case.upload("mnist/v9/_SUCCESS")
    wait_for(lambda: len(case.jobs()) == 4, 30, "the 4th job")
    time.sleep(2)
    assert w2.metric("retrain_jobs_created_total") == 1 and w2.metric("retrain_events_deduped_total") == 0


def test_forbid_queues_newest_version(case_factory, wenv):
    case = case_factory(concurrency="Forbid")
    w = case.start()
    case.upload("mnist/v1/_SUCCESS")
    (first,) = wait_for(lambda: case.jobs(), 30, "first job")
    g2 = case.upload("mnist/v2/_SUCCESS")
    g3 = case.upload("mnist/v3/_SUCCESS")
    # Pub/Sub may deliver v3 before v2: then v2 is superseded on arrival instead of queued and then
    # coalesced. Either way v3 is queued and v2 is accounted for. (120 s: 30 s timed out at load 10+.)
    wait_for(
        lambda: w.metric("retrain_versions_queued_total")
        + w.metric("retrain_events_skipped_total", reason="superseded")
        >= 2,
        120,
        "v2 and v3 queued or superseded",
    )
    assert len(case.jobs()) == 1
    # The first job finishes (the suspended job is marked Succeeded by hand, as the operator would).
    name = first["metadata"]["name"]
    status = {
        "status": {
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "True",
                    "reason": "Test",
                    "message": "done",
                    "lastUpdateTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        }
    }
    wenv.cluster.kubectl(
        "patch", "pytorchjob", name, "-n", case.ns, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    jobs = wait_for(n_jobs(case, 2), 30, "the queued job")
    gens = {j["metadata"]["labels"]["retrain.jobgen.io/generation"] for j in jobs}
    assert str(g3) in gens and str(g2) not in gens  # coalesced to the newest


def test_two_replicas_share_one_subscription(case_factory):
    """Two watchers on one subscription, each notification also republished: still one job each."""
    case = case_factory()
    a, b = case.start(), case.start()
    gens = _upload_versions(case, 60, 0)
    notes = [m for m in case.tap_messages(60) if m.attributes["bucketId"] == case.bucket]
    for m in notes:
        case.publish(m.data, **dict(m.attributes))
    _check_exactly_once(case, gens, 120)
    created = a.metric("retrain_jobs_created_total") + b.metric("retrain_jobs_created_total")
    assert created == 60 and a.metric("retrain_jobs_created_total") > 0 and b.metric("retrain_jobs_created_total") > 0


def _in_process_app(case, wenv):
    """The watcher's parts in this process, on the real apiserver and fake-gcs-server."""
    from jobgen import kube
    from jobgen.watcher.app import App
    from jobgen.watcher.config import load_config, load_jobs
    from jobgen.watcher.state import GcsBlobs
    from jobgen.watcher.targets.kube import KubeAdapter

    cfg = load_config(case.config)
    api = KubeAdapter(kube.connect(None, wenv.cluster.kubeconfig), case.ns)
    return App(cfg, load_jobs(cfg, case.config), api, GcsBlobs(cfg.state.bucket, wenv.gcs))


def test_poll_cost_abandoned_folder_and_1000_versions(case_factory, wenv):
    """The poller against fake-gcs-server and the real apiserver: an abandoned folder (objects, no
    marker) and 1,000 completed versions whose names do not sort in arrival order (v9 before v10).
    Every version gets one job; later polls cost the same list calls whatever the history."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from jobgen.watcher.sources.poll import Poller

    n = int(os.environ.get("WATCHER_POLL_VERSIONS", "1000"))
    case = case_factory(sources={"poll": {"intervalSeconds": 1}}, dead_letter=False)
    app = _in_process_app(case, wenv)
    poller = Poller(app.config.sources.poll, app.sensor, app.stores, list(app.config.triggers), client=wenv.gcs)
    for i in range(50):
        case.upload(f"mnist/abandoned/part-{i:03d}.csv", b"x")  # never completed
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: case.upload(f"mnist/v{i}/_SUCCESS"), range(n)))
    t = time.monotonic()
    assert poller.poll_once() == n
    first = (poller.calls, poller.items, time.monotonic() - t)
    costs = []
    for i in range(3):
        case.upload(f"mnist/v{n + i}/_SUCCESS")
        assert poller.poll_once() == 1
        costs.append((poller.calls, poller.items))
    assert poller.poll_once() == 0
    costs.append((poller.calls, poller.items))
    jobs = case.jobs()
    assert len(jobs) == n + 3 and len(set(keys(jobs))) == n + 3
    print(
        f"\npoll figures: {n} versions + 1 abandoned folder (50 objects): first poll {first[0]} list calls, "
        f"{first[1]} names, {first[2]:.1f}s; steady-state polls (list calls, names): {costs}"
    )
    # fake-gcs-server ignores matchGlob and returns every object; GCS returns only markers (1 call per 1,000).
    assert max(c for c, _ in costs) <= (n + 3 + 50) // 1000 + 2
    assert all(c == costs[0][0] for c, _ in costs), "list calls per poll grew"


def test_prediction_target_one_indexed_job_per_input_version(case_factory, wenv):
    """A config job with kind BatchPrediction: an input version lands → exactly one Indexed Job with 3
    indexes (named by the version, claimed in the state bucket); the same notification republished
    three times → no second Job; another version → another Job."""
    import yaml

    case = case_factory()
    spec = {
        "kind": "BatchPrediction",
        "name": "mnist-predict",
        "namespace": case.ns,
        "image": "trainer:test",
        "input": f"gs://{case.bucket}/mnist/*.npy",
        "model": "gs://models-bkt/mnist",
        "output": "gs://preds-bkt/mnist",
        "parallelism": 3,
    }
    (case.dir / "predict.yaml").write_text(yaml.safe_dump(spec))
    cfg = yaml.safe_load(case.config.read_text())
    (trigger,) = cfg["triggers"]
    trigger.pop("concurrency")  # prediction triggers resolve to Allow
    case.edit_config(
        jobs={**cfg["jobs"], "predict": {"file": "predict.yaml"}}, triggers=[{**trigger, "job": "predict"}]
    )

    def batch_jobs() -> list[dict]:
        return wenv.cluster.get("jobs.batch", namespace=case.ns)["items"]

    w = case.start()
    case.upload("mnist/b1/part-0.npy", b"x")
    gen = case.upload("mnist/b1/_SUCCESS")
    (job,) = wait_for(lambda: batch_jobs(), 30, "the prediction Job")
    meta, jspec = job["metadata"], job["spec"]
    assert jspec["completionMode"] == "Indexed" and jspec["completions"] == 3 and jspec["parallelism"] == 3
    args = jspec["template"]["spec"]["containers"][0]["args"]
    assert f"--input=gs://{case.bucket}/mnist/b1" in args and "--glob=*.npy" in args
    assert meta["annotations"]["prediction.jobgen.io/object"] == f"gs://{case.bucket}/mnist/b1/_SUCCESS"
    assert meta["labels"]["prediction.jobgen.io/trigger"] == "data"
    assert meta["annotations"]["prediction.jobgen.io/generation"] == str(gen)
    assert meta["labels"]["retrain.jobgen.io/generation"] == str(gen)
    wait_for(
        lambda: not wenv.cluster.get("jobs.batch", meta["name"], case.ns)["metadata"].get("finalizers"),
        30,
        "the claim finalizer released",
    )
    assert len(case.claims()) == 1 and not case.jobs()  # claimed; no training job
    events = wenv.cluster.get("events", namespace=case.ns)["items"]
    assert any(e["involvedObject"]["name"] == meta["name"] and e["reason"] == "PredictionTriggered" for e in events)

    notes = [m for m in case.tap_messages(2) if m.attributes["bucketId"] == case.bucket]
    marker = next(m for m in notes if m.attributes["objectId"] == "mnist/b1/_SUCCESS")
    for _ in range(3):
        case.publish(marker.data, **dict(marker.attributes))
    wait_for(lambda: w.metric("retrain_events_deduped_total") >= 3, 30, "3 dedupes")
    assert [j["metadata"]["uid"] for j in batch_jobs()] == [meta["uid"]]

    case.upload("mnist/b2/_SUCCESS")
    wait_for(lambda: len(batch_jobs()) == 2, 30, "the second version's Job")
    time.sleep(1)
    assert len(batch_jobs()) == 2 and w.metric("retrain_jobs_created_total") == 2
    assert w.terminate() == 0
