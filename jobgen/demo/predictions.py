"""The demo's prediction step: after the promotion an input batch lands, one Indexed Job predicts it
with the registry's LATEST model (through the pod runner), and the summary table is printed."""

from __future__ import annotations

from jobgen.demo.infra import World
from jobgen.demo.settings import BUCKETS, KIND_IMAGE, NAMESPACE, PREFIX
from jobgen.demo.ui import DemoError, say

BATCH_EXAMPLES = 300
PREDICTION_NAME = "mnist-predict"


def predict_after_promotion(world: World, timeout: float) -> None:
    """Land ``BATCH_EXAMPLES`` digits (3 .npy inputs and a corrupt one, then ``_SUCCESS``) in the inputs
    bucket, predict them with LATEST, and print counts, the model version used and sample predictions."""
    from trainer import data

    from jobgen.podrunner import pod_settings
    from jobgen.predict.demo import run_after_promotion

    arrays, _ = data.digits(seed=1)
    batch = {k: v[:BATCH_EXAMPLES] for k, v in arrays.items()}
    labels, annotations = pod_settings()
    summary = run_after_promotion(
        world.cluster,
        world.storage,
        models_uri=f"gs://{BUCKETS['models']}/{PREFIX}",
        input_bucket=BUCKETS["inputs"],
        input_prefix=f"{PREFIX}/batch-1",
        output=f"gs://{BUCKETS['predictions']}/{PREFIX}",
        namespace=NAMESPACE,
        arrays=batch,
        pod_labels=labels,
        pod_annotations=annotations,
        image=KIND_IMAGE if world.kind else "local/trainer:dev",
        name=PREDICTION_NAME,
        env=world.pod_env or None,
        timeout=timeout,
        say=say,
    )
    say(summary.table())
    if summary.state != "Complete":
        raise DemoError(f"prediction Job {summary.job} {summary.state}; pod logs in {world.state / 'pod-logs'}")
