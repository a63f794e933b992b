"""The one error type the local cluster raises: its message is shown to the user as one line."""


class ClusterError(RuntimeError):
    pass
