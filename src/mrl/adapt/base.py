"""A fitted Matryoshka adaptor: load, apply, save. numpy only, so the index and the service can use it.

An adaptor maps frozen full-dimension embeddings ``x`` (any model or API) to new vectors whose
prefixes are each a good embedding. Kinds:

- ``pca``: ``(x - mean) @ R`` with ``R`` the corpus's principal axes (the baseline);
- ``orthogonal``: ``x @ R`` with ``R`` a rotation, so every full-dimension inner product is
  unchanged and only the order of information over the coordinates moves;
- ``mlp``: ``z + relu(z @ W1 + b1) @ W2 + b2`` with ``z = x @ R`` (a residual MLP as in
  Matryoshka-Adaptor, Yoon et al. 2024, after a rotation).

Input rows are L2-normalised first (the cosine convention of the index and of eval). An adaptor
folder holds ``adaptor.json`` (format, kind, dims, training summary, held-out scores and the
checksum of the weights) and ``weights.npz``; it loads without the data it was fitted on.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrl import vectors
from mrl._fs import atomic_write_bytes, atomic_write_text, sha256
from mrl.errors import MrlError
from mrl.prefix import check_dim, unit_rows

FORMAT = "mrl-adaptor"
VERSION = 1
KINDS = ("pca", "orthogonal", "mlp")
CONFIG = "adaptor.json"
WEIGHTS = "weights.npz"
BLOCK = 8192  # rows transformed at a time: bounded memory for memory-mapped inputs

#: The arrays each kind needs, and their shapes in terms of the input dim D and hidden width H.
_ARRAYS: dict[str, dict[str, tuple[str, ...]]] = {
    "pca": {"mean": ("D",), "rotation": ("D", "D")},
    "orthogonal": {"rotation": ("D", "D")},
    "mlp": {"rotation": ("D", "D"), "w1": ("D", "H"), "b1": ("H",), "w2": ("H", "D"), "b2": ("D",)},
}


@dataclass(frozen=True)
class Adaptor:
    """A fitted adaptor. ``transform`` maps ``(n, input_dim)`` to float32 ``(n, input_dim)``.

    Attributes:
        kind: one of :data:`KINDS`.
        input_dim: dimension of the frozen embeddings it takes.
        dims: the prefix dims it was fitted for (the ladder used by eval and the index).
        arrays: the weights, float32, named as in :data:`_ARRAYS`.
        info: what it was fitted on and how it scored (written to ``adaptor.json``).
    """

    kind: str
    input_dim: int
    dims: tuple[int, ...]
    arrays: Mapping[str, np.ndarray]
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MrlError(f"adaptor kind {self.kind!r} is unknown (choose from: {', '.join(KINDS)})")
        _check_arrays(self.kind, self.input_dim, self.arrays, "adaptor")
        if not self.dims:
            raise MrlError("adaptor dims: none given")
        for d in self.dims:
            check_dim(d, self.input_dim, f"adaptor dims {list(self.dims)}: dim")

    @property
    def output_dim(self) -> int:
        return self.input_dim

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights: two adaptors with the same fingerprint transform identically."""
        return _digest(self.arrays)

    # ------------------------------------------------------------------ apply
    def transform(self, x: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Adapt ``x`` ``(n, input_dim)`` (any float array, may be a memmap) in row blocks.

        Args:
            x: frozen embeddings; rows are L2-normalised before the map.
            out: optional ``(n, input_dim)`` float32 array (e.g. a memmap) to write into.

        Returns:
            float32 ``(n, input_dim)``; take a prefix with :func:`mrl.truncate`.

        Raises:
            MrlError: not 2-D, empty, wrong dimension, NaN/Inf or an all-zero row.
        """
        x = check_vectors(x, self.input_dim, "vectors")
        n = len(x)
        if out is None:
            out = np.empty((n, self.output_dim), np.float32)
        for start in range(0, n, BLOCK):
            block = np.asarray(x[start : start + BLOCK], dtype=np.float32)  # (b, D)
            out[start : start + len(block)] = self._apply(normalize_input(block, start))
        return out

    def _apply(self, x: np.ndarray) -> np.ndarray:
        a = self.arrays
        if self.kind == "pca":
            return ((x - a["mean"]) @ a["rotation"]).astype(np.float32)
        z = x @ a["rotation"]  # (b, D)
        if self.kind == "orthogonal":
            return z.astype(np.float32)
        hidden = np.maximum(z @ a["w1"] + a["b1"], 0.0)  # (b, H)
        return (z + hidden @ a["w2"] + a["b2"]).astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path/weights.npz`` then ``path/adaptor.json`` (the commit point), each atomically."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise MrlError(f"{root}: exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        # Any: numpy's stubs would match a dict of arrays against savez's allow_pickle keyword
        weights: dict[str, Any] = {k: np.asarray(v, np.float32) for k, v in self.arrays.items()}
        np.savez(buf, **weights)
        atomic_write_bytes(root / WEIGHTS, buf.getvalue())
        config = {
            "format": FORMAT, "version": VERSION, "kind": self.kind, "input_dim": self.input_dim,
            "output_dim": self.output_dim, "dims": list(self.dims), "normalize_input": True,
            "fingerprint": self.fingerprint, "weights_sha256": sha256(root / WEIGHTS),
            "created": time.time(), **{k: v for k, v in self.info.items() if k not in _RESERVED},
        }
        atomic_write_text(root / CONFIG, json.dumps(config, indent=2) + "\n")
        return root

    @classmethod
    def load(cls, path: str | Path) -> Adaptor:
        """Read an adaptor folder, checking format, version, checksum and shapes.

        Raises:
            MrlError: missing folder or files, another format or version, damaged weights.
        """
        root = Path(path)
        cfg_path = root / CONFIG
        if not root.is_dir():
            raise MrlError(f"adaptor {root}: no such folder")
        if not cfg_path.is_file():
            raise MrlError(f"adaptor {root}: {CONFIG} not found (not an adaptor folder, or its write did not finish)")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MrlError(f"{cfg_path}: not valid JSON ({e})") from None
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            raise MrlError(f"{cfg_path}: not an mrl adaptor (format={_get(cfg, 'format')!r})")
        if cfg.get("version") != VERSION:
            raise MrlError(f"{cfg_path}: adaptor format version {cfg.get('version')!r} is not supported "
                           f"(this mrl reads version {VERSION})")
        for key in ("kind", "input_dim", "dims", "weights_sha256"):
            if key not in cfg:
                raise MrlError(f"{cfg_path}: the key {key!r} is missing")
        weights = root / WEIGHTS
        if not weights.is_file():
            raise MrlError(f"adaptor {root}: {WEIGHTS} is missing")
        if sha256(weights) != cfg["weights_sha256"]:
            raise MrlError(f"{weights}: checksum does not match {CONFIG} (truncated or altered)")
        try:
            with np.load(weights, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, KeyError) as e:
            raise MrlError(f"{weights}: cannot be read ({e})") from None
        info = {k: v for k, v in cfg.items() if k not in _RESERVED}
        dims = cfg["dims"]
        if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
            raise MrlError(f"{cfg_path}: dims must be a list of integers, got {dims!r}")
        return cls(cfg["kind"], int(cfg["input_dim"]), tuple(dims), arrays, info)

    def summary(self) -> dict[str, Any]:
        """What ``adaptor.json`` says, for manifests and ``/stats``."""
        return {"kind": self.kind, "input_dim": self.input_dim, "dims": list(self.dims),
                "fingerprint": self.fingerprint}


_RESERVED = {"format", "version", "kind", "input_dim", "output_dim", "dims", "normalize_input", "fingerprint",
             "weights_sha256", "created"}


def _get(cfg: Any, key: str) -> Any:
    return cfg.get(key) if isinstance(cfg, dict) else None


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name], dtype=np.float32)
        h.update(name.encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


def _check_arrays(kind: str, dim: int, arrays: Mapping[str, np.ndarray], where: str) -> None:
    want = _ARRAYS[kind]
    missing = sorted(set(want) - set(arrays))
    if missing:
        raise MrlError(f"{where}: the {kind} adaptor needs arrays {missing}")
    hidden = arrays["w1"].shape[1] if kind == "mlp" and np.ndim(arrays["w1"]) == 2 else 0
    sizes = {"D": dim, "H": hidden}
    for name, shape in want.items():
        expected = tuple(sizes[s] for s in shape)
        arr = arrays[name]
        if arr.shape != expected:
            raise MrlError(f"{where}: array {name!r} has shape {arr.shape}, expected {expected}")
        if not np.isfinite(arr).all():
            raise MrlError(f"{where}: array {name!r} holds NaN or Inf")


def check_vectors(x: Any, dim: int | None, what: str) -> Any:
    """An input matrix for an adaptor (see :func:`mrl.vectors.check_vectors`)."""
    return vectors.check_vectors(x, dim, what, owner="the adaptor's input")


def normalize_input(block: np.ndarray, offset: int = 0) -> np.ndarray:
    """Unit rows; NaN/Inf and all-zero rows (no direction) are errors naming the row."""
    vectors.check_rows(block, offset)
    return unit_rows(block)


def fit_pca(x: Any, dims: tuple[int, ...] | None = None) -> Adaptor:
    """The PCA baseline: principal axes of the (normalised) corpus, by variance, descending."""
    x = check_vectors(x, None, "vectors")
    d = x.shape[1]
    mean = np.zeros(d, np.float64)
    second = np.zeros((d, d), np.float64)
    for start in range(0, len(x), BLOCK):
        block = normalize_input(np.asarray(x[start : start + BLOCK], dtype=np.float32), start).astype(np.float64)
        mean += block.sum(axis=0)
        second += block.T @ block  # (D, D)
    n = len(x)
    mean /= n
    cov = (second - n * np.outer(mean, mean)) / max(n - 1, 1)
    _, eigvecs = np.linalg.eigh(cov)
    rotation = eigvecs[:, ::-1].astype(np.float32)  # (D, D), columns by variance desc
    arrays = {"mean": mean.astype(np.float32), "rotation": rotation}
    return Adaptor("pca", d, dims or (d,), arrays, {"training": {"kind": "pca", "n_vectors": n}})
