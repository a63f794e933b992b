"""MultiWorkerMirroredStrategy trainer for TFJobs; shares data, checkpoint and registry code with `trainer`."""

__version__ = "0.1.0"
