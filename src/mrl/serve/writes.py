"""Writes over HTTP: ``POST /upsert`` and ``POST /delete``, through the index's :class:`~mrl.index.base.Writer`.

Each request is all or nothing (the backend's own commit: a new manifest, one qdrant WAL entry,
one SQL transaction), behind the API key and the size limits; the snapshot a write commits is
served from its response on, so a search after it sees the change. Where one process owns the
store (a qdrant-edge folder), the service is that writer.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends

from mrl.index.base import Writer
from mrl.index.payloads import check_payloads
from mrl.serve.deps import AliveDep, EncoderDep, SettingsDep, StateDep, require_key
from mrl.serve.errors import ApiError
from mrl.serve.schemas import DeleteRequest, UpsertRequest, WriteResponse
from mrl.serve.state import ServiceState

router = APIRouter()
_KEYED = [Depends(require_key)]


@router.post("/upsert", dependencies=_KEYED)
def upsert(req: UpsertRequest, state: StateDep, encoder: EncoderDep, settings: SettingsDep,
           alive: AliveDep) -> WriteResponse:
    """New ids are added, existing ones replaced; ``vectors`` or ``texts`` (encoded as documents)."""
    state.count("upsert")
    index = _writer(state)
    if len(req.ids) > settings.max_batch:
        raise ApiError(413, f"{len(req.ids)} ids exceed this service's limit of {settings.max_batch} per request",
                       "request_too_large")
    if (req.vectors is None) == (req.texts is None):
        raise ApiError(422, "give exactly one of 'vectors' or 'texts' with the ids")
    given = req.vectors if req.vectors is not None else req.texts
    what = "vectors" if req.vectors is not None else "texts"
    if len(given or []) != len(req.ids):
        raise ApiError(422, f"{len(req.ids)} ids for {len(given or [])} {what}: give one id per item")
    ids = _ids(req.ids, index)
    payloads = check_payloads(req.payloads, len(ids)) if req.payloads is not None else None
    if req.texts is not None:
        x = encoder.encode(req.texts, alive, "document")
    else:
        rows = req.vectors or []
        if len({len(r) for r in rows}) > 1:
            raise ApiError(400, f"vectors have different lengths ({sorted({len(r) for r in rows})})")
        x = np.asarray(rows, dtype=np.float64)  # renormalised by the index before any narrowing cast
    alive.check("writing")
    with state.write_lock:
        written = index.add(x, ids, payloads) if payloads is not None else index.add(x, ids)
        state.committed(written)
    return WriteResponse(count=written.count, generation=written.generation, changed=len(ids))


@router.post("/delete", dependencies=_KEYED)
def delete(req: DeleteRequest, state: StateDep, settings: SettingsDep) -> WriteResponse:
    """Delete by id; every id must exist (else nothing is deleted)."""
    state.count("delete")
    index = _writer(state)
    if len(req.ids) > settings.max_batch:
        raise ApiError(413, f"{len(req.ids)} ids exceed this service's limit of {settings.max_batch} per request",
                       "request_too_large")
    ids = _ids(req.ids, index)
    with state.write_lock:
        written = index.delete(ids)
        state.committed(written)
    return WriteResponse(count=written.count, generation=written.generation, changed=len(ids))


def _writer(state: ServiceState) -> Any:
    index = state.index
    if not isinstance(index, Writer):
        raise ApiError(422, f"this index ({type(index).__name__}) does not take writes")
    if state.problem is not None:  # the newest snapshot does not open: writing on an old one would lose data
        raise ApiError(409, f"the index cannot be written now: {state.problem}", "conflict")
    return index


def _ids(values: list[str | int], index: Any) -> list[Any]:
    """The request's ids in the index's id kind: integers (or ASCII-digit strings) for an int index."""
    if index.stats()["id_kind"] != "int":
        return [str(v) for v in values]
    out = []
    for v in values:
        if isinstance(v, int) or re.fullmatch(r"[0-9]+", v):
            out.append(int(v))
        else:
            raise ApiError(422, f"ids: {v!r} is not an integer id (this index uses integer ids)")
    return out
