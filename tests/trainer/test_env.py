"""The operator's env contract → global rank and world size (no torch needed)."""

from __future__ import annotations

import pytest
from trainer import env
from trainer.gcs import TrainerError

from tests.trainer.conftest import operator_pod_env


def test_one_process_per_pod_rank_is_the_pod_index():
    for rank in range(4):
        d = env.resolve(operator_pod_env(rank, 4, 23456), gpus=0)
        assert (d.mode, d.rank, d.world_size, d.local_rank, d.node_rank, d.nnodes) == ("pod", rank, 4, 0, rank, 4)
        assert (d.master_addr, d.master_port) == ("127.0.0.1", 23456)


def test_nproc_auto_without_gpus_is_one_process_per_pod():
    d = env.resolve(operator_pod_env(1, 2, 1234, nproc="auto"), gpus=0)
    assert (d.mode, d.rank, d.world_size) == ("pod", 1, 2)


def test_nproc_per_node_above_one_relaunches_under_torchrun():
    # WORLD_SIZE from the operator is pods x nproc, RANK is still the pod index.
    e = operator_pod_env(1, 2, 1234, nproc="4")
    assert e["WORLD_SIZE"] == "8" and e["RANK"] == "1"
    d = env.resolve(e, gpus=0)
    assert (d.mode, d.node_rank, d.nnodes, d.local_world_size, d.world_size) == ("launch", 1, 2, 4, 8)
    argv = env.torchrun_argv(d, ["-m", "trainer.train"], ["--lr=0.1"])
    assert argv[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=4"]
    assert "--standalone" not in argv  # multi-node: torchrun takes PET_NNODES/PET_NODE_RANK/PET_MASTER_*
    assert argv[-3:] == ["-m", "trainer.train", "--lr=0.1"]


def test_nproc_gpu_counts_gpus():
    d = env.resolve(operator_pod_env(0, 1, 1234, nproc="gpu"), gpus=8)
    assert (d.mode, d.local_world_size, d.world_size) == ("launch", 8, 8)
    with pytest.raises(TrainerError, match="no visible GPU"):
        env.resolve(operator_pod_env(0, 1, 1234, nproc="gpu"), gpus=0)


def test_elastic_relaunches_even_with_one_process():
    e = {
        "PET_RDZV_ENDPOINT": "job-worker-0:23456",
        "PET_RDZV_BACKEND": "c10d",
        "PET_NNODES": "2:8",
        "PET_NPROC_PER_NODE": "1",
        "PET_MAX_RESTARTS": "10",
    }
    d = env.resolve(e, gpus=0)
    assert d.mode == "launch" and d.nnodes == -1 and d.world_size == -1
    assert "--standalone" not in env.torchrun_argv(d, ["-m", "trainer.train"], [])


def test_under_torchrun_the_process_values_win():
    # torchrun overwrites RANK/WORLD_SIZE with global per-process values in its children.
    e = {
        **operator_pod_env(1, 2, 1234, nproc="2"),
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "TORCHELASTIC_RUN_ID": "abc",
    }
    d = env.resolve(e, gpus=0)
    assert (d.mode, d.rank, d.world_size, d.local_rank, d.local_world_size, d.node_rank, d.nnodes) == (
        "torchrun",
        3,
        4,
        1,
        2,
        1,
        2,
    )


def test_no_environment_is_a_single_process():
    d = env.resolve({}, gpus=0)
    assert (d.mode, d.rank, d.world_size, d.distributed) == ("single", 0, 1, False)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR"),
        ({**operator_pod_env(0, 2, 1), "RANK": "2"}, "not below"),
        ({**operator_pod_env(0, 2, 1), "WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
        ({**operator_pod_env(0, 2, 1), "PET_NNODES": "3"}, "PET_NNODES=3"),
        ({"PET_NPROC_PER_NODE": "lots"}, "PET_NPROC_PER_NODE"),
        ({"PET_NPROC_PER_NODE": "0"}, ">= 1"),
    ],
)
def test_inconsistent_environments_are_rejected(bad, message):
    with pytest.raises(TrainerError, match=message):
        env.resolve(bad, gpus=0)


def test_the_storage_client_follows_the_emulator_address_of_the_environment(monkeypatch):
    """A client cached for one STORAGE_EMULATOR_HOST is never handed out after it changed."""
    from trainer import gcs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    first = gcs.client()
    assert first is gcs.client()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:2")
    assert gcs.client()._connection.API_BASE_URL == "http://127.0.0.1:2"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    assert gcs.client() is first
