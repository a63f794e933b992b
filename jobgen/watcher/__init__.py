"""The retraining watcher: new data in GCS → exactly one PyTorchJob/TFJob (or KFP run) per data version.

Split the way Argo Events separates its parts:

    sources/   Pub/Sub notifications, retrain requests (Pub/Sub), polling   → (data, attributes, Delivery)
    sensor/    events (parse) → rules (triggers, completion) → debounce → sensor (dedupe, Forbid/Replace,
               dead letters)                                                 → JobRequest
    targets/   job (PyTorchJob/TFJob through targets/kube.py, the only cluster adapter), predict (batch/v1
               Indexed Job for a BatchPrediction spec, same claims), pipeline (KFP run)

``state.py`` keeps the durable state shared by every replica in a GCS bucket (claims, pending
versions, the Forbid queue, poll progress); ``retrying.py`` is the one retry policy (tenacity);
``app.py`` only wires the parts; ``server.py`` adds /healthz, /readyz, /metrics, JSON logs and SIGTERM.
Importing this package is light; the Google clients, kubernetes and prometheus-client are imported
by the modules that use them.
"""
