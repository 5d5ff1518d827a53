"""``mrl eval``: retrieval quality at every prefix dimension."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import console, err_console, handle_errors, parse_ints, print_json, results_table

ModelOpt = Annotated[str, typer.Option("--model", "-m", envvar="MRL_MODEL",
                                       help="Model folder, 'minilm', 'multilingual-e5-small' or a cached hub name.")]


@handle_errors
def eval_command(
    model: ModelOpt,
    data: Annotated[Path, typer.Option(help="BEIR folder: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/.")],
    split: Annotated[str, typer.Option(help="qrels split to evaluate.")] = "test",
    dims: Annotated[str | None, typer.Option(help="Comma-separated prefix dims (default: 32,64,... + full).")] = None,
    baseline: Annotated[list[str] | None, typer.Option(
        help="Also score 'pca' (rotate, then truncate) and/or 'adaptor' (needs --adaptor); comma-separated "
             "or repeated.")] = None,
    adaptor: Annotated[Path | None, typer.Option(
        help="Adaptor folder (mrl adapt fit): also score the adapted embeddings at every prefix.")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the results as JSON to this file ('-': to stdout, everything else to stderr).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the results as a Markdown table.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write an nDCG@10-vs-dimension PNG.")] = None,
    precision: Annotated[str | None, typer.Option(
        help="Also evaluate quantised prefixes: float32,int8,binary (int8 codes with per-dimension ranges, sign "
             "bits), each alone and with a float rescore of a 100-candidate shortlist; `mrl select` reads the "
             "report.")] = None,
    select: Annotated[float | None, typer.Option(
        help="Print the smallest dim keeping this fraction of the full dim's nDCG@10, e.g. 0.95.")] = None,
    xling: Annotated[Path | None, typer.Option(
        help="Also evaluate translated queries over the --data corpus, laid out as debian-xling "
             "(<lang>/queries-<split>.jsonl.gz, <lang>/qrels/<split>.tsv): one table, every language per dim.")
                     ] = None,
    langs: Annotated[str | None, typer.Option(help="Languages of --xling (default: every one found).")] = None,
    max_queries: Annotated[int, typer.Option(help="Sample at most this many queries (0: all).", min=0)] = 0,
    max_docs: Annotated[int, typer.Option(help="Judged docs plus random others up to this size (0: all).", min=0)] = 0,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.", min=1)] = 64,
    max_seq_length: Annotated[int | None, typer.Option(help="Token cap per text (default: the model's).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present).")] = None,
) -> None:
    """Encode once at full dimension, slice every prefix, search exactly, report nDCG@10, Recall@10/100, MRR@10."""
    from mrl.adapt import Adaptor
    from mrl.data.beir import load_beir
    from mrl.encoders.model import embedding_dim, load_model
    from mrl.errors import MrlError
    from mrl.eval.evaluate import BASELINES, evaluate, subsample
    from mrl.eval.report import plot_reports
    from mrl.losses.matryoshka import validate_dims

    to_stdout = Path("-")
    out = err_console if json_out == to_stdout else console  # stdout holds only the JSON then
    dim_list = parse_ints(dims, "--dims")
    if dim_list is not None:
        validate_dims(dim_list, None, None)
    baselines = [b.strip() for item in baseline or [] for b in item.split(",") if b.strip()]
    for b in baselines:
        if b not in BASELINES:
            raise MrlError(f"--baseline {b!r} is unknown (choose from: {', '.join(BASELINES)})")
    if "adaptor" in baselines and adaptor is None:
        raise MrlError("--baseline adaptor needs --adaptor ADAPTOR (a folder from mrl adapt fit)")
    from mrl.eval.precision import check_dims, parse_precisions

    precisions = parse_precisions(precision)
    if dim_list is not None:
        check_dims(precisions, dim_list)
    fitted = Adaptor.load(adaptor) if adaptor is not None else None
    if select is not None and not 0 < select <= 1:
        raise MrlError(f"--select takes a fraction in (0, 1], got {select}")
    ds = load_beir(data, split)
    lang_list = [x.strip() for x in langs.split(",") if x.strip()] if langs else None
    if langs is not None and xling is None:
        raise MrlError("--langs needs --xling FOLDER")
    sets = None
    if xling is not None:
        from mrl.eval.xling import load_sets

        sets = load_sets(xling, lang_list, ds)  # checked before anything is encoded
        if max_queries or max_docs:  # keep every translated query's documents: English queries = the translated
            translated = {q for xs in sets for q in xs.queries}
            ds = type(ds)(ds.corpus, {q: ds.queries[q] for q in translated},
                          {q: ds.qrels[q] for q in translated}, ds.name, ds.split)
            ds = subsample(ds, len(ds.queries), max_docs or len(ds.corpus))
    elif max_queries or max_docs:
        ds = subsample(ds, max_queries or len(ds.queries), max_docs or len(ds.corpus))
    st_model = load_model(model, device, max_seq_length)
    if dim_list is not None:
        validate_dims(dim_list, None, embedding_dim(st_model))
    if fitted is not None and fitted.input_dim != embedding_dim(st_model):
        raise MrlError(f"--adaptor {adaptor} takes {fitted.input_dim}-dim vectors; {model} gives "
                       f"{embedding_dim(st_model)}")
    out.print(f"[bold]{model}[/] on {ds.name}/{split}: {len(ds.queries)} queries, {len(ds.corpus)} documents")
    xl = None
    if xling is None:
        report = evaluate(st_model, ds, dim_list, [b for b in baselines if b != "adaptor"], batch_size, True, model,
                          adaptors=fitted, precisions=precisions)
    else:
        report, xl = _with_cross_lingual(st_model, ds, sets, dim_list, baselines, batch_size, model, fitted,
                                         precisions)
    out.print(results_table(f"{split}: quality per prefix dimension (kept = nDCG@10 / full dim's)",
                                report.header(compact=True), report.rows(compact=True)))
    if xl is not None:
        out.print(results_table(f"{split}: cross-lingual nDCG@10 per prefix dimension (share = of the same "
                                "queries in English)", xl.header(), xl.rows()))
    document = report.to_dict() if xl is None else {**report.to_dict(), "cross_lingual": xl.to_dict()}
    if json_out == to_stdout:
        print_json(document)
    elif json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=2) + "\n")
        out.print(f"wrote {json_out}")
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(report.to_markdown())
        out.print(f"wrote {markdown}")
    if plot:
        plot_reports({Path(model).name or model: report}, plot)
        out.print(f"wrote {plot}")
    if select is not None:
        chosen = report.select(select)
        out.print(
            f"smallest dim with nDCG@10 >= {select:.0%} of dim {report.full_dim}: [bold]{chosen}[/] "
            f"({report.retention(chosen):.1%})"
        )


def _with_cross_lingual(st_model, ds, sets, dims, baselines, batch_size, model, fitted,  # noqa: ANN001, ANN202
                        precisions):
    """The English report and the cross-lingual one from one encoding of the corpus."""
    from mrl.encoders.model import embedding_dim, encode
    from mrl.eval.evaluate import evaluate_embeddings
    from mrl.eval.xling import evaluate_cross_lingual
    from mrl.losses.matryoshka import default_dims

    dims = dims or default_dims(embedding_dim(st_model))
    doc_ids, qids = list(ds.corpus), list(ds.queries)
    xb = encode(st_model, [ds.corpus[d] for d in doc_ids], batch_size, True, "documents", kind="document")
    xq = encode(st_model, [ds.queries[q] for q in qids], batch_size, True, "queries", kind="query")
    report = evaluate_embeddings(xq, xb, qids, doc_ids, ds.qrels, dims, [b for b in baselines if b != "adaptor"],
                                 model, ds.name, ds.split, fitted, precisions)
    xl = evaluate_cross_lingual(st_model, ds, sets, report.dims, batch_size, True, model, (xb, doc_ids))
    return report, xl
