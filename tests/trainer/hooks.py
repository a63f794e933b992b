"""Model hooks the trainer tests load with --model=tests.trainer.hooks:<name>."""

from __future__ import annotations

import argparse
from typing import Any


def buggy(input_dim: int, num_classes: int, args: argparse.Namespace) -> Any:
    raise ZeroDivisionError("a bug in the user's model code")


def custom(input_dim: int, num_classes: int, args: argparse.Namespace) -> Any:
    """The default MLP, sized by the job spec's own hyperparameter ``width`` (args.custom)."""
    from trainer.model import MLP

    width = args.custom["width"]
    assert isinstance(width, int)
    print(f"custom width {width} {type(width).__name__}", flush=True)
    return MLP(input_dim, num_classes, hidden=width, dropout=0.0)
