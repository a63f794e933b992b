"""charts/retrain-watcher: lint/template over a values matrix, schema rejections, install/upgrade on
the local control plane, RBAC with the chart's ServiceAccount token, an upgrade while events arrive."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.watcher.conftest import REPO, Case, WatcherProc, cpu_spec, wait_for

# The watcher imports prometheus-client (the [watcher] extra); without it these tests cannot run.
pytest.importorskip("prometheus_client", reason="prometheus-client is missing: pip install -e '.[watcher]'")

CHART = REPO / "charts" / "retrain-watcher"
BASE = {
    "gcp": {
        "project": "my-project",
        "subscription": "projects/my-project/subscriptions/retrain-gcs",
        "dataBucket": "my-data",
        "dataPrefix": "mnist/",
        "stateBucket": "my-project-watcher-state",
    },
    "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "w@my-project.iam.gserviceaccount.com"}},
}


def helm_bin() -> str:
    from jobgen.localcluster.bins import binaries

    path = binaries().path("helm")
    if not path.exists():
        pytest.skip("helm is not built (make bins)")
    return str(path)


def helm(*args: str, check: bool = True, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [helm_bin(), *args] + ([f"--kubeconfig={kubeconfig}"] if kubeconfig else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} failed: {proc.stderr}")
    return proc


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def template(tmp_path: Path, values: dict[str, Any], namespace: str = "training") -> list[dict[str, Any]]:
    vf = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    vf.write_text(yaml.safe_dump(values))
    out = helm("template", "rw", str(CHART), "-n", namespace, "-f", str(vf)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


PREDICT_SPEC = {
    "kind": "BatchPrediction",
    "name": "mnist-predict",
    "image": "trainer:1",
    "input": "gs://my-inputs/batches/*.npy",
    "model": "gs://my-models/mnist",
    "output": "gs://my-predictions/mnist",
    "parallelism": 3,
}

MATRIX = {
    "defaults": {},
    "schedule": {"schedule": {"enabled": True, "cron": "@daily", "params": {"lr": 0.01}}},
    "poll-only": {"gcp": {"subscription": ""}, "poll": {"enabled": True, "intervalSeconds": 30}},
    "replace": {"triggers": [{"name": "data", "job": "train", "concurrency": "Replace"}]},
    "requests+dead-letter": {
        "gcp": {
            "requestsSubscription": "projects/my-project/subscriptions/retrain-req",
            "deadLetterTopic": "projects/my-project/topics/retrain-dead",
        }
    },
    "replicas+extra": {
        "replicaCount": 3,
        "watcher": {"extraConfig": {"limits": {"dedupeCache": 500}}},
        "serviceAccount": {"create": False, "name": "existing-ksa"},
    },
    "predict+schedule": {
        "jobs": {"predict": PREDICT_SPEC},
        "triggers": [{"name": "inputs", "job": "predict", "bucket": "my-inputs", "prefix": "batches/"}],
        "schedule": {"predict": {"enabled": True, "cron": "0 * * * *", "job": "predict"}},
    },
    "debounce+tfjob": {
        "jobs": {
            "tf": {
                "kind": "TFJob",
                "name": "tf-train",
                "image": "img:1",
                "replicas": {"Chief": {"replicas": 1}, "Worker": {"replicas": 2}},
            }
        },
        "triggers": [
            {
                "name": "tf-data",
                "job": "tf",
                "bucket": "other-bucket",
                "prefix": "tf/",
                "completion": "debounce",
                "quietSeconds": 120,
                "glob": "tf/**/*.tfrecord",
            }
        ],
    },
}


def test_lint(tmp_path):
    vf = tmp_path / "v.yaml"
    vf.write_text(yaml.safe_dump(BASE))
    out = helm("lint", str(CHART), "-f", str(vf), "--strict").stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("name", list(MATRIX))
def test_template_matrix(tmp_path, name):
    from jobgen.watcher.config import load_config, load_jobs, load_predictions

    values = deep_merge(BASE, MATRIX[name])
    docs = template(tmp_path, values)
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == values.get("replicaCount", 1)
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["limits"]["memory"] and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "Role")}
    rules = roles["rw-retrain-watcher"]["rules"]
    assert rules[0]["verbs"] == ["create", "get", "list", "watch", "patch", "delete"]
    batch = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": rules[0]["verbs"]}]
    events = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    assert rules[1:] == (batch if name == "predict+schedule" else []) + events  # batch Jobs only to predict
    assert bool(by_kind(docs, "ServiceAccount")) == (name != "replicas+extra" or name == "schedule")
    assert bool(by_kind(docs, "CronJob")) == (name in ("schedule", "predict+schedule"))
    # The rendered config is what the watcher itself accepts.
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "rw-retrain-watcher-config")
    for fname, text in cm["data"].items():
        (tmp_path / fname).write_text(text)
    cfg, predictions = load_predictions(load_config(tmp_path / "watcher.yaml"), tmp_path / "watcher.yaml")
    specs = load_jobs(cfg, tmp_path / "watcher.yaml")
    assert set(specs) | set(predictions) == set(
        values.get("jobs", {"train": 1})
        if name not in ("debounce+tfjob", "predict+schedule")
        else [*values["jobs"], "train"]
    )
    assert set(predictions) == ({"predict"} if name == "predict+schedule" else set())
    assert cfg.namespace == "training" and cfg.state.bucket == values["gcp"]["stateBucket"]
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-state")]
    if name == "schedule":
        (cron,) = by_kind(docs, "CronJob")
        args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
        assert "jobgen submit /etc/retrain/job-train.yaml" in args and "--param 'lr=0.01'" in args
    if name == "predict+schedule":
        (cron,) = by_kind(docs, "CronJob")
        assert cron["metadata"]["name"] == "rw-retrain-watcher-predict" and cron["spec"]["schedule"] == "0 * * * *"
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "rw-retrain-watcher-predict-scheduler"
        assert "jobgen predict /etc/retrain/job-predict.yaml --run" in pod["containers"][0]["args"][0]
        assert roles["rw-retrain-watcher-predict-scheduler"]["rules"] == [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "patch"]}
        ]


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"gcp": {"subscription": "not-a-path"}}, "/gcp/subscription"),
        ({"replicaCount": 0}, "/replicaCount"),
        (
            {
                "securityContext": {
                    "readOnlyRootFilesystem": False,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                }
            },
            "/securityContext/readOnlyRootFilesystem",
        ),
        (
            {"podSecurityContext": {"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}}},
            "/podSecurityContext/runAsNonRoot",
        ),
        ({"triggers": [{"name": "Bad Name", "job": "train"}]}, "/triggers/0/name"),
        ({"triggers": [{"name": "t", "job": "train", "concurrency": "Sometimes"}]}, "/triggers/0/concurrency"),
        ({"triggers": [{"name": "t", "job": "train", "unknown": 1}]}, "/triggers/0"),
        ({"jobs": {"x": {"kind": "MPIJob", "name": "x", "image": "i", "replicas": {"Worker": {}}}}}, "/jobs/x/kind"),
        ({"schedule": {"enabled": True, "cron": "every day"}}, "/schedule/cron"),
        ({"schedule": {"predict": {"enabled": True, "cron": "hourly"}}}, "/schedule/predict/cron"),
        ({"schedule": {"predict": {"enabled": True, "job": "train"}}}, "is not a BatchPrediction job"),
        ({"schedule": {"predict": {"enabled": True, "job": "nope"}}}, 'schedule.predict.job "nope" is not a key'),
        ({"jobs": {"p": {"kind": "BatchPrediction", "name": "p", "image": "i", "input": "gs://b/x"}}}, "/jobs/p"),
        ({"bogus": 1}, "bogus"),
        ({"triggers": [{"name": "t", "job": "missing"}]}, 'refers to job "missing"'),
        ({"gcp": {"subscription": ""}}, "the watcher needs a source"),
        ({"gcp": {"stateBucket": ""}}, "set gcp.stateBucket"),
        ({"gcp": {"stateBucket": "Not_A/Bucket"}}, "/gcp/stateBucket"),
    ],
)
def test_schema_rejects_bad_values(tmp_path, bad, message):
    vf = tmp_path / "v.yaml"
    vf.write_text(yaml.safe_dump(deep_merge(BASE, bad)))
    proc = helm("template", "rw", str(CHART), "-f", str(vf), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# --- against the local control plane ---------------------------------------------------------------
def install_values(case: Case, subscription: str, **extra: Any) -> dict[str, Any]:
    spec = cpu_spec(case.ns)
    spec.pop("serviceAccount", None)
    return deep_merge(
        {
            "gcp": {
                "project": "local-project",
                "subscription": subscription,
                "dataBucket": case.bucket,
                "dataPrefix": "mnist/",
                "stateBucket": case.state_bucket,
            },
            "trainer": {"namespace": case.ns, "serviceAccount": "default"},
            "jobs": {"train": spec},
            "triggers": [{"name": "data", "job": "train", "concurrency": "Allow"}],
            "watcher": {
                "pubsub": {"leaseExtensionSeconds": 10},
                "extraConfig": {
                    "server": {"host": "127.0.0.1", "port": 0},
                    "retry": {"initialSeconds": 0.2, "maxSeconds": 2},
                },
            },
        },
        extra,
    )


def upgrade(case: Case, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    vf = case.dir / f"values-{uuid.uuid4().hex[:6]}.yaml"
    vf.write_text(yaml.safe_dump(values))
    return helm(
        "upgrade",
        "--install",
        "retrain",
        str(CHART),
        "-n",
        case.ns,
        "-f",
        str(vf),
        "--wait=false",
        kubeconfig=case.env.cluster.kubeconfig,
    )


def start_from_cluster(case: Case, kubeconfig: str, tag: str) -> WatcherProc:
    """Run the watcher as the chart's pod would: with the config and job files of the chart's
    ConfigMap, as the chart's ServiceAccount (its token)."""
    cm = case.env.cluster.get("configmap", "retrain-retrain-watcher-config", namespace=case.ns)
    d = case.dir / f"etc-{tag}"
    d.mkdir()
    for fname, text in cm["data"].items():
        (d / fname).write_text(text)
    p = WatcherProc(case, d / "watcher.yaml", kubeconfig, tag)
    case.procs.append(p)
    return p.wait_ready()


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_install_twice_rbac_and_upgrade_under_load(case_factory, wenv, tmp_path):
    case = case_factory(dead_letter=False)
    values = install_values(case, case.sub)
    upgrade(case, values)
    assert upgrade(case, values).returncode == 0  # twice: an upgrade to revision 2
    status = json.loads(
        helm("status", "retrain", "-n", case.ns, "-o", "json", kubeconfig=wenv.cluster.kubeconfig).stdout
    )
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    dep = wenv.cluster.get("deployment", "retrain-retrain-watcher", namespace=case.ns)
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "retrain-watcher"

    # RBAC: the watcher runs with the chart's ServiceAccount token and works...
    token_kc = wenv.cluster.token_kubeconfig(case.ns, "retrain-watcher", tmp_path / "sa.kubeconfig")
    w1 = start_from_cluster(case, token_kc, "a")
    case.upload("mnist/v0/_SUCCESS")
    wait_for(lambda: case.jobs(), 30, "a job created with the SA token")
    events = wenv.cluster.get("events", namespace=case.ns)["items"]
    assert any(e["reason"] == "RetrainTriggered" for e in events)
    # ... and can do nothing outside its Role; the real apiserver says so.
    k = wenv.cluster.kubectl
    forbidden = [
        ("get", "secrets", "-n", case.ns),
        ("get", "pods", "-n", case.ns),
        ("create", "configmap", "other", "-n", case.ns),
        ("get", "configmap", "retrain-retrain-watcher-config", "-n", case.ns),
        ("get", "pytorchjobs", "-n", "default"),
        ("get", "nodes"),
        ("create", "namespace", f"evil-{uuid.uuid4().hex[:4]}"),
    ]
    for args in forbidden:
        proc = k(*args, kubeconfig=token_kc, check=False)
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), (args, proc.stderr)
    assert (
        k("auth", "can-i", "update", "configmap/other", "-n", case.ns, kubeconfig=token_kc, check=False).stdout.strip()
        == "no"
    )
    assert (
        k("auth", "can-i", "delete", "pytorchjobs", "-n", "default", kubeconfig=token_kc, check=False).stdout.strip()
        == "no"
    )

    # An upgrade while events keep arriving: the new config rolls out as a new pod would (start the
    # new watcher, then SIGTERM the old one, like a RollingUpdate with maxUnavailable 0).
    gens: dict[str, int] = {}

    def uploader() -> None:
        for i in range(1, 81):
            name = f"mnist/v{i:03d}/_SUCCESS"
            gens[name] = case.upload(name)
            time.sleep(0.03)

    t = threading.Thread(target=uploader)
    t.start()
    time.sleep(0.5)
    upgrade(case, deep_merge(values, {"watcher": {"logLevel": "DEBUG"}}))
    w2 = start_from_cluster(case, token_kc, "b")
    assert w1.terminate() == 0
    t.join()
    wait_for(lambda: len(case.jobs()) >= 81, 120, "81 jobs", interval=1)
    time.sleep(2)
    jobs = case.jobs()
    assert len(jobs) == 81
    got = {j["metadata"]["annotations"]["retrain.jobgen.io/object"].split("/", 3)[3] for j in jobs}
    assert got == set(gens) | {"mnist/v0/_SUCCESS"}
    assert len(case.claims()) == 81  # the durable record, in the state bucket
    assert w2.terminate() == 0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_scheduled_retraining_cronjob_command(case_factory, wenv, tmp_path):
    """The CronJob's own command, run as its own ServiceAccount (kwok runs no containers, so the
    test runs the command the pod would run, with the chart's ConfigMap files)."""
    import os

    case = case_factory(dead_letter=False)
    values = install_values(
        case, case.sub, schedule={"enabled": True, "cron": "*/5 * * * *", "job": "train", "params": {"lr": 0.02}}
    )
    upgrade(case, values)
    cron = wenv.cluster.get("cronjob", "retrain-retrain-watcher-scheduled", namespace=case.ns)
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "retrain-retrain-watcher-scheduler"
    script = pod["containers"][0]["args"][0]
    cm = wenv.cluster.get("configmap", "retrain-retrain-watcher-config", namespace=case.ns)
    etc = tmp_path / "etc"
    etc.mkdir()
    for fname, text in cm["data"].items():
        (etc / fname).write_text(text)
    token_kc = wenv.cluster.token_kubeconfig(case.ns, "retrain-retrain-watcher-scheduler", tmp_path / "cron.kc")
    env = {**os.environ, "KUBECONFIG": token_kc, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["/bin/sh", "-c", script.replace("/etc/retrain", str(etc))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (job,) = case.jobs()
    assert re.fullmatch(r"cpu-ddp-\d{12}", job["metadata"]["name"])
    args = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert "--lr=0.02" in args
    # The watcher's own ServiceAccount may patch jobs (to remove its finalizer) only in its namespace.
    sa_kc = wenv.cluster.token_kubeconfig(case.ns, "retrain-watcher", tmp_path / "w.kc")
    assert (
        wenv.cluster.kubectl(
            "auth", "can-i", "patch", "pytorchjobs", "-n", "default", kubeconfig=sa_kc, check=False
        ).stdout.strip()
        == "no"
    )


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_scheduled_prediction_cronjob_command(case_factory, wenv, tmp_path):
    """The prediction CronJob's own command, run as its own ServiceAccount with the chart's ConfigMap
    files (kwok runs no containers): the tick comes from the name of the Job the CronJob controller
    creates, so a retried pod of one tick applies the same Indexed Job, and the next tick another."""
    import datetime as dt
    import os

    from jobgen.predict.load import load
    from jobgen.predict.trigger import manifest_for_run

    case = case_factory(dead_letter=False)
    predict = {**PREDICT_SPEC, "input": f"gs://{case.bucket}/batches/*.npy"}
    values = install_values(case, case.sub, schedule={"predict": {"enabled": True, "job": "predict"}})
    values["jobs"]["predict"] = predict
    upgrade(case, values)
    cron = wenv.cluster.get("cronjob", "retrain-retrain-watcher-predict", namespace=case.ns)
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "retrain-retrain-watcher-predict-scheduler"
    (container,) = pod["containers"]
    script = container["args"][0]
    assert (
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    )
    cm = wenv.cluster.get("configmap", "retrain-retrain-watcher-config", namespace=case.ns)
    etc = tmp_path / "etc"
    etc.mkdir()
    for fname, text in cm["data"].items():
        (etc / fname).write_text(text)
    token_kc = wenv.cluster.token_kubeconfig(case.ns, "retrain-retrain-watcher-predict-scheduler", tmp_path / "p.kc")

    def run_tick(minute: int) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": token_kc,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "SCHEDULED_JOB": f"retrain-retrain-watcher-predict-{minute}",
        }
        proc = subprocess.run(
            ["/bin/sh", "-c", script.replace("/etc/retrain", str(etc))],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr

    def batch_jobs() -> list[str]:
        return sorted(j["metadata"]["name"] for j in wenv.cluster.get("jobs.batch", namespace=case.ns)["items"])

    tick = 29_412_360  # minutes since the epoch: 2025-12-03T06:00Z
    run_tick(tick)
    run_tick(tick)  # the same tick again (a retried pod): the same Job
    spec = load(etc / "job-predict.yaml")
    when = dt.datetime.fromtimestamp(tick * 60, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    first = manifest_for_run(spec, run=when)["metadata"]["name"]
    assert batch_jobs() == [first]
    run_tick(tick + 60)  # the next hourly tick: another Job
    assert len(batch_jobs()) == 2 and first in batch_jobs()
    job = wenv.cluster.get("jobs.batch", first, case.ns)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
