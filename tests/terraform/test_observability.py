"""Offline checks of the dashboard (dashboards/*.json), terraform's alert
policies (terraform/monitoring.tf) and the chart's PodMonitoring: the JSON
loads, and every metric they read is one the watcher exports
(jobgen/watcher/obs.py Metrics) or one of the named external exporters."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from jobgen.localcluster.bins import binaries
from jobgen.watcher.obs import Metrics

from .conftest import REPO, TF_DIR

DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))

# Series not from the watcher, by the exporter that provides them on GKE.
EXTERNAL = {
    # GKE kube-state-metrics, monitoring component "POD" (terraform/cluster.tf).
    "kube_pod_status_phase": "GKE kube-state-metrics",
    "kube_pod_container_status_restarts_total": "GKE kube-state-metrics",
    "kube_pod_container_resource_requests": "GKE kube-state-metrics",
    # GKE DCGM package (enable_dcgm_metrics).
    "DCGM_FI_DEV_GPU_UTIL": "NVIDIA DCGM exporter",
    "DCGM_FI_DEV_FB_USED": "NVIDIA DCGM exporter",
    # training-operator v1.9.4 /metrics (PodMonitoring from make cluster's overlay).
    "training_operator_jobs_created_total": "training-operator",
    "training_operator_jobs_successful_total": "training-operator",
    "training_operator_jobs_failed_total": "training-operator",
    "training_operator_jobs_restarted_total": "training-operator",
    # Cloud Monitoring's Pub/Sub metric in PromQL form.
    "pubsub_googleapis_com:subscription_dead_letter_message_count": "Cloud Monitoring (Pub/Sub)",
}

PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "stdvar",
    "group",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "histogram_quantile",
    "vector",
    "absent",
    "absent_over_time",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "sum_over_time",
    "clamp_min",
    "clamp_max",
    "time",
    "label_replace",
}


def watcher_series() -> set[str]:
    """Names the watcher's /metrics exposes, from a live Metrics() registry."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count", f"{family.name}_created"}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside strings, label
    matchers, ranges and grouping clauses that are not functions or keywords."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        name = m.group(0)
        rest = e[m.end() :].lstrip()
        if name in PROMQL_WORDS or rest.startswith("(") or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        if e[max(0, m.start() - 1)] == "$":  # a Grafana variable such as $__rate_interval
            continue
        found.add(name)
    return found


def unknown(names: set[str], exported: set[str]) -> set[str]:
    return {n for n in names if n not in exported and n not in EXTERNAL}


def dashboard_exprs(doc: dict) -> list[str]:
    exprs = []
    for panel in doc["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in sub.get("targets", []) if t.get("expr")]
    return exprs


def test_dashboard_loads_and_uses_only_exported_metrics():
    assert DASHBOARDS, "dashboards/*.json"
    exported = watcher_series()
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert doc["title"] and doc["uid"] and doc["panels"]
        exprs = dashboard_exprs(doc)
        used = set().union(*(metric_names(e) for e in exprs))
        assert not unknown(used, exported), (
            f"{path.name} reads metrics nobody exports: {sorted(unknown(used, exported))}"
        )
        # What the issue asks the dashboard to cover.
        for needed in (
            "retrain_events_received_total",
            "retrain_events_deduped_total",
            "retrain_events_rejected_total",
            "retrain_dead_lettered_total",
            "retrain_event_to_job_seconds_bucket",
            "retrain_outage",
            "training_operator_jobs_restarted_total",
            "kube_pod_status_phase",
            "DCGM_FI_DEV_GPU_UTIL",
        ):
            assert needed in used, f"{path.name} has no panel reading {needed}"
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), "panel ids are unique"


def alert_queries() -> dict[str, str]:
    text = (TF_DIR / "monitoring.tf").read_text()
    out = {}
    for m in re.finditer(
        r"(\w+) = \{\s*display_name\s*=.*?\n\s*(?:#[^\n]*\n\s*)*query\s*=\s*\"((?:\\.|[^\"\\])*)\"", text, re.S
    ):
        out[m.group(1)] = m.group(2).replace('\\"', '"')
    return out


def test_alert_policies_use_only_exported_metrics():
    queries = alert_queries()
    assert set(queries) == {"dead_lettered", "watcher_not_ready", "gpu_idle"}, queries
    exported = watcher_series()
    for name, query in queries.items():
        used = metric_names(re.sub(r"\$\{[^}]*\}", "x", query))  # terraform interpolations out
        assert used, name
        assert not unknown(used, exported), (
            f"alert {name} reads metrics nobody exports: {sorted(unknown(used, exported))}"
        )
    assert "retrain_dead_lettered_total" in metric_names(queries["dead_lettered"])
    assert "retrain_ready" in metric_names(queries["watcher_not_ready"])


def test_the_two_contract_metrics_are_exported():
    """CONTRACTS.md: retrain_outage{backend} and retrain_dead_lettered{reason}."""
    m = Metrics()
    m.outage.labels(backend="gcs").set(1)
    m.dead_lettered.labels(reason="malformed").inc()
    text = m.render().decode()
    assert 'retrain_outage{backend="gcs"} 1.0' in text
    assert 'retrain_dead_lettered_total{reason="malformed"} 1.0' in text


def test_metric_check_can_fail():
    exported = watcher_series()
    assert unknown(metric_names('sum(rate(retrain_jobs_creatd_total{namespace="x"}[5m]))'), exported) == {
        "retrain_jobs_creatd_total"
    }
    assert metric_names("histogram_quantile(0.9, sum by (le) (rate(a_bucket[$__rate_interval])))") == {"a_bucket"}
    assert metric_names('(max(retrain_ready{namespace="t"}) or on() vector(0)) < 1') == {"retrain_ready"}


def helm_bin() -> str:
    path = binaries().path("helm")
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("helm is not built (make bins): the PodMonitoring template cannot be checked")
        pytest.skip("helm is not built (make bins)")
    return str(path)


def template(tmp_path: Path, values: dict) -> list[dict]:
    vf = tmp_path / "values.yaml"
    # the chart requires the watcher's state bucket (terraform output watcher_state_bucket)
    values = {**values, "gcp": {"stateBucket": "p-watcher-state", **values.get("gcp", {})}}
    vf.write_text(yaml.safe_dump(values))
    res = subprocess.run(
        [helm_bin(), "template", "rw", str(REPO / "charts" / "retrain-watcher"), "-n", "training", "-f", str(vf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


BASE = {
    "gcp": {
        "project": "p-123456",
        "subscription": "projects/p-123456/subscriptions/data-events",
        "dataBucket": "p-123456-data",
        "dataPrefix": "in/",
    }
}


def test_chart_podmonitoring_scrapes_the_watcher(tmp_path: Path):
    objs = template(tmp_path, {**BASE, "metrics": {"podMonitoring": {"enabled": True, "interval": "15s"}}})
    pm = [d for d in objs if d["kind"] == "PodMonitoring"]
    assert len(pm) == 1 and pm[0]["apiVersion"] == "monitoring.googleapis.com/v1"
    deploy = next(d for d in objs if d["kind"] == "Deployment")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pm[0]["spec"]["selector"]["matchLabels"].items() <= labels.items(), (
        "the PodMonitoring selects the watcher pods"
    )
    ep = pm[0]["spec"]["endpoints"][0]
    port_names = {p["name"] for c in deploy["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert ep["port"] in port_names and ep["path"] == "/metrics" and ep["interval"] == "15s"


def test_chart_podmonitoring_is_optional(tmp_path: Path):
    assert not [d for d in template(tmp_path, BASE) if d["kind"] == "PodMonitoring"]
