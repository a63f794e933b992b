"""The default model and the hooks through which users plug in their own.

Model hook (``--model=module:function``)::

    def my_model(input_dim: int, num_classes: int, args: argparse.Namespace) -> torch.nn.Module

Batch hook (``--batch-fn=module:function``), turning one batch of a data set's arrays (a dict of
numpy arrays named as in its manifest, plus ``id``) into the model's input and the targets::

    def my_batch(batch: dict[str, numpy.ndarray]) -> tuple[torch.Tensor, torch.Tensor]

Data sets themselves come from ``DATA_URI`` in the shard format (``python -m trainer.data write
--source=module:function`` writes one from any ``fn(seed) -> (dict of arrays, num_classes)``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    """A small classifier: Linear → ReLU → Dropout, twice, then Linear."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(input_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def default_model(input_dim: int, num_classes: int, args: argparse.Namespace) -> nn.Module:
    return MLP(input_dim, num_classes, hidden=getattr(args, "hidden", 128), dropout=getattr(args, "dropout", 0.1))


def default_batch(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(batch["x"], dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(batch["y"], dtype=np.int64))
    return x, y
