"""Batch prediction: ``kind: BatchPrediction`` specs → ``batch/v1`` Indexed Jobs running ``trainer.predict``.

Modules: spec (the pydantic model), load (spec files), render (the Job, its deterministic name),
validate (offline checks), submit (``jobgen predict``), status (``jobgen status`` rows),
trigger (a Job for one data version, for the watcher), demo (the demo's prediction step).
Nothing here imports the kubernetes client or torch at import time.
"""
