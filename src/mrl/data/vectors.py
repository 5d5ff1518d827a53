"""A folder of embeddings in shards, with ids: what ``mrl encode`` writes and ``mrl index build --vectors`` reads.

::

    EMB/
      shards.json            the plan (model, source, texts, dim, shard size) and, once every shard is
                             there, "complete": true
      shard-00000.npy        float32 (rows, dim), written under a temporary name and renamed
      shard-00000.json       its ids and the sha256 of the .npy; renamed into place after it: a shard
                             counts as done only when both exist and agree

A killed run leaves complete shards and at most temporary files; the next run skips the former.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrl._fs import atomic_write_text, sha256, temporary_name, write_npy
from mrl.errors import MrlError

PLAN = "shards.json"
FORMAT = "mrl-embeddings"


@dataclass(frozen=True)
class ShardPlan:
    folder: Path
    model: str
    source: str
    n: int
    shard_size: int

    @property
    def count(self) -> int:
        return (self.n + self.shard_size - 1) // self.shard_size

    def rows(self, i: int) -> slice:
        return slice(i * self.shard_size, min((i + 1) * self.shard_size, self.n))

    def npy(self, i: int) -> Path:
        return self.folder / f"shard-{i:05d}.npy"

    def sidecar(self, i: int) -> Path:
        return self.folder / f"shard-{i:05d}.json"


def start(folder: Path, model: str, source: str, n: int, shard_size: int,
          fingerprints: dict[str, str] | None = None) -> ShardPlan:
    """The plan of ``folder``: written when new, checked against the arguments when resuming.

    ``fingerprints`` (``model_sha``: the model's weights, ``texts_sha``: the texts, their ids and
    kind) make a resume after the weights or the texts changed an error, not stale shards.
    """
    folder.mkdir(parents=True, exist_ok=True)
    plan = {"format": FORMAT, "model": model, "source": source, "n": n, "shard_size": shard_size, "complete": False,
            **(fingerprints or {})}
    path = folder / PLAN
    if path.exists():
        old = read_plan(folder)
        keys = ["model", "source", "n", "shard_size", *[k for k in fingerprints or {} if k in old]]
        differ = [k for k in keys if old.get(k) != plan[k]]
        if differ:
            k = differ[0]
            what = {"model_sha": "the model's weights changed", "texts_sha": "the texts or their ids changed"}.get(
                k, f"{k}={old.get(k)!r}, this run {k}={plan[k]!r}")
            raise MrlError(f"{folder}: holds shards of another run ({what}); use another --out, or delete the "
                           "folder to encode again")
    else:
        atomic_write_text(path, json.dumps(plan, indent=2) + "\n")
    return ShardPlan(folder, model, source, n, shard_size)


def read_plan(folder: Path) -> dict[str, Any]:
    try:
        plan = json.loads((folder / PLAN).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MrlError(f"{folder}: not an embeddings folder ({PLAN} not found; `mrl encode` writes one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MrlError(f"{folder / PLAN}: cannot be read ({e})") from None
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise MrlError(f"{folder / PLAN}: not an mrl embeddings plan")
    return plan


def is_done(plan: ShardPlan, i: int) -> bool:
    """Both files of shard ``i`` exist and agree (a kill between the two renames leaves it undone)."""
    if not (plan.npy(i).is_file() and plan.sidecar(i).is_file()):
        return False
    try:
        meta = json.loads(plan.sidecar(i).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return meta.get("sha256") == sha256(plan.npy(i)) and len(meta.get("ids", [])) == plan.rows(i).stop - plan.rows(
        i).start


def write_shard(plan: ShardPlan, i: int, vectors: np.ndarray, ids: list[str]) -> None:
    tmp = temporary_name(plan.npy(i))
    write_npy(tmp, np.asarray(vectors, np.float32))
    tmp.replace(plan.npy(i))
    atomic_write_text(plan.sidecar(i), json.dumps({"ids": ids, "sha256": sha256(plan.npy(i))}) + "\n")


def finish(plan: ShardPlan) -> bool:
    """Mark the folder complete when every shard is done (any rank may call it; idempotent)."""
    if not all(is_done(plan, i) for i in range(plan.count)):
        return False
    meta = read_plan(plan.folder)
    if not meta.get("complete"):
        dim = int(np.load(plan.npy(0), mmap_mode="r").shape[1]) if plan.count else 0
        atomic_write_text(plan.folder / PLAN, json.dumps({**meta, "complete": True, "dim": dim}, indent=2) + "\n")
    return True


def load_folder(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors (n, D) float32, ids)`` of a complete embeddings folder; shards are checked."""
    folder = Path(folder)
    meta = read_plan(folder)
    plan = ShardPlan(folder, meta["model"], meta["source"], meta["n"], meta["shard_size"])
    if not meta.get("complete"):
        missing = [i for i in range(plan.count) if not is_done(plan, i)]
        raise MrlError(f"{folder}: {len(missing)} of {plan.count} shards are not written yet (e.g. "
                       f"{plan.npy(missing[0]).name}); run the same `mrl encode` again to finish")
    parts, ids = [], []
    for i in range(plan.count):
        if not is_done(plan, i):
            raise MrlError(f"{plan.npy(i)}: missing, truncated or altered (its checksum does not match "
                           f"{plan.sidecar(i).name}); run the same `mrl encode` again")
        parts.append(np.load(plan.npy(i)))
        ids += json.loads(plan.sidecar(i).read_text(encoding="utf-8"))["ids"]
    return np.concatenate(parts) if parts else np.zeros((0, meta.get("dim", 0)), np.float32), np.array(ids, dtype=str)
