"""The GCS and Pub/Sub emulators: real clients, real-format notifications, clean shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobgen.emulators import Emulators
from jobgen.localcluster.procs import group_alive

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clients(emulators, monkeypatch):
    for key, value in emulators.env().items():
        monkeypatch.setenv(key, value)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1, storage

    return storage.Client(project=emulators.project, credentials=AnonymousCredentials()), pubsub_v1.SubscriberClient()


def test_object_finalize_notification(emulators, clients):
    gcs, subscriber = clients
    sub = subscriber.subscription_path(emulators.project, f"sub-{uuid.uuid4().hex[:6]}")
    subscriber.create_subscription(name=sub, topic=f"projects/{emulators.project}/topics/{emulators.topic}")
    bucket = gcs.create_bucket(f"data-{uuid.uuid4().hex[:6]}")
    blob = bucket.blob("mnist/v1/_SUCCESS")
    blob.upload_from_string(b"")
    blob.reload()
    received = subscriber.pull(subscription=sub, max_messages=10, timeout=30).received_messages
    finalize = [m.message for m in received if m.message.attributes["eventType"] == "OBJECT_FINALIZE"]
    assert len(finalize) == 1
    attrs = finalize[0].attributes
    assert attrs["payloadFormat"] == "JSON_API_V1"
    assert attrs["bucketId"] == bucket.name and attrs["objectId"] == "mnist/v1/_SUCCESS"
    assert attrs["objectGeneration"] == str(blob.generation)
    payload = json.loads(finalize[0].data)
    assert payload["bucket"] == bucket.name and payload["name"] == "mnist/v1/_SUCCESS"
    assert payload["generation"] == str(blob.generation)


def test_up_is_idempotent_and_down_stops_everything(tmp_path):
    emu = Emulators(tmp_path / "emu")
    first = emu.up(buckets=("b-one",))
    pgids = [int(p.read_text().split()[0]) for p in (tmp_path / "emu" / "pids").glob("*.pid")]
    assert len(pgids) == 2 and all(group_alive(g) for g in pgids)
    again = emu.up(buckets=("b-two",))
    assert again.storage_host == first.storage_host and set(again.buckets) == {"b-one", "b-two"}
    assert sorted(emu.down()) == ["fake-gcs-server", "pubsub-emulator"]
    assert not any(group_alive(g) for g in pgids)
    assert emu.down() == []


def test_cli_env_and_missing_gcloud(tmp_path):
    env = {**os.environ, "PATH": "/nonexistent"}
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.emulators", "up", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("emulators: gcloud not found") and "Traceback" not in proc.stderr
