"""Batch prediction: one index of a ``batch/v1`` Indexed Job (``jobgen predict``, docs/prediction.md).

    python -m trainer.predict --input=gs://in/batch-1 --glob='*.npy' --model=gs://models/mnist \\
        --model-version=LATEST --output=gs://preds/mnist/<job> --completions=3 [--index=N]

Layout under ``--output`` (every object is created with ``ifGenerationMatch=0``, never overwritten)::

    _job/plan.json            # the job's plan: model version (resolved once) and the input list
    predictions/<input>.jsonl # one line per example: id, class, probabilities, model_version
    raw/<input>.npz           # logits, probabilities, class, id
    quarantine/<input>.json   # a corrupt or unreadable input, with the reason
    manifest.json             # when every input has a prediction or a quarantine entry
    _SUCCESS                  # after manifest.json

The plan is written by the first index to start and read by every other one (a lost create is an
HTTP 412: the loser reads the winner's plan), so all indexes of a job use the same model version and
the same inputs even when LATEST moves or inputs land mid-job. Index ``i`` of ``n`` predicts the
plan's inputs ``i, i+n, i+2n, …`` (sorted by name): disjoint shares that cover every input.

Exit codes: 0 done; 2 a permanent error (bad arguments, no such model): the Job's podFailurePolicy
fails the index without retrying; anything else (a crash, a kill, GCS unreachable after retries)
is retried by ``backoffLimitPerIndex``, and the retried index skips what is already written.
"""

import argparse
import io
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer import registry
from trainer.gcs import GcsUri, TrainerError
from trainer.predict_inputs import Corrupt, Item, decode, fetch
from trainer.predict_model import LoadedModel, load_model
from trainer.predict_plan import (
    FORMAT,
    MANIFEST,
    PLAN,
    PREDICTIONS,
    QUARANTINE,
    RAW,
    SUCCESS,
    Config,
    create_once,
    ensure_plan,
    finish_if_complete,
    glob_regex,
    list_inputs,
    list_names,
    read_json,
    resolve_model,
    share,
)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PLAN",
    "PREDICTIONS",
    "QUARANTINE",
    "RAW",
    "SUCCESS",
    "Config",
    "Corrupt",
    "Item",
    "LoadedModel",
    "Predictor",
    "Stats",
    "create_once",
    "decode",
    "ensure_plan",
    "fetch",
    "finish_if_complete",
    "glob_regex",
    "list_inputs",
    "list_names",
    "load_model",
    "main",
    "parse_args",
    "read_json",
    "resolve_model",
    "run_index",
    "share",
]

log = logging.getLogger("trainer.predict")

EXIT_USAGE = 2


@dataclass
class Stats:
    inputs: int = 0  # in this index's share
    skipped: int = 0  # already had an output or quarantine entry
    predicted: int = 0
    quarantined: int = 0
    examples: int = 0
    existed: int = 0  # objects this index found already written (HTTP 412)
    seconds: float = 0.0
    model_version: str = ""
    plan_created: bool = False
    completed: bool = False  # this index wrote manifest.json


@dataclass
class _Pending:
    item: Item
    done: int = 0  # rows predicted
    queued_all: bool = False  # every row is in a batch
    logits: list[Any] = field(default_factory=list)

    def rows(self, start: int, end: int) -> np.ndarray:
        if self.item.x is None:
            raise AssertionError("rows of a released input")
        return self.item.x[start:end]

    def finished(self) -> bool:
        x = self.item.x
        return self.queued_all and (self.item.reason is not None or (x is not None and self.done >= x.shape[0]))


class Predictor:
    """Runs one index: reader threads fetch inputs ahead, the device predicts full batches, writer
    threads upload outputs, so I/O overlaps compute."""

    def __init__(self, cfg: Config, model: LoadedModel, model_version: str, device: Any) -> None:
        self.cfg = cfg
        self.model = model
        self.version = model_version
        self.device = device
        self.stats = Stats(model_version=model_version)
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []

    # --- compute -----------------------------------------------------------------------------
    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        t = torch.from_numpy(x)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        size = self.model.static_batch
        with torch.inference_mode():
            if size is None:
                out = self.model.fn(t)
            else:  # a program exported with a fixed batch size: pad the tail
                parts = []
                for start in range(0, t.shape[0], size):
                    chunk = t[start : start + size]
                    pad = size - chunk.shape[0]
                    if pad:
                        chunk = torch.cat([chunk, chunk.new_zeros((pad, *chunk.shape[1:]))])
                    parts.append(self.model.fn(chunk)[: size - pad])
                out = torch.cat(parts)
        if isinstance(out, (tuple, list)):
            out = out[0]
        result: np.ndarray = out.float().cpu().numpy()
        if result.ndim != 2 or result.shape[0] != x.shape[0]:
            raise Corrupt(
                f"the model returned shape {list(result.shape)} for {x.shape[0]} examples; expected [examples, classes]"
            )
        return result

    def _predict_rows(self, open_: dict[int, _Pending], rows: list[tuple[int, int, int]]) -> None:
        """Predict one batch made of row ranges (input key, start, end) of the open inputs."""
        rows = [r for r in rows if open_[r[0]].item.reason is None]
        if not rows:
            return
        parts = [open_[k].rows(s, e) for k, s, e in rows]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        try:
            logits = self._forward(x)
        except Exception as exc:
            if len({k for k, _, _ in rows}) == 1:
                first = str(exc).splitlines()[0] if str(exc) else ""
                open_[rows[0][0]].item.reason = f"the model rejected the input: {type(exc).__name__}: {first[:200]}"
                return
            for row in rows:  # input by input, so one bad input does not take the batch down
                self._predict_rows(open_, [row])
            return
        offset = 0
        for k, s, e in rows:
            open_[k].logits.append(logits[offset : offset + e - s])
            open_[k].done += e - s
            offset += e - s

    # --- outputs -----------------------------------------------------------------------------
    def _write(self, item: Item, logits: np.ndarray | None) -> None:
        if item.reason is not None or logits is None:
            doc = {
                "input": str(self.cfg.input.join(item.name)),
                "generation": item.generation,
                "reason": item.reason,
                "model_version": self.version,
                "quarantined_at": registry.now(),
            }
            created = create_once(
                self.cfg.output.join(QUARANTINE, item.name + ".json"),
                json.dumps(doc, sort_keys=True).encode(),
                "application/json",
                {"reason": (item.reason or "")[:500]},
            )
            with self._lock:
                self.stats.quarantined += 1
                self.stats.existed += not created
            log.warning("quarantined %s: %s", item.name, item.reason)
            return
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        classes = probs.argmax(axis=1)
        meta = {"model_version": self.version, "rows": str(len(classes)), "input_generation": str(item.generation)}
        buf = io.BytesIO()
        np.savez(
            buf, logits=logits, probabilities=probs.astype(np.float32), **{"class": classes}, id=np.array(item.ids)
        )
        raw_new = create_once(
            self.cfg.output.join(RAW, item.name + ".npz"), buf.getvalue(), "application/octet-stream", meta
        )
        src = str(self.cfg.input.join(item.name))
        lines = [
            json.dumps(
                {
                    "id": i,
                    "class": c,
                    "probabilities": row,
                    "input": src,
                    "model_version": self.version,
                },
                separators=(",", ":"),
            )
            for i, c, row in zip(
                item.ids, classes.tolist(), np.round(probs.astype(np.float64), 6).tolist(), strict=True
            )
        ]
        jsonl_new = create_once(
            self.cfg.output.join(PREDICTIONS, item.name + ".jsonl"),
            ("\n".join(lines) + "\n").encode(),
            "application/x-ndjson",
            meta,
        )
        with self._lock:
            self.stats.predicted += 1
            self.stats.examples += len(classes)
            self.stats.existed += (not raw_new) + (not jsonl_new)

    def _submit_write(self, pool: ThreadPoolExecutor, futures: list[Future[None]], pend: _Pending) -> None:
        logits = np.concatenate(pend.logits) if pend.logits and pend.item.reason is None else None
        pend.item.x = None  # free the input while its output uploads
        futures.append(pool.submit(self._write, pend.item, logits))

    # --- the loop ----------------------------------------------------------------------------
    def _items(self, entries: list[dict[str, Any]], pool: ThreadPoolExecutor) -> Iterator[Item]:
        """Inputs in order, fetched up to ``prefetch`` ahead."""
        window: queue.SimpleQueue[Future[Item]] = queue.SimpleQueue()
        pending = 0
        it = iter(entries)
        for entry in it:
            window.put(pool.submit(fetch, self.cfg.input, entry))
            pending += 1
            if pending >= self.cfg.prefetch:
                break
        while pending:
            item = window.get().result()
            pending -= 1
            nxt = next(it, None)
            if nxt is not None:
                window.put(pool.submit(fetch, self.cfg.input, nxt))
                pending += 1
            yield item

    def run(self, entries: list[dict[str, Any]]) -> Stats:
        start = time.perf_counter()
        bs = self.cfg.batch_size
        writes: list[Future[None]] = []
        with (
            ThreadPoolExecutor(self.cfg.prefetch, thread_name_prefix="read") as readers,
            ThreadPoolExecutor(self.cfg.writers, thread_name_prefix="write") as writers,
        ):
            open_: dict[int, _Pending] = {}  # inputs with rows in flight, by sequence number
            queued: list[tuple[int, int, int]] = []  # rows of the next batch: (input, start, end)
            queued_rows = 0
            shape: tuple[int, ...] | None = None

            def predict_queued() -> None:
                nonlocal queued, queued_rows
                if queued:
                    self._predict_rows(open_, queued)
                    for key in dict.fromkeys(k for k, _, _ in queued):
                        if open_[key].finished():
                            self._submit_write(writers, writes, open_.pop(key))
                queued, queued_rows = [], 0

            for seq, item in enumerate(self._items(entries, readers)):
                if item.reason is not None or item.x is None:
                    self._submit_write(writers, writes, _Pending(item, queued_all=True))
                    continue
                if shape is not None and item.x.shape[1:] != shape:
                    predict_queued()  # the rows of one batch share a shape
                shape = item.x.shape[1:]
                pend = open_[seq] = _Pending(item)
                n, first = item.x.shape[0], 0
                while first < n:
                    take = min(bs - queued_rows, n - first)
                    queued.append((seq, first, first + take))
                    queued_rows += take
                    first += take
                    pend.queued_all = first >= n
                    if queued_rows == bs:
                        predict_queued()
            predict_queued()
            for fut in writes:
                fut.result()  # raises the first write error
        self.stats.seconds = time.perf_counter() - start
        return self.stats


def run_index(cfg: Config) -> Stats:
    """Everything one index does: plan, model, its share, completion check."""
    import torch

    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainerError("--device=cuda but torch.cuda.is_available() is False (no GPU or driver in this pod)")
    plan, created = ensure_plan(cfg)
    if int(plan["completions"]) != cfg.completions:
        raise TrainerError(
            f"{cfg.output.join(PLAN)} was made for {plan['completions']} indexes, this job has "
            f"{cfg.completions}; use a new output prefix (jobgen predict --run)"
        )
    model_info = plan["model"]
    log.info(
        "index %d/%d: model %s (%s, resolved from %s%s), %d inputs in the plan",
        cfg.index,
        cfg.completions,
        model_info["uri"],
        model_info["file"],
        model_info["resolved_from"],
        "; plan created by this index" if created else f"; plan of index {plan.get('created_by_index')}",
        len(plan["inputs"]),
    )
    mine = share(plan["inputs"], cfg.index, cfg.completions)
    done = {n[: -len(".jsonl")] for n in list_names(cfg.output, PREDICTIONS) if n.endswith(".jsonl")}
    done |= {n[: -len(".json")] for n in list_names(cfg.output, QUARANTINE) if n.endswith(".json")}
    todo = [e for e in mine if e["name"] not in done]
    stats = Stats(
        model_version=model_info["version"], plan_created=created, inputs=len(mine), skipped=len(mine) - len(todo)
    )
    if todo:
        model = load_model(model_info, device)
        log.info("loaded %s of model version %s on %s", model.file, model_info["version"], device)
        predictor = Predictor(cfg, model, model_info["version"], device)
        run = predictor.run(todo)
        stats.predicted, stats.quarantined, stats.examples = run.predicted, run.quarantined, run.examples
        stats.existed, stats.seconds = run.existed, run.seconds
    log.info(
        "index %d: %d inputs, %d skipped (already done), %d predicted (%d examples, %.1f/s), %d quarantined",
        cfg.index,
        stats.inputs,
        stats.skipped,
        stats.predicted,
        stats.examples,
        stats.examples / max(stats.seconds, 1e-9),
        stats.quarantined,
    )
    stats.completed = finish_if_complete(cfg, plan)
    return stats


def parse_args(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(
        prog="python -m trainer.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input", required=True, help="gs:// prefix of the inputs")
    p.add_argument("--glob", default="**", help="glob of input paths relative to --input")
    p.add_argument("--model", required=True, help="registry root gs://<models>/<model>")
    p.add_argument("--model-version", default=registry.LATEST, help="LATEST (resolved once per job) or a version")
    p.add_argument("--output", required=True, help="gs:// prefix of this job's outputs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--completions",
        type=int,
        default=int(os.environ.get("JOB_COMPLETIONS", "1")),
        help="number of indexes of the job",
    )
    p.add_argument("--index", type=int, default=None, help="this index (default: $JOB_COMPLETION_INDEX)")
    p.add_argument("--prefetch", type=int, default=8, help="inputs read ahead of the device")
    p.add_argument("--writers", type=int, default=8, help="threads uploading outputs")
    args = p.parse_args(argv)
    index = args.index
    if index is None:
        raw = os.environ.get("JOB_COMPLETION_INDEX")
        if raw is None or not raw.isdigit():
            raise TrainerError(f"no --index and JOB_COMPLETION_INDEX is {raw!r}; run as an Indexed Job")
        index = int(raw)
    for name in ("batch_size", "completions", "prefetch", "writers"):
        if getattr(args, name) < 1:
            raise TrainerError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 <= index < args.completions:
        raise TrainerError(f"index {index} is outside 0..{args.completions - 1}")
    out = GcsUri.parse(args.output, "--output")
    if not out.path:
        raise TrainerError(f"--output must be a prefix under a bucket, got {args.output!r}")
    return Config(
        input=GcsUri.parse(args.input, "--input"),
        glob=args.glob,
        model=args.model,
        model_version=args.model_version,
        output=out,
        index=index,
        completions=args.completions,
        batch_size=args.batch_size,
        device=args.device,
        prefetch=args.prefetch,
        writers=args.writers,
        job_name=os.environ.get("JOB_NAME", ""),
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [index {os.environ.get('JOB_COMPLETION_INDEX', '?')}] %(message)s",
    )
    logging.getLogger("google").setLevel(logging.WARNING)
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
        run_index(cfg)
    except TrainerError as exc:
        print(f"python -m trainer.predict: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
