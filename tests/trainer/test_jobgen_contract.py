"""jobgen's side of the trainer contract: ExitCode default, Worker-only refusal, spot grace period,
typed hyperparameters in JOBGEN_HYPERPARAMETERS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from jobgen.render import render
from jobgen.spec import JobSpec
from tests.trainer.conftest import REPO

BASE = {"kind": "PyTorchJob", "name": "t", "image": "img", "replicas": {"Master": {"replicas": 1}}}


def spec(**over) -> JobSpec:
    return JobSpec.model_validate({**BASE, **over})


def env_of(manifest: dict, role: str = "Master") -> dict[str, str]:
    c = manifest["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in c["env"]}


def test_restart_policy_defaults_to_exitcode():
    m = render(spec())
    assert m["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] == "ExitCode"


def test_exitcode_description_matches_the_operator_rule():
    from trainer import exitcodes

    desc = JobSpec.model_fields["restart_policy"].description or ""
    assert ">= 128" in desc and "1-127" in desc
    # The operator's rule (train_util.go in v1.9.4) and the trainer's table agree.
    assert [c for c in (0, 1, 2, 3, 137, 138, 143) if exitcodes.retryable(c)] == [137, 138, 143]


def test_worker_only_without_elastic_is_refused_with_the_field(tmp_path):
    doc = {**BASE, "replicas": {"Worker": {"replicas": 3}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = subprocess.run(
        [sys.executable, "-m", "jobgen.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2, p.stderr
    assert "replicas.Worker.replicas" in p.stderr and "without a Master replica or distribution.elastic" in p.stderr
    assert "Traceback" not in p.stderr
    # One Worker alone, or Workers with an elasticPolicy, or with a Master: accepted.
    JobSpec.model_validate({**BASE, "replicas": {"Worker": {"replicas": 1}}})
    JobSpec.model_validate(
        {
            **BASE,
            "replicas": {"Worker": {"replicas": 3}},
            "distribution": {"elastic": {"minReplicas": 2, "maxReplicas": 4}},
        }
    )
    JobSpec.model_validate({**BASE, "replicas": {"Master": {"replicas": 1}, "Worker": {"replicas": 3}}})


@pytest.mark.parametrize(
    "placement, expected",
    [
        ({"spot": True}, 60),
        ({"spot": True, "terminationGracePeriodSeconds": 120}, 120),
        ({}, None),
        ({"terminationGracePeriodSeconds": 120}, None),  # only spot roles get it
    ],
)
def test_spot_roles_get_a_termination_grace_period(placement, expected):
    m = render(spec(placement=placement))
    pod = m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod.get("terminationGracePeriodSeconds") == expected


def test_typed_hyperparameters_reach_the_container_env():
    m = render(
        spec(
            hyperparameters={
                "lr": {"type": "float", "default": 0.1},
                "width": {"type": "int", "default": 8},
                "augment": {"type": "bool", "default": True},
            }
        ),
        params={"width": 16},
    )
    typed = json.loads(env_of(m)["JOBGEN_HYPERPARAMETERS"])
    assert typed == {
        "augment": {"type": "bool", "value": True},
        "lr": {"type": "float", "value": 0.1},
        "width": {"type": "int", "value": 16},
    }
    import dataclasses

    from trainer import hparams

    @dataclasses.dataclass
    class Params:
        lr: float = 0.0
        width: int = 0
        augment: bool = False

    got = hparams.load(Params, argv=[], env={"JOBGEN_HYPERPARAMETERS": json.dumps(typed)})
    assert got == Params(lr=0.1, width=16, augment=True)
