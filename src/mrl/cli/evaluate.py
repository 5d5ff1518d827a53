"""``mrl eval``: retrieval quality at every prefix dimension."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mrl.cli.common import (
    RuntimeOpt,
    ThreadsOpt,
    check_output,
    console,
    err_console,
    handle_errors,
    parse_ints,
    print_json,
    results_table,
)

if TYPE_CHECKING:
    from mrl.adapt import Adaptor
    from mrl.data.beir import BeirDataset
    from mrl.eval.report import EvalReport
    from mrl.eval.xling import CrossLingualReport, CrossLingualSet

ModelOpt = Annotated[str, typer.Option("--model", "-m", envvar="MRL_MODEL",
                                       help="Model folder, 'minilm', 'multilingual-e5-small' or a cached hub name.")]
DataOpt = Annotated[Path, typer.Option(help="BEIR folder: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/.")]
SplitOpt = Annotated[str, typer.Option(help="qrels split to evaluate.")]
DimsOpt = Annotated[str | None, typer.Option(help="Comma-separated prefix dims (default: 32,64,... + full).")]
BaselineOpt = Annotated[list[str] | None, typer.Option(
    help="Also score 'pca' (rotate, then truncate) and/or 'adaptor' (needs --adaptor); comma-separated "
         "or repeated.")]
AdaptorOpt = Annotated[Path | None, typer.Option(
    help="Adaptor folder (mrl adapt fit): also score the adapted embeddings at every prefix.")]
JsonOpt = Annotated[Path | None, typer.Option(
    "--json", help="Write the results as JSON to this file ('-': to stdout, everything else to stderr).")]
MarkdownOpt = Annotated[Path | None, typer.Option(help="Write the results as a Markdown table.")]
PlotOpt = Annotated[Path | None, typer.Option(help="Write an nDCG@10-vs-dimension PNG.")]
PrecisionOpt = Annotated[str | None, typer.Option(
    help="Also evaluate quantised prefixes: float32,int8,binary (int8 codes with per-dimension ranges, sign "
         "bits), each alone and with a float rescore of a 100-candidate shortlist; `mrl select` reads the "
         "report.")]
SelectOpt = Annotated[float | None, typer.Option(
    help="Print the smallest dim keeping this fraction of the full dim's nDCG@10, e.g. 0.95.")]
XlingOpt = Annotated[Path | None, typer.Option(
    help="Also evaluate translated queries over the --data corpus, laid out as debian-xling "
         "(<lang>/queries-<split>.jsonl.gz, <lang>/qrels/<split>.tsv): one table, every language per dim.")]
CorpusEmbeddingsOpt = Annotated[Path | None, typer.Option(
    help="A complete `mrl encode --what corpus` folder of this model: its vectors stand for the corpus "
         "(encode a large corpus once, resumably; then evaluate).")]
LangsOpt = Annotated[str | None, typer.Option(help="Languages of --xling (default: every one found).")]
MaxQueriesOpt = Annotated[int, typer.Option(help="Sample at most this many queries (0: all).", min=0)]
MaxDocsOpt = Annotated[int, typer.Option(help="Judged docs plus random others up to this size (0: all).", min=0)]
BatchSizeOpt = Annotated[int, typer.Option(help="Encoding batch size.", min=1)]
MaxSeqLengthOpt = Annotated[int | None, typer.Option(help="Token cap per text (default: the model's).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present).")]

_STDOUT = Path("-")


@dataclass(frozen=True)
class _Methods:
    """What to score besides plain truncation, checked before anything is loaded."""

    dims: list[int] | None
    baselines: list[str]
    precisions: list[str]
    adaptor: Adaptor | None


@handle_errors
def eval_command(
    model: ModelOpt,
    data: DataOpt,
    split: SplitOpt = "test",
    dims: DimsOpt = None,
    baseline: BaselineOpt = None,
    adaptor: AdaptorOpt = None,
    json_out: JsonOpt = None,
    markdown: MarkdownOpt = None,
    plot: PlotOpt = None,
    precision: PrecisionOpt = None,
    select: SelectOpt = None,
    xling: XlingOpt = None,
    langs: LangsOpt = None,
    max_queries: MaxQueriesOpt = 0,
    max_docs: MaxDocsOpt = 0,
    batch_size: BatchSizeOpt = 64,
    max_seq_length: MaxSeqLengthOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = "torch",
    corpus_embeddings: CorpusEmbeddingsOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Encode once at full dimension, slice every prefix, search exactly, report nDCG@10, Recall@10/100, MRR@10."""
    for option, path in (("--json", json_out), ("--markdown", markdown), ("--plot", plot)):
        check_output(None if path == _STDOUT else path, "file", option)  # before minutes of encoding
    out = err_console if json_out == _STDOUT else console  # stdout holds only the JSON then
    methods = _check_methods(dims, baseline, adaptor, precision, select)
    ds, sets = _load_data(data, split, xling, langs, max_queries, max_docs)
    st_model = _load_model(model, device, max_seq_length, methods, adaptor, runtime, threads)
    out.print(f"[bold]{model}[/] on {ds.name}/{split}: {len(ds.queries)} queries, {len(ds.corpus)} documents")
    if sets is None and corpus_embeddings is None:
        from mrl.eval.evaluate import evaluate

        xl = None
        report = evaluate(st_model, ds, methods.dims, [b for b in methods.baselines if b != "adaptor"], batch_size,
                          True, model, adaptors=methods.adaptor, precisions=methods.precisions)
    else:
        report, xl = _with_corpus(st_model, ds, sets, methods, batch_size, model, corpus_embeddings)
    _print_tables(out, split, report, xl)
    _write_outputs(out, report, xl, json_out, markdown, plot, model)
    if select is not None:
        chosen = report.select(select)
        out.print(
            f"smallest dim with nDCG@10 >= {select:.0%} of dim {report.full_dim}: [bold]{chosen}[/] "
            f"({report.retention(chosen):.1%})"
        )


def _check_methods(dims: str | None, baseline: list[str] | None, adaptor: Path | None, precision: str | None,
                   select: float | None) -> _Methods:
    """The options that need no data or model, checked in the order they are listed in the help."""
    from mrl.adapt import Adaptor
    from mrl.errors import MrlError
    from mrl.eval.evaluate import BASELINES
    from mrl.eval.precision import check_precision_dims, parse_precisions
    from mrl.prefix import check_dims

    dim_list = parse_ints(dims, "--dims")
    if dim_list is not None:
        check_dims(dim_list, None, None)
    baselines = [b.strip() for item in baseline or [] for b in item.split(",") if b.strip()]
    for b in baselines:
        if b not in BASELINES:
            raise MrlError(f"--baseline {b!r} is unknown (choose from: {', '.join(BASELINES)})")
    if "adaptor" in baselines and adaptor is None:
        raise MrlError("--baseline adaptor needs --adaptor ADAPTOR (a folder from mrl adapt fit)")
    precisions = parse_precisions(precision)
    if dim_list is not None:
        check_precision_dims(precisions, dim_list)
    fitted = Adaptor.load(adaptor) if adaptor is not None else None
    if select is not None and not 0 < select <= 1:
        raise MrlError(f"--select takes a fraction in (0, 1], got {select}")
    return _Methods(dim_list, baselines, precisions, fitted)


def _load_data(data: Path, split: str, xling: Path | None, langs: str | None, max_queries: int,
               max_docs: int) -> tuple[BeirDataset, list[CrossLingualSet] | None]:
    """The English set (subsampled when asked) and, with ``xling``, the translated query sets."""
    from mrl.data.beir import load_beir
    from mrl.errors import MrlError
    from mrl.eval.evaluate import subsample

    ds = load_beir(data, split)
    lang_list = [x.strip() for x in langs.split(",") if x.strip()] if langs else None
    if langs is not None and xling is None:
        raise MrlError("--langs needs --xling FOLDER")
    if xling is None:
        if max_queries or max_docs:
            ds = subsample(ds, max_queries or len(ds.queries), max_docs or len(ds.corpus))
        return ds, None
    from mrl.eval.xling import load_sets

    sets = load_sets(xling, lang_list, ds)  # checked before anything is encoded
    if max_queries or max_docs:  # keep every translated query's documents: English queries = the translated
        translated = {q for xs in sets for q in xs.queries}
        ds = type(ds)(ds.corpus, {q: ds.queries[q] for q in translated},
                      {q: ds.qrels[q] for q in translated}, ds.name, ds.split)
        ds = subsample(ds, len(ds.queries), max_docs or len(ds.corpus))
    return ds, sets


def _load_model(model: str, device: str | None, max_seq_length: int | None, methods: _Methods,
                adaptor: Path | None, runtime: str = "torch", threads: int | None = None) -> Any:
    """The model (a Sentence-Transformers model, or with an ONNX ``runtime`` the exported encoder),
    checked against ``--dims`` and the adaptor's input dimension."""
    from mrl.encoders.model import embedding_dim, load_model
    from mrl.encoders.runtime import open_encoder, set_torch_threads
    from mrl.errors import MrlError
    from mrl.prefix import check_dims

    if runtime != "torch":
        st_model: Any = open_encoder(model, runtime, threads, device=device)
        dim = st_model.dim
    else:
        set_torch_threads(threads)
        st_model = load_model(model, device, max_seq_length)
        dim = embedding_dim(st_model)
    if methods.dims is not None:
        check_dims(methods.dims, None, dim)
    if methods.adaptor is not None and methods.adaptor.input_dim != dim:
        raise MrlError(f"--adaptor {adaptor} takes {methods.adaptor.input_dim}-dim vectors; {model} gives {dim}")
    return st_model


def _print_tables(out: Console, split: str, report: EvalReport, xl: CrossLingualReport | None) -> None:
    out.print(results_table(f"{split}: quality per prefix dimension (kept = nDCG@10 / full dim's)",
                            report.header(compact=True), report.rows(compact=True)))
    if xl is not None:
        out.print(results_table(f"{split}: cross-lingual nDCG@10 per prefix dimension (share = of the same "
                                "queries in English)", xl.header(), xl.rows()))


def _write_outputs(out: Console, report: EvalReport, xl: CrossLingualReport | None, json_out: Path | None,
                   markdown: Path | None, plot: Path | None, model: str) -> None:
    """The JSON document (a file or stdout), the Markdown table and the plot, each when asked."""
    from mrl.eval.report import plot_reports

    document = report.to_dict() if xl is None else {**report.to_dict(), "cross_lingual": xl.to_dict()}
    if json_out == _STDOUT:
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
        if xl is not None:
            from mrl.eval.xling import plot_cross_lingual

            per_language = plot.with_name(f"{plot.stem}-xling{plot.suffix}")
            plot_cross_lingual(xl, per_language)
            out.print(f"wrote {per_language}")


def _with_corpus(st_model: Any, ds: BeirDataset, sets: list[CrossLingualSet] | None, methods: _Methods,
                 batch_size: int, model: str, corpus_embeddings: Path | None
                 ) -> tuple[EvalReport, CrossLingualReport | None]:
    """The English report and, with ``sets``, the cross-lingual one, from one encoding of the corpus (or the
    vectors of ``corpus_embeddings``)."""
    from mrl.encoders.shards import corpus_vectors
    from mrl.eval.evaluate import embedder, evaluate_embeddings
    from mrl.eval.xling import evaluate_cross_lingual
    from mrl.prefix import default_dims

    full, embed = embedder(st_model, batch_size, True)
    dims = methods.dims or default_dims(full)
    if corpus_embeddings is not None:
        xb, doc_ids = corpus_vectors(corpus_embeddings, model, ds.corpus, getattr(st_model, "runtime", "torch"))
    else:
        doc_ids = list(ds.corpus)
        xb = embed([ds.corpus[d] for d in doc_ids], "document")
    qids = list(ds.queries)
    xq = embed([ds.queries[q] for q in qids], "query")
    report = evaluate_embeddings(xq, xb, qids, doc_ids, ds.qrels, dims,
                                 [b for b in methods.baselines if b != "adaptor"], model, ds.name, ds.split,
                                 methods.adaptor, methods.precisions)
    if sets is None:
        return report, None
    xl = evaluate_cross_lingual(st_model, ds, sets, report.dims, batch_size, True, model, (xb, doc_ids))
    return report, xl
