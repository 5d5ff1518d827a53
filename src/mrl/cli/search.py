"""``mrl search``: query an index with text (encoded by the index's model) or vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from mrl.cli.common import (
    RuntimeOpt,
    ThreadsOpt,
    check_output,
    console,
    err_console,
    handle_errors,
    print_json,
    results_table,
)
from mrl.cli.index_inputs import IndexArg, JsonOpt, ModelOpt, encode_texts, load_adaptor, load_vectors
from mrl.errors import MrlError


@handle_errors
def search_command(
    index_path: IndexArg,
    text: Annotated[list[str] | None, typer.Argument(help="Text queries.")] = None,
    vectors: Annotated[Path | None, typer.Option(help="Query vectors .npy (n, D).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Results per query.", min=1)] = 10,
    cascade: Annotated[str | None, typer.Option(help="Override the index's default cascade.")] = None,
    model: ModelOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write ids and scores to this .npz.")] = None,
    adaptor: Annotated[Path | None, typer.Option(
        help="Check that the index applies this adaptor (it always applies its own).")] = None,
    stats: Annotated[Path | None, typer.Option(
        help="Write the work of the search to this JSON file: candidates rescored and bytes read, per query, "
             "per stage and on average.")] = None,
    as_json: JsonOpt = False,
    runtime: RuntimeOpt = "auto",
    threads: ThreadsOpt = None,
    filter: Annotated[str | None, typer.Option(
        "--filter", help='Payload filter as JSON, e.g. \'{"must": [{"key": "year", "range": {"gte": 2020}}]}\' '
                         "(must / must_not / should of match value|any or range gt|gte|lt|lte conditions).")] = None,
) -> None:
    """Search an index with text (encoded by the index's model) or query vectors."""
    from mrl.index import open_index
    from mrl.index.filters import parse_filter
    from mrl.index.work import Work

    check_output(out, "file", "--out")
    check_output(stats, "file", "--stats")
    where = parse_filter(filter, "--filter")  # refused before the index is opened or a query encoded
    index = open_index(index_path)
    index.check_adaptor(load_adaptor(adaptor))
    xq = _queries(index, index_path, text, vectors, model, runtime, threads)
    work = Work() if stats is not None else None
    scores, ids = index.search(xq, k, cascade, work=work, **({"filter": where} if where is not None else {}))
    if work is not None and stats is not None:
        _write_work(stats, work, str(index.plan(cascade, k)))
    if out:
        _write_npz(out, index, scores, ids)
        return
    keys = index.keys(ids)
    if as_json:
        print_json({"cascade": str(cascade or index.default_cascade), "k": k, "results": [
            {"query": text[qi] if text else qi,
             "hits": [{"id": key, "score": float(sc)} for key, sc in zip(keys[qi], scores[qi]) if key is not None]}
            for qi in range(len(ids))]})
        return
    for qi in range(len(ids)):
        label = text[qi] if text else f"query {qi}"
        rows = [[str(r + 1), keys[qi][r] or "-", f"{scores[qi, r]:.4f}"]
                for r in range(ids.shape[1]) if ids[qi, r] >= 0]
        console.print(results_table(label, ["rank", "id", "score"], rows))


def _queries(index: Any, index_path: str, text: list[str] | None, vectors: Path | None, model: str | None,
             runtime: str, threads: int | None) -> np.ndarray:
    """Text queries encoded by ``model`` (default: the index's), or query vectors from a .npy file."""
    if bool(text) == (vectors is not None):
        raise MrlError("give text queries or --vectors Q.npy (one of them)")
    if vectors is not None:
        return np.asarray(load_vectors(vectors), dtype=np.float32)
    name = model or index.model
    if name is None:
        raise MrlError(f"{index_path} records no model (built from vectors); pass --model to encode text")
    return encode_texts(name, text or [], "query", runtime, threads=threads)


def _write_work(path: Path, work: Any, cascade: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cascade": cascade, **work.to_dict()}, indent=2) + "\n")
    summary = work.to_dict(per_query=False)
    err_console.print(f"work per query: {summary['mean_candidates_rescored']:.1f} candidates rescored, "
                      f"{summary['mean_bytes_read'] / 1e3:.1f} kB read; wrote {path}")


def _write_npz(out: Path, index: Any, scores: np.ndarray, ids: np.ndarray) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": ids, "scores": scores}
    if index.stats()["id_kind"] == "str":
        arrays["keys"] = np.array([[key or "" for key in row] for row in index.keys(ids)], dtype=str)
    np.savez(out, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle flag
    console.print(f"wrote {out}: ids and scores of shape {ids.shape}")
