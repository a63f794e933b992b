"""Step 6 of the demo: the summary table and the training curves."""

from __future__ import annotations

from pathlib import Path

from jobgen.demo.infra import World
from jobgen.demo.retrain import Run
from jobgen.demo.settings import BUCKETS, METRIC, PREFIX


def plot(runs: list[Run], world: World) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        if not run.curves:
            continue
        x = [float(r.get("epoch", i)) for i, r in enumerate(run.curves)]
        label = f"{run.model_version} (data {run.data_version})"
        axes[0].plot(x, [float(r["train_loss"]) for r in run.curves], marker="o", label=f"{label} train")
        axes[0].plot(x, [float(r["val_loss"]) for r in run.curves], linestyle="--", marker="x", label=f"{label} val")
        axes[1].plot(x, [float(r["val_accuracy"]) for r in run.curves], marker="o", label=label)
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title="validation accuracy", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = world.state / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    world.storage.bucket(BUCKETS["models"]).blob(f"{PREFIX}/curves.png").upload_from_filename(str(path))
    return path


def summary(runs: list[Run]) -> str:
    from jobgen.status import table

    rows = [["DATA", "JOB", "STATE", "SECONDS", "MODEL VERSION", METRIC.upper(), "LATEST"]]
    for run in runs:
        rows.append(
            [
                run.data_version,
                run.job or "-",
                run.state,
                f"{run.seconds:.0f}",
                run.model_version or "-",
                "-" if run.metric is None else f"{run.metric:.4f}",
                "yes" if run.promoted else "no",
            ]
        )
    return table(rows)
