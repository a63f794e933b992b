"""Shared test fixtures: example specs, the emulators, and the local control plane.

The `local_cluster` session fixture: a real control plane (etcd, kube-apiserver with RBAC,
controller-manager, scheduler, training-operator v1.9.4, kwok GPU nodes) for integration tests.

It builds the pinned binaries if they are missing (hack/build-bins.sh), starts the cluster in a
temporary state dir and stops exactly what it started. With CI=true a cluster that cannot start
fails the tests; elsewhere, a machine without Go skips them with the reason.
Set JOBGEN_LOCALCLUSTER_REUSE=1 to use (and leave running) the cluster of
`python -m jobgen.localcluster up` instead.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobgen.localcluster import ClusterError, LocalCluster, default_state_dir
from jobgen.localcluster.bins import binaries
from jobgen.localcluster.testing import LocalClusterHandle

REPO = Path(__file__).resolve().parent.parent
JOBS = sorted((REPO / "jobs").glob("*.yaml"))


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "jobs" / name).read_text())


@pytest.fixture
def cpu_spec() -> dict[str, Any]:
    return copy.deepcopy(load_example("cpu-ddp.yaml"))


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(doc: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory):
    """fake-gcs-server + the Pub/Sub emulator, started for this test session and stopped after it.

    Yields an EmulatorInfo; ``info.env()`` has STORAGE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST.
    fake-gcs-server publishes GCS notifications (JSON_API_V1) to topic ``info.topic``.
    """
    from jobgen.emulators import EmulatorError, Emulators

    emu = Emulators(tmp_path_factory.mktemp("emulators"))
    try:
        info = emu.up()
    except EmulatorError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"emulators unavailable in CI: {exc}", pytrace=False)
        pytest.skip(f"emulators unavailable: {exc}")
    try:
        yield info
    finally:
        emu.down()


# --- nothing a test package sets in this process outlives it -----------------------------------
# A package that exports an emulator's address into os.environ and leaves it there sends every later
# package's clients to an endpoint that is gone (a CI run once spent its budget on exactly that).
# At the end of each top-level package the environment must be what it was at the start: otherwise
# the last test of the package errors with the variables, and the environment is put back.

_ENV_AT_START: dict[str, str] = {}

# `make test` runs pytest on two xdist workers (-n 2): tests/watcher on one, every other package on
# the other. Most of the watcher tests' time is waiting for gcloud's Pub/Sub emulator (it hands a
# killed or closed stream's leases back only in slow sweeps), so they run beside the CPU-bound rest
# instead of after it (docs/benchmarks.md, "The whole CI run"). Each worker starts the emulators and
# the local cluster it needs; the real node is only ever started by tests/containers, on one worker.
# A scheduler of our own rather than `--dist loadgroup`: that one groups by rewriting node ids, which
# pytest 9.2 no longer honours (pytest-dev/pytest-xdist#1386: tests silently spread over workers).
SECOND_WORKER = "tests/watcher/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class TwoGroups(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no type stubs
        def _split_scope(self, nodeid: str) -> str:
            return "watcher" if nodeid.startswith(SECOND_WORKER) else "rest"

    return TwoGroups(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    _ENV_AT_START.update(os.environ)


def _package(item: pytest.Item | None) -> str | None:
    if item is None:
        return None
    try:
        parts = Path(str(item.path)).resolve().relative_to(item.config.rootpath / "tests").parts
    except ValueError:
        return str(item.path)
    return parts[0] if len(parts) > 1 else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    result = yield
    if _package(item) != _package(nextitem):
        changed = env_changes(_ENV_AT_START, dict(os.environ))
        if changed:
            for key in changed:
                if key in _ENV_AT_START:
                    os.environ[key] = _ENV_AT_START[key]
                else:
                    os.environ.pop(key, None)
            raise AssertionError(
                f"tests/{_package(item)} left the process environment changed: {', '.join(changed)} "
                "(restore what a fixture sets, e.g. with monkeypatch.setenv)"
            )
    return result


@contextlib.contextmanager
def preserved_environ() -> Iterator[None]:
    """For a fixture whose setup exports variables into this process (a demo step, an Env): the
    environment as it was, back when the fixture ends."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# Set by libraries for the rest of the process, to a value that is the same whichever test ran first.
LIBRARY_SET = {
    # torch._inductor.runtime.cache_dir_utils.cache_dir() (torch.export, torch.compile) exports the
    # directory it resolved, /tmp/torchinductor_<user> unless the variable was set.
    "TORCHINDUCTOR_CACHE_DIR",
}


def env_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The variables added, removed or changed, by name (values may be secrets); pytest's own and
    LIBRARY_SET's aside."""
    keys = (k for k in before.keys() | after.keys() if not k.startswith("PYTEST_") and k not in LIBRARY_SET)
    return sorted(k for k in keys if before.get(k) != after.get(k))


# --- the local control plane -----------------------------------------------------------------

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"local cluster unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"local cluster unavailable: {reason}")


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClusterHandle]:
    reuse = os.environ.get("JOBGEN_LOCALCLUSTER_REUSE") == "1"
    if reuse:
        cluster = LocalCluster(default_state_dir())
        if not cluster.is_up():
            _unavailable("JOBGEN_LOCALCLUSTER_REUSE=1 but `python -m jobgen.localcluster up` is not running")
    else:
        if binaries().missing() and shutil.which("go") is None:
            _unavailable("go not found: install Go >= 1.26 to build the local control plane")
        cluster = LocalCluster(tmp_path_factory.mktemp("localcluster"), context="jobgen-test")
    try:
        info = cluster.up() if not reuse else cluster.info()
    except ClusterError as e:
        pytest.fail(f"local cluster failed to start: {e}", pytrace=False)
    assert info is not None
    handle = LocalClusterHandle(
        cluster=cluster,
        kubeconfig=info.kubeconfig,
        context=info.context,
        server=info.server,
        bin_dir=info.bin_dir,
        kubectl_path=str(binaries().path("kubectl")),
    )
    try:
        yield handle
    finally:
        if reuse:
            handle.delete_created_namespaces()  # leave the shared cluster as we found it
        else:
            cluster.down()
            leftover = [name for name, running in cluster.processes().items() if running]
            assert not leftover, f"processes still running after down: {leftover}"
