"""``mrl index ...``: build, change, tune and inspect a funnel index (``mrl search`` queries it: :mod:`.search`)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mrl.cli.common import (
    RuntimeOpt,
    ThreadsOpt,
    check_output,
    console,
    err_console,
    handle_errors,
    parse_ints,
    print_json,
)
from mrl.cli.index_inputs import (
    AdaptorOpt,
    DataOpt,
    IdsOpt,
    IndexArg,
    JsonOpt,
    ModelOpt,
    PayloadOpt,
    VectorsOpt,
    load_adaptor,
    load_ids,
    read_inputs,
    read_payloads,
)
from mrl.cli.tune import tune_command
from mrl.errors import MrlError
from mrl.index.first_stages.kinds import EF_CONSTRUCTION, HNSW_M

app = typer.Typer(help="Build, change, tune and inspect a persistent Matryoshka funnel index.",
                  no_args_is_help=True)
app.command("tune")(tune_command)


OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Index folder to create (mrl, qdrant-edge).")]
FirstStageOpt = Annotated[list[str] | None, typer.Option(
    help="First-stage structure KIND@DIM (exact, int8, binary, hnsw, ivf8, ivfpq, rabitq) or auto; repeatable. "
         "Default auto: int8@64 up to 200,000 vectors, above an ivf8 inverted file over the longest prefix "
         "(64/128/256) that fits --ram-budget.")]
RamBudgetOpt = Annotated[str | None, typer.Option(
    help="auto first stages: RAM for the first-stage structures, e.g. 2GB or 512MiB (default: a quarter of "
         "the machine's memory, at most 256 B per vector).")]
CascadeOpt = Annotated[str | None, typer.Option(help="Default cascade, e.g. int8@64:1000,384:10.")]
DtypeOpt = Annotated[str | None, typer.Option(
    help="Storage of the full vectors: float16 or float32 (default: mrl float16; postgres float32 = vector, "
         "float16 = halfvec).")]
HnswMOpt = Annotated[int, typer.Option(help="HNSW graph degree M.")]
EfOpt = Annotated[int, typer.Option(help="HNSW efConstruction.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing index (atomically).")]
BatchOpt = Annotated[int, typer.Option(help="Encoding batch size.", min=1)]
BackendOpt = Annotated[str, typer.Option(
    help="mrl (faiss first stages over memory-mapped vectors), qdrant-edge (the Qdrant engine in-process) or "
         "qdrant (a Qdrant server or cluster, --url) or postgres (a table in Postgres + pgvector, --url --table); "
         "qdrant needs pip install 'mrl[qdrant]', postgres 'mrl[postgres]'.")]
RescoreDimsOpt = Annotated[str | None, typer.Option(
    help="qdrant: prefixes later stages rescore on (default: 2x each first stage's dim, and all).")]
UrlOpt = Annotated[str | None, typer.Option(
    help="qdrant: the server, e.g. http://localhost:6333; postgres: the database, postgresql://USER@HOST:PORT/DB "
         "(password from PGPASSWORD).")]
TableOpt = Annotated[str | None, typer.Option(help="postgres: the table to create (with --attach: to index).")]
AttachOpt = Annotated[bool, typer.Option(
    help="postgres: index the existing --table in place (nothing copied; indexes created concurrently).")]
IdColumnOpt = Annotated[str | None, typer.Option(help="postgres --attach: the table's unique id column.")]
VectorColumnOpt = Annotated[str | None, typer.Option(help="postgres --attach: its vector(D) or halfvec(D) column.")]
CollectionOpt = Annotated[str | None, typer.Option(help="qdrant: the collection to create.")]
ApiKeyOpt = Annotated[str | None, typer.Option(help="qdrant: the server's API key.", envvar="MRL_QDRANT_API_KEY")]
ShardsOpt = Annotated[int | None, typer.Option(help="qdrant: shards of the collection.", min=1)]
ReplicasOpt = Annotated[int | None, typer.Option(help="qdrant: replicas of each shard.", min=1)]


@app.command("build")
@handle_errors
def build_command(
    out: OutOpt = None, model: ModelOpt = None, data: DataOpt = None, vectors: VectorsOpt = None, ids: IdsOpt = None,
    first_stage: FirstStageOpt = None, ram_budget: RamBudgetOpt = None, cascade: CascadeOpt = None,
    dtype: DtypeOpt = None, hnsw_m: HnswMOpt = HNSW_M, ef_construction: EfOpt = EF_CONSTRUCTION,
    overwrite: OverwriteOpt = False, batch_size: BatchOpt = 64, adaptor: AdaptorOpt = None,
    backend: BackendOpt = "mrl", runtime: RuntimeOpt = "auto",
    rescore_dims: RescoreDimsOpt = None, url: UrlOpt = None, collection: CollectionOpt = None,
    api_key: ApiKeyOpt = None, shards: ShardsOpt = None, replicas: ReplicasOpt = None, table: TableOpt = None,
    attach: AttachOpt = False, id_column: IdColumnOpt = None, vector_column: VectorColumnOpt = None,
    payload: PayloadOpt = None, threads: ThreadsOpt = None,
) -> None:
    """Build an index from a BEIR corpus (encoded with --model) or from precomputed vectors."""
    from mrl.index import build_index
    from mrl.index.first_stages.auto import parse_size

    budget = parse_size(ram_budget) if ram_budget is not None else None
    if backend != "mrl" and (budget is not None or "auto" in (first_stage or [])):
        raise MrlError(f"--first-stage auto and --ram-budget apply to --backend mrl; name the {backend} first "
                       "stages (exact, int8, binary, hnsw)")
    target = _build_target(backend, out, url, collection, table)  # every option checked before any encoding
    fitted = load_adaptor(adaptor)
    if backend != "mrl" and fitted is not None:
        raise MrlError(f"--adaptor: the {backend} backend does not support adaptors yet (use --backend mrl)")
    common: dict[str, Any] = {"model": _model_record(model), "default_cascade": cascade, "hnsw_m": hnsw_m,
              "ef_construction": ef_construction, "overwrite": overwrite}
    if attach or id_column or vector_column:
        if payload is not None:
            raise MrlError("--payload: an attached table keeps its own columns; mrl stores payloads only in the "
                           "tables it builds")
        _attach(backend, target, [data, vectors, ids], {**common, "first_stages": first_stage, "dtype": dtype,
                "attach": attach, "id_column": id_column, "vector_column": vector_column})
        return
    xb, id_values = read_inputs(model, data, vectors, ids, batch_size, runtime=runtime, threads=threads)
    payloads = read_payloads(payload, id_values, len(xb))
    if payloads is not None:
        common["payloads"] = payloads
    options: dict[str, Any]
    if backend == "postgres":
        options = {"first_stages": first_stage, "dtype": dtype}
    elif backend != "mrl":
        options = {"api_key": api_key, "shards": shards, "replicas": replicas, "first_stages": first_stage,
                   "rescore_dims": parse_ints(rescore_dims, "--rescore-dims")}
    else:
        options = {"dtype": dtype or "float16", "first_stages": _mrl_stages(xb, first_stage, budget),
                   "progress": _Clock(), "adaptor": fitted}
    if xb.ndim == 2:  # (the build names any other shape as an error)
        shown = options["first_stages"] or ["default"]
        err_console.print(f"building {out or target}: {xb.shape[0]} vectors, first stage(s) {', '.join(shown)}")
    index = build_index(backend, target, xb, id_values, **common, **options)
    console.print(f"wrote {target}: {index.count} vectors of dim {index.dim} ({backend}), "
                  f"cascade {index.default_cascade}; run `mrl index tune {target}` to pick a faster one")


def _attach(backend: str, target: str, inputs: list[Any], options: dict[str, Any]) -> None:
    """``--attach``: the funnel over an existing Postgres table's own vectors."""
    from mrl.index import build_index

    if backend != "postgres" or any(inputs):
        raise MrlError("--attach (--id-column, --vector-column) goes with --backend postgres, and indexes the "
                       "table's own vectors: give no --data, --vectors or --ids")
    index = build_index("postgres", target, None, None, **options)
    console.print(f"attached {target}: {index.count} vectors of dim {index.dim}, cascade {index.default_cascade}")


def _mrl_stages(xb: Any, first_stage: list[str] | None, budget: float | None) -> list[str] | None:
    """The mrl backend's first stages: ``auto`` resolved for the corpus (named as an error if it fits none)."""
    from mrl.index.first_stages.auto import resolve_first_stages

    return resolve_first_stages(first_stage, xb.shape[0], xb.shape[1], budget) if xb.ndim == 2 else first_stage


class _Clock:
    """Prints how long each first stage took to build."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, spec: Any) -> None:
        now = time.perf_counter()
        err_console.print(f"  built first stage {spec} in {now - self.last:.1f} s")
        self.last = now


def _build_target(backend: str, out: Path | None, url: str | None, collection: str | None,
                  table: str | None = None) -> str:
    """Where a build writes, as the URI the other commands take; the extra's install hint comes now."""
    from mrl.index.backends import BACKENDS

    if backend not in BACKENDS:
        raise MrlError(f"--backend {backend!r}: expected {', '.join(BACKENDS)}")
    if backend == "postgres":
        return _postgres_target(url, table, out or collection)
    if table:
        raise MrlError("--table goes with --backend postgres")
    if backend == "qdrant":
        from mrl.index.qdrant import require_client

        if not url or not collection or out is not None:
            raise MrlError("--backend qdrant takes --url URL --collection NAME (and no --out)")
        scheme, sep, host = url.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise MrlError(f"--url {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        require_client()
        return f"{'qdrants' if scheme == 'https' else 'qdrant'}://{host.rstrip('/')}/{collection}"
    if out is None:
        raise MrlError(f"--backend {backend} needs --out FOLDER")
    check_output(out, "folder", "--out")
    if url or collection:
        raise MrlError("--url and --collection go with --backend qdrant")
    if backend == "qdrant-edge":
        from mrl.index.qdrant import require_edge

        require_edge()
        return f"qdrant-edge://{out}"
    return str(out)


def _postgres_target(url: str | None, table: str | None, other: object) -> str:
    """``postgresql://...?table=NAME`` from ``--url`` and ``--table`` (the URI the other commands take)."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    from mrl.index.postgres import require

    if not url or not table or other:
        raise MrlError("--backend postgres takes --url postgresql://USER@HOST:PORT/DB --table NAME "
                       "(and no --out or --collection)")
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or "table=" in parts.query:
        raise MrlError(f"--url {url!r}: expected postgresql://USER@HOST:PORT/DB (the table goes in --table)")
    require()
    query = "&".join(q for q in (parts.query, urlencode({"table": table})) if q)
    return urlunsplit(parts._replace(query=query))


def _model_record(model: str | None) -> str | None:
    """Record a local model folder as an absolute path so the index finds it from anywhere."""
    if model is None:
        return None
    return str(Path(model).resolve()) if Path(model).exists() else model


@app.command("add")
@handle_errors
def add_command(
    index_path: IndexArg,
    model: ModelOpt = None,
    data: DataOpt = None,
    vectors: VectorsOpt = None,
    ids: IdsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.", min=1)] = 64,
    runtime: RuntimeOpt = "auto",
    payload: PayloadOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Upsert vectors: new ids are added, existing ids replaced (payload and all)."""
    from mrl.index import open_index

    index = open_index(index_path)
    xb, id_values = read_inputs(model or (index.model if data else None), data, vectors, ids, batch_size,
                                index.stats()["id_kind"], runtime, threads)
    if id_values is None:
        raise MrlError("--ids is required when adding vectors (which ids do they get or replace?)")
    payloads = read_payloads(payload, id_values, len(xb))
    before = index.count
    index = index.add(xb, id_values, payloads) if payloads is not None else index.add(xb, id_values)
    console.print(f"{index_path}: {len(xb)} vectors upserted, {before} -> {index.count} live, "
                  f"{index.stats()['segments']} segment(s)")


@app.command("delete")
@handle_errors
def delete_command(
    index_path: IndexArg,
    id_list: Annotated[list[str] | None, typer.Argument(help="Ids to delete.")] = None,
    ids: IdsOpt = None,
) -> None:
    """Delete by id; if any id is unknown nothing is deleted."""
    from mrl.index import open_index

    index = open_index(index_path)
    kind = index.stats()["id_kind"]
    values = list(id_list or []) + ([str(v) for v in load_ids(ids, kind)] if ids else [])
    if kind == "int":
        bad = [v for v in values if re.fullmatch(r"-?[0-9]+", v) is None]
        if bad:
            raise MrlError(f"{index_path} uses integer ids; {bad[0]!r} is not one")
        parsed: list[Any] = [int(v) for v in values]
    else:
        parsed = values
    before = index.count
    index = index.delete(parsed)
    console.print(f"{index_path}: deleted {len(parsed)}, {before} -> {index.count} live")


@app.command("compact")
@handle_errors
def compact_command(index_path: IndexArg) -> None:
    """Rewrite the live vectors as one segment and drop deleted rows."""
    from mrl.index import open_index

    index = open_index(index_path)
    before = index.stats()
    index = index.compact()
    console.print(f"{index_path}: {before['segments']} segment(s), {before['deleted_rows']} dead rows -> 1 segment, "
                  f"{index.count} live")


@app.command("stats")
@handle_errors
def stats_command(index_path: IndexArg, as_json: JsonOpt = False) -> None:
    """Print the manifest summary (counts, first stages and their RAM, cascade, tuning) as JSON."""
    from mrl.index import open_index

    stats = open_index(index_path).stats()
    if as_json:
        print_json(stats)
    else:
        console.print_json(json.dumps(stats))


@app.command("verify")
@handle_errors
def verify_command(index_path: IndexArg) -> None:
    """Recompute every file checksum the manifest records; report every problem (exit 1 if any)."""
    from mrl.index.backends import backend_of, open_index
    from mrl.index.storage import verify_folder

    name = backend_of(index_path)[0].name  # a folder is verified from its checksums, without opening it
    problems = verify_folder(Path(index_path)) if name == "mrl" else open_index(index_path).verify()
    if problems:
        for p in problems:
            console.print(f"[bold red]damaged:[/] {escape(p)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    done = {"mrl": "all checksums match",
            "postgres": "the table's columns, indexes and row count match mrl's description"}.get(
        name, "the index opens and counts (Qdrant checks its own WAL and segments; mrl keeps no checksums of them)")
    console.print(escape(f"{index_path}: {done}"))


