"""Atomic training checkpoints: a SIGKILL at any moment leaves the last complete one readable."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl._fs import fsync_dir

_NAME = re.compile(r"^step-(\d+)\.pt$")
_KEYS = {"step", "model", "optimizer", "scheduler", "rng", "history", "elapsed", "config"}


def checkpoint_dir(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``checkpoints/step-N.pt`` via a temporary file, fsync and rename; prune old ones."""
    folder = checkpoint_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:07d}.pt"
    tmp = folder / f".step-{step:07d}.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(folder)
    for old in list_checkpoints(output)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files from a killed write are ignored)."""
    folder = checkpoint_dir(output)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest(output: str | Path, say: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The newest checkpoint that loads, or ``None`` when there is none.

    A damaged newest checkpoint (truncated, overwritten, unreadable) is skipped, saying so through
    ``say``, and the one before it is used; it is left in place for inspection.
    """
    for path in reversed(list_checkpoints(output)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or not _KEYS <= state.keys():
                raise ValueError("not a training checkpoint of mrl (keys missing)")
            return state
        except Exception as e:  # torch.load raises many kinds (RuntimeError, EOFError, UnpicklingError ...)
            if say is not None:
                say(f"--resume: {path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                    "trying the one before it")
    return None


def remove_checkpoints(output: str | Path) -> None:
    """Drop the checkpoints folder of a finished run (what ``--keep-checkpoints`` keeps)."""
    folder = checkpoint_dir(output)
    for p in list_checkpoints(output) + list(folder.glob(".step-*.pt.tmp")):
        p.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
