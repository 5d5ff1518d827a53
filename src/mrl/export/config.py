"""What ``mrl export`` is asked to do, checked before any work; the prefixes it checks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mrl.encoders.onnx_runtime import RECORD
from mrl.errors import MrlError
from mrl.prefix import check_dim, default_dims

QUANTIZE = ("none", "int8")


@dataclass(frozen=True)
class ExportConfig:
    """What ``mrl export`` does.

    Attributes:
        model: a model folder, ``minilm`` or a cached hub name.
        out: the folder to write (must not exist, or be empty).
        quantize: ``none`` (fp32 only) or ``int8`` (fp32 and int8).
        calibrate: a BEIR folder: per-prefix nDCG@10 of every runtime against PyTorch, with the guard
            below; with int8, the :data:`CANDIDATES` compete and the best is kept.
        split: the qrels split of ``calibrate`` to score.
        accept_loss: export even when a runtime loses more than ``max_loss`` nDCG@10 at a prefix.
        max_loss: the guard's tolerance.
        dims: prefixes to check (default: the model's trained dims from its ``mrl.json``, else 32, 64 ... full).
        max_queries, max_docs: subsample the calibration set (0: all).
    """

    model: str
    out: Path
    quantize: str = "none"
    calibrate: Path | None = None
    split: str = "dev"
    accept_loss: bool = False
    max_loss: float = 0.005
    dims: tuple[int, ...] | None = None
    max_queries: int = 0
    max_docs: int = 0
    batch_size: int = 32

    def check(self) -> None:
        if self.quantize not in QUANTIZE:
            raise MrlError(f"--quantize {self.quantize!r}: expected one of {', '.join(QUANTIZE)}")
        if self.accept_loss and self.calibrate is None:
            raise MrlError("--accept-loss only applies with --calibrate BEIR_DIR (the guard needs a calibration set)")
        if not 0 <= self.max_loss < 1:
            raise MrlError(f"max_loss must be in [0, 1), got {self.max_loss}")
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise MrlError(f"--out {out} already exists; choose a new folder (export never overwrites)")


def resolve_dims(model_folder: str, full: int, dims: Sequence[int] | None) -> list[int]:
    """Prefixes to check: ``dims``, else the trained ``matryoshka_dims`` in the folder's ``mrl.json``,
    else 32, 64 ... below ``full``; ``full`` always included."""
    if dims is None:
        path = Path(model_folder) / RECORD
        meta = json.loads(path.read_text()) if path.is_file() else {}
        dims = meta.get("matryoshka_dims") or default_dims(full)
    for d in dims:
        check_dim(d, full, "--dims: dim")
    return sorted(set(dims) | {full})
