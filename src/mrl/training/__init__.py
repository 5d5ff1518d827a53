"""The Matryoshka training run: config, batches, checkpoints, loop."""

from __future__ import annotations

from mrl.training.config import TrainConfig

__all__ = ["TrainConfig"]
