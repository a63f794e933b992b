"""Idempotent run creation through the real kfp.Client.

No KFP API server runs on this machine (it needs MySQL, object storage and Argo), so the endpoint
is a small loopback stand-in for the KFP v2beta1 REST API that kfp.Client calls (healthz,
experiments, runs: list with the EQUALS display_name filter, create). It stores what it is sent,
so the tests check what reached the endpoint: one create per data generation, typed arguments,
nothing at all for bad parameters."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from jobgen.errors import UserError
from jobgen.pipelines.compile import compile_spec
from jobgen.pipelines.runs import create_run, derive_run_name
from tests.pipelines.conftest import local_spec, write_yaml


class KfpStandIn(BaseHTTPRequestHandler):
    store: dict  # set per server

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def _matches(item: dict, flt: str | None) -> bool:
        if not flt:
            return True
        for p in json.loads(flt).get("predicates", []):
            want = p.get("stringValue", p.get("string_value"))
            if p.get("operation") not in ("EQUALS", 1) or item.get(p["key"]) != want:
                return False
        return True

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.store["requests"].append(("GET", url.path, q))
        if url.path == "/apis/v2beta1/healthz":
            return self._send(200, {"multi_user": False})
        for kind in ("experiments", "runs"):
            if url.path == f"/apis/v2beta1/{kind}":
                items = [i for i in self.store[kind] if self._matches(i, q.get("filter"))]
                return self._send(200, {kind: items, "total_size": len(items)} if items else {})
        return self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.store["requests"].append(("POST", self.path, body))
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.path == "/apis/v2beta1/experiments":
            exp = {**body, "experiment_id": str(uuid.uuid4()), "created_at": now}
            self.store["experiments"].append(exp)
            return self._send(200, exp)
        if self.path == "/apis/v2beta1/runs":
            run = {**body, "run_id": str(uuid.uuid4()), "created_at": now, "state": "PENDING"}
            self.store["runs"].append(run)
            return self._send(200, run)
        return self._send(404, {"error": "not found"})


@pytest.fixture
def kfp_host():
    store = {"requests": [], "experiments": [], "runs": []}
    handler = type("Handler", (KfpStandIn,), {"store": store})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", store
    server.shutdown()
    server.server_close()


@pytest.fixture
def package(tmp_path):
    doc = local_spec("digits", "gs://dat/digits/v1", "gs://mod/digits", "gs://ckp/digits")
    return compile_spec(write_yaml(tmp_path / "spec.yaml", doc), output=tmp_path / "p.yaml", image_tag="t")


def posts(store: dict, path: str) -> list[dict]:
    return [body for method, p, body in store["requests"] if method == "POST" and p == path]


def test_one_run_per_data_generation(kfp_host, package):
    host, store = kfp_host
    data = "gs://dat/digits/v7"
    first = create_run(host, package, {"epochs": "4", "lr": 0.2, "data_uri": data}, data_uri=data, generation=1234)
    assert first.created and first.name == derive_run_name("digits-pipeline", data, 1234)
    again = create_run(host, package, {"epochs": "4", "lr": 0.2, "data_uri": data}, data_uri=data, generation=1234)
    assert not again.created and again.run_id == first.run_id
    assert len(posts(store, "/apis/v2beta1/runs")) == 1
    newer = create_run(host, package, {}, data_uri=data, generation=1235)
    assert newer.created and newer.run_id != first.run_id and newer.name != first.name
    runs = posts(store, "/apis/v2beta1/runs")
    assert len(runs) == 2
    # what the endpoint got: the compiled pipeline and typed arguments
    assert runs[0]["display_name"] == first.name
    assert runs[0]["pipeline_spec"]["pipelineInfo"]["name"] == "digits-pipeline"
    assert runs[0]["runtime_config"]["parameters"] == {"epochs": 4, "lr": 0.2, "data_uri": data}
    assert runs[1]["runtime_config"]["parameters"] == {"data_uri": data}  # from data_uri= itself
    # an explicit run name is used as given
    named = create_run(host, package, {}, "retrain-by-hand")
    assert named.created and named.name == "retrain-by-hand"
    assert create_run(host, package, {}, "retrain-by-hand").run_id == named.run_id


def test_run_names_are_deterministic_and_distinct():
    a = derive_run_name("p", "gs://b/data/v1", 7)
    assert a == derive_run_name("p", "gs://b/data/v1/", 7)
    assert a.startswith("p-v1-g7-")
    assert len({a, derive_run_name("p", "gs://b/data/v1", 8), derive_run_name("p", "gs://b/other/v1", 7)}) == 3
    long = derive_run_name("p" * 200, "gs://b/" + "x" * 300, 1)
    assert len(long) <= 128 and long != derive_run_name("p" * 200, "gs://b/" + "x" * 300, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": "many"}, "epochs: expected an int"),
        ({"epochs": 2.5}, "epochs: expected an int"),
        ({"lr": "fast"}, "lr: expected a float"),
        ({"nope": 1}, "nope: unknown pipeline parameter"),
        ({"backend": 3}, "backend: expected a string"),
    ],
)
def test_bad_arguments_never_reach_the_endpoint(kfp_host, package, params, message):
    host, store = kfp_host
    with pytest.raises(UserError) as err:
        create_run(host, package, params, data_uri="gs://dat/x", generation=1)
    assert message in str(err.value)
    assert store["requests"] == []


def test_needs_a_name_or_a_data_version(kfp_host, package):
    host, store = kfp_host
    with pytest.raises(UserError, match="data_uri and generation"):
        create_run(host, package, {})
    assert store["requests"] == []
