"""The trainer's exit-code contract, matched to training-operator v1.9.4's ``restartPolicy: ExitCode``.

The operator (``pkg/util/train/train_util.go``) retries a replica whose container exited with a code
``>= 128`` (it deletes the pod and creates it again, counted against ``runPolicy.backoffLimit``) and
fails the job on ``1..127``. A pod that vanished without a terminated container status (node gone)
is seen as code 0xbeef, also retried. So:

====  =====================================================================  =========
code  meaning                                                                retried
====  =====================================================================  =========
0     training finished (and the model was published, when OUTPUT_URI set)  --
1     unexpected error: a bug, with its traceback                            no
2     bad input: hyperparameters, URIs, data set, hooks, env contract,       no
      Worker-only PyTorchJob without elasticPolicy, incompatible resume
3     a GPU job whose container cannot use CUDA (driver/CUDA mismatch)       no
138   transient infrastructure failure: NCCL/gloo timeout or lost peer,      yes
      rendezvous failure, storage 5xx/timeouts after the retries ran out
143   stopped by SIGTERM (preemption, eviction) after checkpointing          yes
137   killed by SIGKILL (kubelet after the grace period, OOM killer)         yes
====  =====================================================================  =========

No torch import here.
"""

from __future__ import annotations

from trainer.gcs import TrainerError

OK = 0
BUG = 1
USAGE = 2
NO_CUDA = 3
TRANSIENT = 138
PREEMPTED = 143
KILLED = 137

RETRYABLE_FROM = 128  # training-operator v1.9.4: IsRetryableExitCode(code) == (code >= 128)


def retryable(code: int) -> bool:
    """What the operator's ExitCode policy does with ``code``."""
    return code >= RETRYABLE_FROM


class CudaUnavailable(TrainerError):
    """A GPU job that cannot use CUDA: exit 3, permanent (another pod on the same node pool fails the same way)."""


class TransientError(Exception):
    """An infrastructure failure that a restart can cure: exit 138."""


# Substrings of errors raised by torch.distributed / NCCL / gloo / the rendezvous when a peer is
# lost or a collective times out. Matched on the exception text because torch raises them as
# RuntimeError/DistBackendError/DistNetworkError with the detail in the message.
_TRANSIENT_TEXT = (
    "nccl",
    "timed out",
    "timeout",
    "connection reset",
    "connection refused",
    "connection closed",
    "broken pipe",
    "peer",
    "rendezvous",
    "socket",
    "gloo",
    "closed by remote",
    "watchdog",
)


def classify(exc: BaseException) -> int:
    """The exit code for an exception that ended training."""
    if isinstance(exc, CudaUnavailable):
        return NO_CUDA
    if isinstance(exc, TrainerError):
        return USAGE
    if isinstance(exc, TransientError):
        return TRANSIENT
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return TRANSIENT
    try:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.GoogleAPICallError) and exc.code in (408, 429, 500, 502, 503, 504):
            return TRANSIENT
        if isinstance(exc, gexc.RetryError):
            return TRANSIENT
    except ImportError:  # pragma: no cover - the google client is a dependency
        pass
    from trainer.gcs import requests_transient

    if requests_transient(exc):
        return TRANSIENT
    name = type(exc).__name__
    if name in (
        "DistBackendError",
        "DistNetworkError",
        "DistStoreError",
        "RendezvousError",
        "RendezvousTimeoutError",
        "RendezvousClosedError",
        "RendezvousConnectionError",
    ):
        return TRANSIENT
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        if any(t in text for t in _TRANSIENT_TEXT):
            return TRANSIENT
    return BUG
