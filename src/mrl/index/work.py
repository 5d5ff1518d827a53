"""Work accounting of a search: per query, how many candidates each stage scored and how many bytes it read.

A caller passes a :class:`Work` to ``Searcher.search(..., work=Work())``; the searcher records
each stage of each query block. ``to_dict()`` gives the figures ``mrl search --stats`` writes and
``POST /search`` returns beside ``took_ms``:

- the first stage: codes (or vectors) scanned and their bytes; exact counts for flat scans,
  faiss's distance counters for hnsw and inverted files (spread evenly over the block's queries);
- every rescoring stage: candidates rescored (valid rows only: a gated query that stopped early
  or a short list counts what it really rescored) and the bytes of their prefixes read from the
  stored vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StageWork:
    name: str  # "int8@64" for a first stage, "rescore@384" for a rescoring one
    dim: int
    first: bool
    counted: bool = True  # False: the plan's figures (a backend that does not report its work)
    candidates: list[np.ndarray] = field(default_factory=list)  # per block, (nb,)
    bytes_read: list[np.ndarray] = field(default_factory=list)

    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.candidates:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.candidates).astype(np.float64), np.concatenate(self.bytes_read).astype(np.float64)


class Work:
    """Collects what every stage of a search did, per query."""

    def __init__(self) -> None:
        self.stages: list[StageWork] = []

    def record(self, index: int, name: str, dim: int, candidates: np.ndarray, bytes_read: np.ndarray,
               counted: bool = True) -> None:
        """Stage ``index`` of the cascade scored ``candidates[i]`` items reading ``bytes_read[i]`` for query i
        of the current block (blocks arrive in query order)."""
        while len(self.stages) <= index:
            self.stages.append(StageWork(name, dim, first=len(self.stages) == 0, counted=counted))
        stage = self.stages[index]
        stage.candidates.append(np.asarray(candidates, np.float64))
        stage.bytes_read.append(np.asarray(bytes_read, np.float64))

    def per_query(self) -> tuple[np.ndarray, np.ndarray]:
        """``(candidates rescored, bytes read)`` per query, summed over the stages (the first stage's
        scanned codes count in bytes, not as rescored candidates)."""
        if not self.stages:
            return np.zeros(0), np.zeros(0)
        n = max(len(stage.totals()[0]) for stage in self.stages)
        rescored, read = np.zeros(n), np.zeros(n)
        for stage in self.stages:
            cand, b = stage.totals()
            if len(cand) != n:  # a stage that recorded nothing (a caller that ran only later stages)
                continue
            if not stage.first:
                rescored += cand
            read += b
        return rescored, read

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        rescored, read = self.per_query()
        out: dict[str, Any] = {
            "queries": int(len(rescored)),
            "mean_candidates_rescored": float(rescored.mean()) if len(rescored) else 0.0,
            "mean_bytes_read": float(read.mean()) if len(read) else 0.0,
            "per_stage": [],
        }
        for stage in self.stages:
            cand, b = stage.totals()
            out["per_stage"].append({"stage": stage.name, "dim": stage.dim, "first": stage.first,
                                     "counted": stage.counted,
                                     "mean_candidates": float(cand.mean()) if len(cand) else 0.0,
                                     "mean_bytes": float(b.mean()) if len(b) else 0.0})
        if per_query:
            out["per_query"] = [{"candidates_rescored": int(c), "bytes_read": float(b)} for c, b in zip(rescored, read)]
        return out
