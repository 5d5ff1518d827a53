"""``mrl index ...`` and ``mrl search``: build, change, tune and query a funnel index."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape

from mrl.cli.common import console, err_console, handle_errors, parse_ints, print_json, results_table
from mrl.errors import MrlError

app = typer.Typer(help="Build, change, tune and inspect a persistent Matryoshka funnel index.",
                  no_args_is_help=True)

IndexArg = Annotated[str, typer.Argument(
    help="Index folder, or qdrant-edge://PATH, qdrant://HOST:PORT/COLLECTION (key: $MRL_QDRANT_API_KEY).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model folder or 'minilm' (encodes texts).",
                                              envvar="MRL_MODEL")]
DataOpt = Annotated[Path | None, typer.Option(help="BEIR folder whose corpus.jsonl[.gz] is encoded.")]
VectorsOpt = Annotated[Path | None, typer.Option(
    help="Precomputed vectors: .npy of shape (n, D), or a folder of shards from `mrl encode` (with its ids).")]
IdsOpt = Annotated[Path | None, typer.Option(help="Ids, one per line (.txt) or .npy; default 0..n-1.")]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (messages go to stderr).")]
AdaptorOpt = Annotated[Path | None, typer.Option(
    help="Adaptor folder (mrl adapt fit): store adapted vectors and adapt every query and addition.")]


def _load_adaptor(path: Path | None) -> Any:
    if path is None:
        return None
    from mrl.adapt import Adaptor

    return Adaptor.load(path)


def load_vectors(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MrlError(f"{path}: no such file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise MrlError(f"{path}: not a .npy array ({e})") from None


def load_ids(path: Path) -> np.ndarray:
    """Ids from a text file (one per line; all-integer files give int ids) or a .npy array."""
    if not path.is_file():
        raise MrlError(f"{path}: no such file")
    if path.suffix == ".npy":
        return np.asarray(load_vectors(path))
    from mrl.data.io import read_lines

    lines = read_lines(path)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise MrlError(f"{path}:{i}: empty id")
    values = [line.strip() for line in lines]
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        return np.array(values, dtype=str)
    too_big = [i for i, v in enumerate(numbers, 1) if not -(2**63) <= v < 2**63]
    if too_big:
        raise MrlError(f"{path}:{too_big[0]}: id {values[too_big[0] - 1]} does not fit in 64 bits")
    return np.array(numbers, dtype=np.int64)


def _encode_corpus(model: str, data: Path, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from mrl.data.beir import load_corpus
    from mrl.encoders.model import encode, load_model

    corpus = load_corpus(data)
    st_model = load_model(model)
    console.print(f"encoding {len(corpus)} documents from {data} with {model}")
    xb = encode(st_model, list(corpus.values()), batch_size, show_progress=True)
    return xb, np.array(list(corpus), dtype=str)


def _inputs(model: str | None, data: Path | None, vectors: Path | None, ids: Path | None,
            batch_size: int) -> tuple[np.ndarray, Any]:
    if (vectors is None) == (data is None):
        raise MrlError("give either --vectors X.npy [--ids ids.txt] or --model PATH --data BEIR_DIR")
    if data is not None:
        if model is None:
            raise MrlError("--data needs --model to encode the corpus")
        if ids is not None:
            raise MrlError("--ids goes with --vectors; with --data the corpus ids are used")
        return _encode_corpus(model, data, batch_size)
    assert vectors is not None
    if vectors.is_dir():  # a folder of shards from `mrl encode`: its ids come with it
        from mrl.data.vectors import load_folder

        if ids is not None:
            raise MrlError(f"--ids: {vectors} is an embeddings folder and carries its own ids")
        return load_folder(vectors)
    return load_vectors(vectors), (load_ids(ids) if ids is not None else None)


@app.command("build")
@handle_errors
def build_command(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Index folder to create (mrl, qdrant-edge).")] = None,
    model: ModelOpt = None,
    data: DataOpt = None,
    vectors: VectorsOpt = None,
    ids: IdsOpt = None,
    first_stage: Annotated[list[str] | None, typer.Option(
        help="First-stage structure KIND@DIM (exact, int8, binary, hnsw, ivf8, ivfpq, rabitq) or auto; repeatable. "
             "Default auto: int8@64 up to 200,000 vectors, above an ivf8 inverted file over the longest prefix "
             "(64/128/256) that fits --ram-budget.")] = None,
    ram_budget: Annotated[str | None, typer.Option(
        help="auto first stages: RAM for the first-stage structures, e.g. 2GB or 512MiB (default: a quarter of "
             "the machine's memory, at most 256 B per vector).")] = None,
    cascade: Annotated[str | None, typer.Option(help="Default cascade, e.g. int8@64:1000,384:10.")] = None,
    dtype: Annotated[str, typer.Option(help="Storage of the full vectors: float16 or float32.")] = "float16",
    hnsw_m: Annotated[int, typer.Option(help="HNSW graph degree M.")] = 16,
    ef_construction: Annotated[int, typer.Option(help="HNSW efConstruction.")] = 80,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index (atomically).")] = False,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.", min=1)] = 64,
    adaptor: AdaptorOpt = None,
    backend: Annotated[str, typer.Option(
        help="mrl (faiss first stages over memory-mapped vectors), qdrant-edge (the Qdrant engine in-process) or "
             "qdrant (a Qdrant server or cluster, --url); the qdrant ones need pip install 'mrl[qdrant]'.")] = "mrl",
    rescore_dims: Annotated[str | None, typer.Option(
        help="qdrant: prefixes later stages rescore on (default: 2x each first stage's dim, and all).")] = None,
    url: Annotated[str | None, typer.Option(help="qdrant: the server, e.g. http://localhost:6333.")] = None,
    collection: Annotated[str | None, typer.Option(help="qdrant: the collection to create.")] = None,
    api_key: Annotated[str | None, typer.Option(help="qdrant: the server's API key.",
                                                envvar="MRL_QDRANT_API_KEY")] = None,
    shards: Annotated[int | None, typer.Option(help="qdrant: shards of the collection.", min=1)] = None,
    replicas: Annotated[int | None, typer.Option(help="qdrant: replicas of each shard.", min=1)] = None,
) -> None:
    """Build an index from a BEIR corpus (encoded with --model) or from precomputed vectors."""
    from mrl.index import build_index
    from mrl.index.first_stages.auto import parse_size, resolve_first_stages

    budget = parse_size(ram_budget) if ram_budget is not None else None
    if backend != "mrl" and (budget is not None or "auto" in (first_stage or [])):
        raise MrlError(f"--first-stage auto and --ram-budget apply to --backend mrl; name the {backend} first "
                       "stages (exact, int8, binary, hnsw)")
    target = _build_target(backend, out, url, collection)  # every option checked before any encoding
    fitted = _load_adaptor(adaptor)
    xb, id_values = _inputs(model, data, vectors, ids, batch_size)
    stages = first_stage
    if xb.ndim == 2:  # (the build names any other shape as an error)
        if backend == "mrl":
            stages = resolve_first_stages(first_stage, xb.shape[0], xb.shape[1], budget)
        err_console.print(f"building {out}: {xb.shape[0]} vectors, first stage(s) {', '.join(stages or ['default'])}")
    clock = [time.perf_counter()]

    def built(spec: Any) -> None:
        now = time.perf_counter()
        err_console.print(f"  built first stage {spec} in {now - clock[0]:.1f} s")
        clock[0] = now

    common = {"model": _model_record(model), "default_cascade": cascade, "hnsw_m": hnsw_m,
              "ef_construction": ef_construction, "overwrite": overwrite}
    if backend != "mrl":
        if fitted is not None:
            raise MrlError(f"--adaptor: the {backend} backend does not support adaptors yet (use --backend mrl)")
        options = {"api_key": api_key, "shards": shards, "replicas": replicas, "first_stages": first_stage,
                   "rescore_dims": parse_ints(rescore_dims, "--rescore-dims")}
    else:
        options = {"dtype": dtype, "first_stages": stages, "progress": built, "adaptor": fitted}
    index = build_index(backend, target, xb, id_values, **common, **options)
    console.print(f"wrote {target}: {index.count} vectors of dim {index.dim} ({backend}), "
                  f"cascade {index.default_cascade}; run `mrl index tune {target}` to pick a faster one")


def _build_target(backend: str, out: Path | None, url: str | None, collection: str | None) -> str:
    """Where a build writes, as the URI the other commands take; the extra's install hint comes now."""
    from mrl.index.backends import BACKENDS

    if backend not in BACKENDS:
        raise MrlError(f"--backend {backend!r}: expected {', '.join(BACKENDS)}")
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
    if url or collection:
        raise MrlError("--url and --collection go with --backend qdrant")
    if backend == "qdrant-edge":
        from mrl.index.qdrant import require_edge

        require_edge()
        return f"qdrant-edge://{out}"
    return str(out)


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
) -> None:
    """Upsert vectors: new ids are added, existing ids replaced."""
    from mrl.index import open_index

    index = open_index(index_path)
    xb, id_values = _inputs(model or (index.model if data else None), data, vectors, ids, batch_size)
    if id_values is None:
        raise MrlError("--ids is required when adding vectors (which ids do they get or replace?)")
    before = index.count
    index = index.add(xb, id_values)
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

    values = list(id_list or []) + ([str(v) for v in load_ids(ids)] if ids else [])
    index = open_index(index_path)
    if index.stats()["id_kind"] == "int":
        try:
            parsed: list[Any] = [int(v) for v in values]
        except ValueError:
            bad = next(v for v in values if not v.lstrip("-").isdigit())
            raise MrlError(f"{index_path} uses integer ids; {bad!r} is not one") from None
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
    from mrl.index.backends import is_local_folder, open_index
    from mrl.index.storage import verify_folder

    qdrant = not is_local_folder(index_path)  # a folder is verified from its checksums, without opening it
    problems = open_index(index_path).verify() if qdrant else verify_folder(Path(index_path))
    if problems:
        for p in problems:
            console.print(f"[bold red]damaged:[/] {escape(p)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(escape(f"{index_path}: the index opens and counts (Qdrant checks its own WAL and segments; mrl "
                         "keeps no checksums of them)" if qdrant else f"{index_path}: all checksums match"))


@app.command("tune")
@handle_errors
def tune_command(
    index_path: IndexArg,
    k: Annotated[int, typer.Option(help="Results per query.", min=1)] = 10,
    target_recall: Annotated[float, typer.Option(help="Recall@k vs exact full-dim search to reach.")] = 0.99,
    queries: Annotated[Path | None, typer.Option(help="Sample queries .npy (default: noisy corpus vectors).")] = None,
    n_queries: Annotated[int, typer.Option(help="Sampled queries when --queries is not given.", min=2)] = 200,
    noise: Annotated[float, typer.Option(help="Relative noise added to sampled corpus vectors.")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="Report folder (default IDX/tune).")] = None,
    max_bytes_per_vector: Annotated[float | None, typer.Option(
        help="Only first stages keeping at most this many bytes per vector in RAM.")] = None,
    confidence: Annotated[float, typer.Option(
        help="Require the lower bound of this one-sided confidence interval of the sample recall to "
             "meet the target (0.5: the sample mean), so the pick holds on new queries.")] = 0.9,
    dry_run: Annotated[bool, typer.Option(help="Report only; keep the current default cascade.")] = False,
    adaptive: Annotated[bool, typer.Option(
        help="Also fit a per-query gate on the chosen cascade (its first shortlist doubled, up to 8x if needed) "
             "and store the gated cascade CASCADE@gate: easy queries rescore less. Needs at least 200 tuning "
             "queries.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure candidate cascades, store the cheapest that meets the target as the default."""
    from mrl.index import open_index
    from mrl.index.tuning.adaptive import MIN_TUNING_QUERIES
    from mrl.index.tuning.report import write_report
    from mrl.index.tuning.tune import tune, tuning_queries, tuning_record

    index = open_index(index_path)
    xq = np.asarray(load_vectors(queries), dtype=np.float32) if queries else None
    say = err_console if as_json else console
    n_tuning = len(xq) if xq is not None else min(n_queries, index.count)
    if adaptive and n_tuning < MIN_TUNING_QUERIES:  # named before minutes of measuring
        raise MrlError(f"--adaptive needs at least {MIN_TUNING_QUERIES} tuning queries to fit and calibrate the "
                       f"gate (half each), got {n_tuning}; pass more --queries or --n-queries {MIN_TUNING_QUERIES}")
    outcomes: dict[str, dict[str, Any]] = {}
    best, rows = tune(index, k, target_recall, xq, n_queries, noise, max_bytes_per_vector=max_bytes_per_vector,
                      confidence=confidence, progress=True, outcomes=outcomes)
    report_dir = out or (Path(index_path) / "tune" if Path(index_path).is_dir() else Path("tune-report"))
    write_report(rows, best, target_recall, k, report_dir, outcomes)
    table = [[r.cascade, f"{r.recall:.4f}", f"{r.recall_low:.4f}", f"{r.p50_ms:.3f}", f"{r.batch_ms_per_query:.4f}",
              f"{r.first_stage_bytes_per_vector:g}"] for r in sorted(rows, key=lambda r: r.p50_ms)]
    if as_json:
        print_json(json.loads((report_dir / "tune.json").read_text()) | {"stored": best is not None and not dry_run})
    else:
        console.print(results_table(f"cascades (recall@{k} vs exact full-dim; low: {confidence:g} lower bound)",
                                    ["cascade", "recall", "low", "p50 ms", "batch ms/q", "B/vec"], table))
    say.print(f"wrote {report_dir}/tune.md, tune.json, tune.png")
    from mrl.index.tuning.report import describe_outcomes

    for line in describe_outcomes(outcomes):
        say.print(f"  {escape(line)}")
    if best is None:
        raise MrlError(f"no candidate cascade reached recall@{k} {target_recall}; the best was "
                       f"{max(r.recall for r in rows):.4f} (lower bound {max(r.recall_low for r in rows):.4f}; "
                       "every first stage was widened until the target or the budget ruled it out, see above; "
                       "add a first stage on a longer prefix, or give more --queries)")
    source = str(queries) if queries else f"{n_queries} corpus vectors + noise {noise}"
    record = tuning_record(best, k, target_recall, n_tuning, source)
    chosen, gate = best.cascade, None
    if adaptive:  # fitted before anything is stored: a failure keeps the old default
        from mrl.index.tuning.adaptive import tune_adaptive

        result = tune_adaptive(index, best.cascade, tuning_queries(index, xq, n_queries, noise), k, target_recall,
                               confidence)
        chosen, gate, record = str(result.cascade), result.gate, record | result.record()
        c = result.gate.calibration
        what = "lists scanned" if result.gate.axis == "width" else "shortlist rescored"
        say.print(f"gate on {result.gate.cascade}: calibration recall {c['recall']:.4f} (lower bound "
                  f"{c['recall_low']:.4f}), mean {what} {c['mean_level']:.0f} of {result.gate.levels[-1]}; "
                  f"p50 {result.gated_p50_ms:.3f} ms against {result.fixed_p50_ms:.3f} ms "
                  f"fixed ({result.fixed})")
    if not dry_run:
        index.set_default_cascade(chosen, record, **({"gate": gate} if gate is not None else {}))
    say.print(f"chosen: [bold]{chosen}[/] recall {best.recall:.4f}, p50 {best.p50_ms:.3f} ms"
              + (" (dry run: not stored)" if dry_run else " (stored as the index default)"))


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
) -> None:
    """Search an index with text (encoded by the index's model) or query vectors."""
    from mrl.index import open_index

    index = open_index(index_path)
    index.check_adaptor(_load_adaptor(adaptor))
    if bool(text) == (vectors is not None):
        raise MrlError("give text queries or --vectors Q.npy (one of them)")
    if text:
        from mrl.encoders.model import encode, load_model

        name = model or index.model
        if name is None:
            raise MrlError(f"{index_path} records no model (built from vectors); pass --model to encode text")
        xq = encode(load_model(name), text)
    else:
        assert vectors is not None
        xq = np.asarray(load_vectors(vectors), dtype=np.float32)
    from mrl.index.work import Work

    work = Work() if stats is not None else None
    scores, ids = index.search(xq, k, cascade, work=work)
    if work is not None:
        assert stats is not None
        stats.parent.mkdir(parents=True, exist_ok=True)
        stats.write_text(json.dumps({"cascade": str(index.plan(cascade, k)), **work.to_dict()}, indent=2) + "\n")
        summary = work.to_dict(per_query=False)
        err_console.print(f"work per query: {summary['mean_candidates_rescored']:.1f} candidates rescored, "
                          f"{summary['mean_bytes_read'] / 1e3:.1f} kB read; wrote {stats}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = {}
        if index.stats()["id_kind"] == "str":
            extra["keys"] = np.array([[key or "" for key in row] for row in index.keys(ids)], dtype=str)
        np.savez(out, ids=ids, scores=scores, **extra)
        console.print(f"wrote {out}: ids and scores of shape {ids.shape}")
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
