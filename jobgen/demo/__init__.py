"""`make demo`: the whole retraining loop on one machine, with no cloud account and no Docker.

    python -m jobgen.demo [--fast] [--timeout 900]
    python -m jobgen.demo down

1. fake-gcs-server and the Pub/Sub emulator start; fake-gcs-server publishes real GCS notifications.
2. The local control plane starts (kube-apiserver, scheduler, controller-manager, training-operator
   v1.9.4, kwok nodes); the pod runner backs the job's pods with real local processes.
   DEMO_CLUSTER=kind uses a kind cluster instead (needs Docker): the trainer image is built and
   loaded into it, and the pods reach the GCS emulator through Docker's bridge.
3. The watcher (`jobgen watch`) starts on the notification subscription.
4. Data version v1 lands in gs://demo-data/mnist/v1/ (its _SUCCESS marker last): the watcher creates
   one PyTorchJob, the operator creates master and worker pods, and real DDP training (torch,
   gloo, 2 processes) reads the data from GCS, checkpoints, and publishes model, metrics, lineage
   and curves to the registry gs://demo-models/mnist/, promoting LATEST.
5. Data version v2 lands: a second job retrains, and LATEST moves only if the new model is better.
6. A summary table and a PNG of the training curves (saved to the registry) end the run.

Everything it starts is tracked: Ctrl-C stops it all; `down` (make demo-down) stops what a finished
run leaves up for exploring (the local cluster and the emulators). A rerun starts from clean buckets
and an empty job history, so it is idempotent.
"""

from jobgen.demo.settings import spec_doc, watcher_config

__all__ = ["spec_doc", "watcher_config"]
