"""The local cluster raises jobgen's ClusterError: its message is shown to the user as one line."""

from jobgen.errors import ClusterError

__all__ = ["ClusterError"]
