"""jobgen: render, validate and submit Kubeflow training jobs (PyTorchJob/TFJob, kubeflow.org/v1).

Importing this package is cheap on purpose: heavy modules (kubernetes, torch, kfp, the Google
clients) are imported only by the functions that use them.
"""

__version__ = "0.1.0"
