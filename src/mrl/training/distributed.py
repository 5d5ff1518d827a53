"""Data-parallel training under ``torchrun``: gloo on CPU, NCCL on GPUs.

Every rank holds the whole model and draws the same global batch from the seed; it encodes its
contiguous share, the embeddings of all ranks are gathered *with gradients*
(``torch.distributed.nn.all_gather``), and every rank computes the loss over the global batch, so
the in-batch negatives are those of the global batch. The gradient reaching rank ``r``'s share is
``world`` times the single-process one (each rank's identical loss sends it back); averaging the
parameter gradients over ranks therefore gives exactly the single-process gradient of the global
batch, and the identical optimiser steps keep the replicas equal. Rank 0 writes logs,
checkpoints and the model; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import torch

from mrl.errors import MrlError


class Distributed:
    """This process's place in the run (``world == 1``: a plain single-process run, no calls made)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def from_env(cls) -> Distributed:
        """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1)."""
        try:
            world = int(os.environ.get("WORLD_SIZE", 1))
            rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
        except ValueError:
            raise MrlError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend)
        return cls(rank, world, local)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | None) -> str | None:
        """Under torchrun with GPUs, rank ``r`` uses ``cuda:LOCAL_RANK`` unless told otherwise."""
        if requested is None and self.enabled and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    def share(self, idx: list[int]) -> list[int]:
        """This rank's contiguous share of a global batch (its order is the global order)."""
        if len(idx) % self.world:
            raise MrlError(f"--batch-size {len(idx)} does not split over {self.world} processes; "
                           f"use a multiple of {self.world}")
        per = len(idx) // self.world
        return idx[self.rank * per : (self.rank + 1) * per]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x`` concatenated in rank order, differentiable (gradients flow back to each share)."""
        if not self.enabled:
            return x
        import warnings

        from torch.distributed.nn.functional import all_gather  # the public differentiable all-gather

        with warnings.catch_warnings():  # torch 2.13 marks it deprecated for a private successor
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(all_gather(x), dim=0)

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def check_same(self, what: str, value: Any) -> None:
        """Stop every rank with a clear error when they do not agree on ``value`` (data, config ...)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
        seen: list[Any] = [None] * self.world
        dist.all_gather_object(seen, digest)
        if len(set(seen)) > 1:
            differ = [r for r, d in enumerate(seen) if d != seen[0]]
            raise MrlError(f"data-parallel run: rank {differ[0]} has other {what} than rank 0 "
                           f"({', '.join(f'rank {r}: {d}' for r, d in enumerate(seen))}); start every rank "
                           "with the same command and data")

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
