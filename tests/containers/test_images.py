"""The three images, built from the repo's Dockerfiles with buildah (hack/images-local.sh), run as
containers: non-root, read-only root filesystem, no network, and no pip install at start-up."""

# No `from __future__ import annotations`: kfp reads the real annotations of the component function.

import json
import os
import shutil
import subprocess
import time

from kfp import dsl

from .conftest import REPO, podman

LOCKED_RUN = (
    "run",
    "--rm",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "none",
)


def test_the_trainer_image_trains_imports_and_has_no_pip_at_run_time(local_images):
    out = podman(
        *LOCKED_RUN,
        "--user",
        "10001:10001",
        local_images["trainer"],
        "python",
        "-c",
        "import json, torch, trainer.train, trainer.registry, kfp.dsl.executor_main, google.cloud.storage;"
        " import getpass, os; print(json.dumps({'torch': torch.__version__, 'user': getpass.getuser(),"
        " 'home': os.path.expanduser('~')}))",
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["torch"].startswith("2.15.0")
    assert info["user"] == "trainer" and info["home"] == "/home/trainer"


def test_the_trainer_image_compiles_its_model_with_torch_compile(local_images):
    """`--compile=true` as a pod runs it: non-root, no network, a read-only root (podman mounts a
    writable /tmp, where Inductor keeps its cache, as a pod's emptyDir would). Inductor generates C++
    and builds it with the image's g++; the run trains its steps."""
    out = podman(
        *LOCKED_RUN,
        "--user",
        "10001:10001",
        local_images["trainer"],
        "sh",
        "-c",
        "python -m trainer.train --compile=true --max-steps=3 --epochs=1 --log-every=1 --device=cpu"
        " --data-uri= --output-uri= --checkpoint-uri= && find /tmp/torchinductor_trainer -name '*.so' | head -1",
        timeout=900,
    )
    lines = out.stdout.strip().splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("step ")] == ["1", "2", "3"], out.stdout[-2000:]
    assert lines[-1].endswith(".so"), f"Inductor built no shared object:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def test_a_kfp_lightweight_component_runs_on_the_trainer_image_offline(local_images, tmp_path):
    """The component's own container command (compiled by kfp) runs in the image with no network:
    kfp's executor is already installed, nothing is pip-installed at start-up."""

    def add(a: int, b: int) -> int:
        return a + b

    comp = dsl.component(add, base_image=local_images["trainer"], install_kfp_package=False)
    container = comp.component_spec.implementation.container
    assert "pip install" not in " ".join(container.command)
    executor_input = {
        "inputs": {"parameterValues": {"a": 2, "b": 40}},
        "outputs": {"parameters": {"Output": {"outputFile": "/out/Output"}}, "outputFile": "/out/output_metadata.json"},
    }
    args = [a.replace("{{$}}", json.dumps(executor_input)) for a in container.args]
    tmp_path.chmod(0o777)
    podman(*LOCKED_RUN, "--user", "10001:10001", "-v", f"{tmp_path}:/out", container.image, *container.command, *args)
    assert json.loads((tmp_path / "output_metadata.json").read_text()) == {"parameterValues": {"Output": 42}}


def test_the_tf_trainer_image_imports(local_images):
    out = podman(
        *LOCKED_RUN,
        "--user",
        "10001:10001",
        local_images["tf-trainer"],
        "python",
        "-c",
        "import tensorflow as tf, tf_trainer.train, trainer.registry; print(tf.__version__)",
    )
    assert out.stdout.strip().splitlines()[-1] == "2.21.0"


def test_the_watcher_image_runs_jobgen_read_only_as_its_user(local_images):
    out = podman(*LOCKED_RUN, "--user", "65532:65532", local_images["watcher"], "--help")
    assert "watch" in out.stdout


def layers(ref: str) -> list[str]:
    return json.loads(podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref).stdout)


def test_a_source_edit_rebuilds_only_the_package_layer(local_images, tmp_path):
    """Edit jobgen (the watcher's package): every layer below the package layer is reused from the cache."""
    ctx = tmp_path / "ctx"
    for rel in (
        "pyproject.toml",
        "README.md",
        "images/watcher/requirements.lock",
        "images/watcher/Dockerfile",
        "images/watcher/Dockerfile.dockerignore",
    ):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, ctx / rel)
    shutil.copytree(REPO / "jobgen", ctx / "jobgen", ignore=shutil.ignore_patterns("__pycache__"))
    init = ctx / "jobgen" / "__init__.py"
    init.write_text(init.read_text() + "\n# a source edit\n")
    ref = "localhost/jobgen/watcher:layer-test"
    env = {**os.environ, "CONTAINERS_CONF": str(REPO / "hack/images/containers.conf")}
    t = time.monotonic()
    proc = subprocess.run(
        [
            "buildah",
            "bud",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--layers",
            "--quiet",
            "--ignorefile",
            str(ctx / "images/watcher/Dockerfile.dockerignore"),
            "-f",
            str(ctx / "images/watcher/Dockerfile"),
            "--build-arg",
            "BASE_IMAGE=localhost/jobgen/base:bookworm",
            "-t",
            ref,
            str(ctx),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    seconds = time.monotonic() - t
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        before, after = layers(local_images["watcher"]), layers(ref)
        assert len(before) == len(after)
        common = next((i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y), len(before))
        # only the package's own layers differ: COPY pyproject.toml README.md, COPY jobgen, RUN pip install .
        assert len(before) - 3 <= common < len(before), (common, len(before))
        history = podman("history", "--format", "{{.Size}}\t{{.CreatedBy}}", ref).stdout
        sizes = [line.split("\t")[0] for line in history.splitlines() if not line.startswith("0 B")]
        print(f"package layers {sizes[:3]} on dependencies {sizes[3]}")
        print(f"source-edit rebuild of the watcher image: {seconds:.1f}s")
    finally:
        podman("rmi", "--force", ref, check=False)
