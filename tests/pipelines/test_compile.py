"""`jobgen pipeline`: the compiled KFP v2 IR (structure, typed parameters, images) and the
rejections that happen before anything compiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobgen.errors import UserError
from jobgen.pipelines.compile import compile_spec, component_images, parameter_name
from tests.pipelines.conftest import REPO, local_spec, write_yaml

KFP_TYPE = {"int": "NUMBER_INTEGER", "float": "NUMBER_DOUBLE", "str": "STRING", "bool": "BOOLEAN"}


def spec_file(tmp_path: Path, **changes) -> Path:
    doc = local_spec("digits", "gs://dat/digits/v1", "gs://mod/digits", "gs://ckp/digits")
    doc["image"] = "us-docker.pkg.dev/proj/training/trainer:abc123"
    doc["hyperparameters"]["use-amp"] = {"type": "bool", "default": False}
    doc.update(changes)
    return write_yaml(tmp_path / "spec.yaml", doc)


def compile_ir(tmp_path: Path, **kw) -> dict:
    out = compile_spec(kw.pop("spec", None) or spec_file(tmp_path), output=tmp_path / "p.yaml", **kw)
    assert out == tmp_path / "p.yaml"
    return yaml.safe_load(out.read_text())


def executor_of(ir: dict, task: str) -> dict:
    comp = ir["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = ir["components"][comp]["executorLabel"]
    return ir["deploymentSpec"]["executors"][label]["container"]


def test_dag_order_and_components(tmp_path):
    ir = compile_ir(tmp_path)
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == {"validate-data", "train", "evaluate", "register"}
    assert "dependentTasks" not in tasks["validate-data"]
    assert tasks["train"]["dependentTasks"] == ["validate-data"]
    assert tasks["evaluate"]["dependentTasks"] == ["train"]
    assert tasks["register"]["dependentTasks"] == ["evaluate"]
    # evaluate reads the job name the train step returned; register takes evaluate's measurements
    assert tasks["evaluate"]["inputs"]["parameters"]["job_name"]["taskOutputParameter"] == {
        "producerTask": "train",
        "outputParameterKey": "Output",
    }
    reg = tasks["register"]["inputs"]["parameters"]
    for key in ("version", "metric", "value", "mode"):
        assert reg[key]["taskOutputParameter"] == {"producerTask": "evaluate", "outputParameterKey": key}
    assert ir["pipelineInfo"]["name"] == "digits-pipeline"
    assert ir["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"
    for task in tasks.values():  # never served from cache: every run really trains
        assert task.get("cachingOptions", {}).get("enableCache") is not True


def test_images_come_from_images_dir_names(tmp_path):
    ir = compile_ir(tmp_path)
    images = {t: executor_of(ir, t)["image"] for t in ir["root"]["dag"]["tasks"]}
    assert images == {
        "validate-data": "us-docker.pkg.dev/proj/training/trainer:abc123",
        "train": "us-docker.pkg.dev/proj/training/watcher:abc123",
        "evaluate": "us-docker.pkg.dev/proj/training/trainer:abc123",
        "register": "us-docker.pkg.dev/proj/training/trainer:abc123",
    }
    for name in ("trainer", "watcher"):
        assert (REPO / "images" / name / "Dockerfile").is_file()
    ir = compile_ir(tmp_path, image_registry="eu.gcr.io/other/", image_tag="v9")
    assert executor_of(ir, "train")["image"] == "eu.gcr.io/other/watcher:v9"
    assert executor_of(ir, "evaluate")["image"] == "eu.gcr.io/other/trainer:v9"
    # lightweight components: the function's source runs under the KFP executor
    assert "train" in executor_of(ir, "train")["command"][-1]


def test_hyperparameters_become_typed_parameters_with_defaults(tmp_path):
    spec = yaml.safe_load(spec_file(tmp_path).read_text())
    ir = compile_ir(tmp_path, params={"lr": "0.2", "use-amp": "true"})
    inputs = ir["root"]["inputDefinitions"]["parameters"]
    for hp_name, hp in spec["hyperparameters"].items():
        p = inputs[parameter_name(hp_name)]
        assert p["parameterType"] == KFP_TYPE[hp["type"]], hp_name
        want = {"lr": 0.2, "use-amp": True}.get(hp_name, hp["default"])
        assert p["defaultValue"] == want and p["isOptional"], hp_name
    assert "batch_size" in inputs and "batch-size" not in inputs
    assert inputs["data_uri"] == {"parameterType": "STRING", "defaultValue": "gs://dat/digits/v1", "isOptional": True}
    assert inputs["output_uri"]["defaultValue"] == "gs://mod/digits"
    assert inputs["timeout_seconds"]["parameterType"] == "NUMBER_INTEGER"
    assert inputs["delete_policy"]["defaultValue"] == "OnSuccess"
    # the train step gets every hyperparameter under its declared name, wired to its parameter
    hp_in = ir["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    struct = hp_in["hyperparameters"]["runtimeValue"]["constant"]
    assert set(struct) == set(spec["hyperparameters"])
    assert struct["batch-size"] == "{{$.inputs.parameters['pipelinechannel--batch_size']}}"
    assert hp_in["pipelinechannel--batch_size"] == {"componentInputParameter": "batch_size"}
    embedded = json.loads(hp_in["spec_json"]["runtimeValue"]["constant"])
    assert embedded["name"] == "digits" and embedded["kind"] == "PyTorchJob"


def test_spec_without_data_makes_data_uri_required(tmp_path):
    doc = local_spec("digits", "gs://dat/x", "gs://mod/digits", "gs://ckp/digits")
    del doc["storage"]["data"]
    ir = compile_ir(tmp_path, spec=write_yaml(tmp_path / "s.yaml", doc), image_tag="t")
    assert ir["root"]["inputDefinitions"]["parameters"]["data_uri"] == {"parameterType": "STRING"}


def test_custom_templates_are_embedded(tmp_path):
    tdir = tmp_path / "templates"
    tdir.mkdir()
    text = (REPO / "jobgen/templates/pytorchjob.yaml.j2").read_text()
    (tdir / "pytorchjob.yaml.j2").write_text(text.replace("metadata:", "metadata:\n  # custom", 1))
    ir = compile_ir(tmp_path, template_dir=str(tdir))
    const = ir["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["templates"]["runtimeValue"]["constant"]
    assert "# custom" in const["pytorchjob.yaml.j2"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"nope": "1"}, "hyperparameters.nope: unknown hyperparameter"),
        ({"epochs": "three"}, "hyperparameters.epochs: expected int, got 'three'"),
        ({"lr": "5"}, "hyperparameters.lr: 5.0 is above the maximum 1.0"),
        ({"backend": "nccl"}, "hyperparameters.backend: 'nccl' is not one of ['gloo']"),
        ({"use-amp": "maybe"}, "hyperparameters.use-amp: expected bool"),
    ],
)
def test_bad_parameters_rejected_at_compile_time(tmp_path, params, message):
    with pytest.raises(UserError, match=None) as err:
        compile_spec(spec_file(tmp_path), params=params, output=tmp_path / "p.yaml")
    assert message in str(err.value)
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hyperparameters": {"data_uri": {"type": "str", "default": "x"}}}, "clashes with the pipeline parameter"),
        (
            {"hyperparameters": {"a-b": {"type": "int", "default": 1}, "a_b": {"type": "int", "default": 2}}},
            "like hyperparameter 'a-b'",
        ),
        ({"kind": "TFJob", "replicas": {"Chief": {"replicas": 1}}}, "trains with a PyTorchJob"),
        ({"image": "trainer@sha256:" + "a" * 64}, "cannot tell the image tag"),
    ],
)
def test_bad_specs_rejected(tmp_path, change, message):
    with pytest.raises(UserError) as err:
        compile_spec(spec_file(tmp_path, **change), output=tmp_path / "p.yaml")
    assert message in str(err.value)


def test_cli_prints_user_errors_without_traceback(tmp_path):
    spec = spec_file(tmp_path)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobgen.cli",
            "pipeline",
            str(spec),
            "-p",
            "epochs=x",
            "-p",
            "zzz=1",
            "-o",
            str(tmp_path / "p.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr
    assert "hyperparameters.epochs: expected int" in bad.stderr and "hyperparameters.zzz: unknown" in bad.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobgen.cli",
            "pipeline",
            str(spec),
            "--set",
            "name=renamed",
            "-p",
            "epochs=4",
            "-o",
            str(tmp_path / "p.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert ok.returncode == 0, ok.stderr
    ir = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert ir["pipelineInfo"]["name"] == "renamed-pipeline"
    assert ir["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"] == 4


def test_component_image_names():
    assert component_images("local/trainer:dev", None, None) == ("local/trainer:dev", "local/watcher:dev")
    assert component_images("localhost:5000/a/trainer:1.2", None, None) == (
        "localhost:5000/a/trainer:1.2",
        "localhost:5000/a/watcher:1.2",
    )
    with pytest.raises(UserError, match="image tag"):
        component_images("localhost:5000/a/trainer", None, None)
    with pytest.raises(UserError, match="not a valid image tag"):
        component_images("r/trainer:1", None, "bad tag!")


def test_import_stays_light():
    code = "import sys, jobgen.pipelines; print(any(m.split('.')[0] in ('kfp', 'kubernetes') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"nope": 1}, "unexpected keyword argument"),
        ({"epochs": "three"}, "incompatible with the input type 'NUMBER_INTEGER'"),
        ({"lr": "fast"}, "incompatible with the input type 'NUMBER_DOUBLE'"),
        ({"use_amp": "yes"}, "incompatible with the input type 'BOOLEAN'"),
    ],
)
def test_kfp_rejects_unknown_and_mistyped_run_arguments_before_running(tmp_path, arguments, error):
    from kfp import local

    from jobgen.pipelines.compile import build_pipeline

    root = tmp_path / "kfp-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = build_pipeline(spec_file(tmp_path))
    with pytest.raises(Exception, match=error):
        pipeline(**arguments)
    assert not root.exists() or not any(root.iterdir())  # no step ran
