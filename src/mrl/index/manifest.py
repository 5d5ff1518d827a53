"""The manifest of an mrl index, typed: parsed and checked in one place, written back the same way.

``manifest.json`` is the commit point of an index (:mod:`mrl.index.storage`). Here it becomes a
frozen :class:`Manifest` with one :class:`SegmentEntry` per segment: every field is checked by
name when it is read (a damaged or hand-edited manifest is refused, naming the field), and a
change is a new manifest (:meth:`Manifest.next`), never an edit. Version 1 manifests (without a
checksum of their own) and version 2 ones are read; version 2 is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mrl.errors import MrlError
from mrl.index.first_stages.kinds import EF_CONSTRUCTION, HNSW_M, FirstStageSpec, parse_first_stage

FORMAT = "mrl-index"
VERSION = 2  # 2: the manifest carries a checksum of its own content
READS = (1, 2)
ID_KINDS = ("int", "str")
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class SegmentEntry:
    """One committed segment: its folder name, rows, file checksums and current tombstone file."""

    name: str
    count: int
    files: Mapping[str, str]  # file name -> sha256
    dead: str | None = None  # "dead/<name>.<generation>.npy", or None: no row deleted
    dead_sha256: str | None = None
    dead_count: int = 0

    @classmethod
    def parse(cls, d: Any, i: int) -> SegmentEntry:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("files"), dict):
            raise MrlError(f"segment {i} is not an entry with a name and files")
        if not isinstance(d.get("dead_count"), int):
            raise MrlError(f"segment {d['name']}: dead_count is missing")
        if not isinstance(d.get("count"), int) or d["count"] < 0:
            raise MrlError(f"segment {d['name']}: count is missing or negative")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in d["files"].items()):
            raise MrlError(f"segment {d['name']}: files must map names to checksums")
        if d.get("dead") is not None and not (isinstance(d["dead"], str) and isinstance(d.get("dead_sha256"), str)):
            raise MrlError(f"segment {d['name']}: dead must name a tombstone file with its checksum")
        return cls(d["name"], d["count"], dict(d["files"]), d.get("dead"), d.get("dead_sha256"), d["dead_count"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "files": dict(self.files), "dead": self.dead,
                "dead_sha256": self.dead_sha256, "dead_count": self.dead_count}


# field name -> (type, required): what every manifest must hold, checked by name on reading
_REQUIRED = {"generation": int, "dim": int, "count": int, "dtype": str, "default_cascade": str}


@dataclass(frozen=True)
class Manifest:
    """A committed state of an index. ``adaptor`` and ``gate`` are the entries
    :mod:`mrl.index.storage` wrote for them (paths and checksums); ``tuning`` the tune record."""

    generation: int
    dim: int
    count: int  # live vectors
    dtype: str
    default_cascade: str
    segments: tuple[SegmentEntry, ...]
    first_stages: tuple[str, ...] = ()
    model: str | None = None
    metric: str = "cosine"
    id_kind: str = "int"
    next_id: int = 0
    hnsw_m: int = HNSW_M
    ef_construction: int = EF_CONSTRUCTION
    created: float = 0.0
    adaptor: Mapping[str, Any] | None = None
    gate: Mapping[str, Any] | None = None
    tuning: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this mrl does not know, kept as they were

    @property
    def specs(self) -> list[FirstStageSpec]:
        return [parse_first_stage(s) for s in self.first_stages]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Manifest:
        """A manifest from its JSON object; :class:`MrlError` names the first bad field."""
        for key, kind in _REQUIRED.items():
            if not isinstance(d.get(key), kind) or isinstance(d.get(key), bool):
                raise MrlError(f"the key {key!r} is missing or not {kind.__name__}")
        if not isinstance(d.get("segments"), list):
            raise MrlError("the key 'segments' is missing or not list")
        segments = tuple(SegmentEntry.parse(s, i) for i, s in enumerate(d["segments"]))
        if d["dtype"] not in DTYPES:
            raise MrlError(f"dtype {d['dtype']!r}: expected one of {', '.join(DTYPES)}")
        if d.get("id_kind", "int") not in ID_KINDS:
            raise MrlError(f"id_kind {d.get('id_kind')!r}: expected one of {', '.join(ID_KINDS)}")
        stages = d.get("first_stages", [])
        if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
            raise MrlError("the key 'first_stages' is not a list of KIND@DIM")
        for s in stages:
            parse_first_stage(s, d["dim"])
        for key in ("adaptor", "gate", "tuning"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                raise MrlError(f"the key {key!r} is not an object")
        known = {f.name for f in fields(cls)} - {"extra", "segments", "first_stages"}
        values = {k: d[k] for k in known if k in d}
        extra = {k: v for k, v in d.items() if k not in known | {"segments", "first_stages", "format", "version",
                                                                  "checksum"}}
        return cls(**values, segments=segments, first_stages=tuple(stages), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (``format``/``version``/``checksum`` are stamped by :func:`stamped`)."""
        out: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "generation": self.generation, "model": self.model,
            "dim": self.dim, "dtype": self.dtype, "metric": self.metric, "count": self.count,
            "id_kind": self.id_kind, "next_id": self.next_id, "first_stages": list(self.first_stages),
            "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
            "default_cascade": self.default_cascade, "created": self.created,
            "segments": [s.to_dict() for s in self.segments], "adaptor": _plain(self.adaptor),
        }
        for key in ("gate", "tuning"):  # written only once set, as before
            if getattr(self, key) is not None:
                out[key] = _plain(getattr(self, key))
        return {**dict(self.extra), **out}

    def next(self, **changes: Any) -> Manifest:
        """The manifest of the next commit: ``changes`` applied, the generation one higher."""
        return replace(self, generation=self.generation + 1, **changes)

    def with_segment(self, i: int, entry: SegmentEntry) -> Manifest:
        """This manifest with segment ``i`` replaced (same generation: a step of building the next one)."""
        return replace(self, segments=(*self.segments[:i], entry, *self.segments[i + 1 :]))


def checksum(d: Mapping[str, Any]) -> str:
    """sha256 of a manifest object's content (every key but ``checksum``), independent of formatting."""
    body = {k: v for k, v in d.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamped(manifest: Manifest) -> dict[str, Any]:
    """The object to write: version 2, with the checksum of its own content."""
    out = manifest.to_dict()
    out["version"] = VERSION
    out["checksum"] = checksum(out)
    return out


def check_header(d: Any, where: str) -> list[str]:
    """Problems of the format, version and checksum of a manifest object (the first are fatal)."""
    if not isinstance(d, dict):
        return [f"{where}: not an mrl index manifest (a JSON {type(d).__name__}, not an object)"]
    if d.get("format") != FORMAT:
        return [f"{where}: not an mrl index manifest (format={d.get('format')!r})"]
    if d.get("version") not in READS:
        return [f"{where}: index format version {d.get('version')} is not supported "
                f"(this mrl reads versions {', '.join(map(str, READS))})"]
    if d["version"] >= 2 and d.get("checksum") != checksum(d):
        return [f"{where}: checksum mismatch: the manifest was edited or damaged after it was committed"]
    return []


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if value is not None else None
