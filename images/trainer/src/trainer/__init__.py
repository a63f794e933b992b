"""DDP trainer for PyTorchJobs: GCS data, exact checkpoint/resume, versioned model registry.

Modules: env (operator env contract), data (sharded data sets), model (default model + hooks),
checkpoint (atomic checkpoints), registry (outputs + LATEST promotion), train (the CLI).
Only model, checkpoint (lazily) and train import torch; gcs, env, data and registry don't, so the
TF trainer shares them.
"""

__version__ = "0.1.0"
