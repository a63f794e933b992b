"""The retraining watcher: new data in GCS → exactly one PyTorchJob/TFJob per data version.

    source (Pub/Sub notifications, polling, retrain requests)
      → filter/batch (events.py parses, rules.py matches triggers and decides completion)
      → trigger (trigger.py: deterministic job name, rendered through jobgen)
      → sink (sink.py: create on the apiserver, AlreadyExists = done, Event, state ConfigMap)

``app.py`` wires the stages, ``server.py`` adds /healthz, /readyz, /metrics, JSON logs and SIGTERM.
Importing this package is light; the Google clients, kubernetes and prometheus-client are imported
by the modules that use them.
"""
