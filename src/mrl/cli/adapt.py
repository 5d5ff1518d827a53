"""``mrl adapt fit`` and ``mrl adapt apply``: Matryoshka adaptors for frozen embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import typer

from mrl.adapt.fit import FitConfig
from mrl.cli.common import check_output, console, handle_errors, parse_floats, parse_ints, results_table
from mrl.errors import MrlError

_D = FitConfig()  # the defaults, in one place

app = typer.Typer(help="Make frozen embeddings of any model or API prefix-friendly with a small learned map.",
                  no_args_is_help=True)


def load_array(path: Path, what: str) -> np.ndarray:
    """A .npy file, memory-mapped; the error names the file."""
    if not path.is_file():
        raise MrlError(f"{what} {path}: no such file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise MrlError(f"{what} {path}: not a readable .npy array ({e})") from None


def _pairs_from_beir(st_model: Any, model: str, data: Path, split: str,
                     batch_size: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(corpus vectors, query vectors, positive vectors) encoded with the frozen model; one row per
    judged pair of ``split`` (no pairs when the split has no qrels)."""
    from mrl.data.beir import load_beir, load_corpus
    from mrl.encoders.model import encode

    corpus = load_corpus(data)
    doc_ids = list(corpus)
    console.print(f"encoding {len(doc_ids)} documents from {data} with {model}")
    xb = encode(st_model, [corpus[d] for d in doc_ids], batch_size, show_progress=True, desc="documents",
                kind="document")
    qrels_file = [p for p in (data / "qrels").glob(f"{split}.*")] if (data / "qrels").is_dir() else []
    if not qrels_file:
        console.print(f"no qrels/{split}.tsv in {data}: fitting unsupervised (corpus vectors only)")
        return xb, None, None
    ds = load_beir(data, split)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    pairs = [(q, row_of[d]) for q, rels in ds.qrels.items() for d, r in rels.items() if r > 0 and d in row_of]
    if not pairs:
        raise MrlError(f"{data}/qrels/{split}: no relevant query/document pair to fit on")
    qids = sorted({q for q, _ in pairs})
    console.print(f"encoding {len(qids)} {split} queries ({len(pairs)} pairs)")
    xq = encode(st_model, [ds.queries[q] for q in qids], batch_size, show_progress=True, desc="queries", kind="query")
    q_row = {q: i for i, q in enumerate(qids)}
    return xb, xq[[q_row[q] for q, _ in pairs]], xb[[d for _, d in pairs]]


OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Adaptor folder to write.")]
VectorsOpt = Annotated[Path | None, typer.Option(help="Corpus vectors .npy (n, D): fit unsupervised.")]
QueryVectorsOpt = Annotated[Path | None, typer.Option(
    help="With --vectors: query vectors .npy (m, D) of relevant pairs (supervised).")]
PositiveVectorsOpt = Annotated[Path | None, typer.Option(
    help="With --query-vectors: the relevant document's vector for each query row, .npy (m, D).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Frozen model that encodes --data.",
                                              envvar="MRL_MODEL")]
DataOpt = Annotated[Path | None, typer.Option(help="BEIR folder; its --split qrels give the pairs.")]
SplitOpt = Annotated[str, typer.Option(help="qrels split of --data that gives the pairs.")]
UnsupervisedOpt = Annotated[bool, typer.Option(help="With --data: ignore the qrels, corpus vectors only.")]
KindOpt = Annotated[str, typer.Option(help="orthogonal (a rotation: full-dim scores unchanged), mlp (residual "
                                           "MLP after a rotation) or pca (the baseline).")]
DimsOpt = Annotated[str | None, typer.Option(help="Prefix dims to fit (default: 32,64,... + full).")]
WeightsOpt = Annotated[str | None, typer.Option(help="One loss weight per dim.")]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the corpus vectors (or pairs, if more).")]
BatchSizeOpt = Annotated[int, typer.Option(help="Rows per step.", min=2)]
LrOpt = Annotated[float, typer.Option(help="Adam learning rate.")]
NeighboursOpt = Annotated[int, typer.Option(help="Nearest neighbours per row whose similarities are kept.")]
DistributionWeightOpt = Annotated[float, typer.Option(
    help="Weight of the order-preserving term (KL of score distributions).")]
PairwiseWeightOpt = Annotated[float, typer.Option(help="Weight of in-batch similarity preservation.")]
NeighbourWeightOpt = Annotated[float, typer.Option(help="Weight of neighbour similarity preservation.")]
RankingWeightOpt = Annotated[float, typer.Option(help="Weight of InfoNCE on the pairs (supervised).")]
HiddenOpt = Annotated[int | None, typer.Option(help="Width of the mlp kind's hidden layer (default: input dim).")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present).")]
EncodeBatchSizeOpt = Annotated[int, typer.Option(help="Encoding batch size with --model.", min=1)]

_Fitting = tuple[Any, Any, Any, str]  # corpus vectors, query vectors, positive vectors (or None), source


@app.command("fit")
@handle_errors
def fit_command(
    out: OutOpt,
    vectors: VectorsOpt = None,
    query_vectors: QueryVectorsOpt = None,
    positive_vectors: PositiveVectorsOpt = None,
    model: ModelOpt = None,
    data: DataOpt = None,
    split: SplitOpt = "train",
    unsupervised: UnsupervisedOpt = False,
    kind: KindOpt = "orthogonal",
    dims: DimsOpt = None,
    weights: WeightsOpt = None,
    epochs: EpochsOpt = _D.epochs,
    batch_size: BatchSizeOpt = _D.batch_size,
    lr: LrOpt = _D.lr,
    neighbours: NeighboursOpt = _D.neighbours,
    distribution_weight: DistributionWeightOpt = _D.distribution_weight,
    pairwise_weight: PairwiseWeightOpt = _D.pairwise_weight,
    neighbour_weight: NeighbourWeightOpt = _D.neighbour_weight,
    ranking_weight: RankingWeightOpt = _D.ranking_weight,
    hidden: HiddenOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    encode_batch_size: EncodeBatchSizeOpt = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace an adaptor already at --out.")] = False,
) -> None:
    """Fit an adaptor on corpus vectors (unsupervised) or with query/document pairs (supervised)."""
    check_output(out, "folder", "--out")
    if (out / "adaptor.json").exists() and not overwrite:  # the one rule: index build, train, adapt fit
        raise MrlError(f"{out}: an adaptor already exists there (pass --overwrite to replace it)")
    from mrl.encoders.model import pick_device

    if (vectors is None) == (data is None):
        raise MrlError("give either --vectors X.npy or --model PATH --data BEIR_DIR")
    if (query_vectors is None) != (positive_vectors is None) or (query_vectors is not None and vectors is None):
        raise MrlError("--query-vectors and --positive-vectors go together, with --vectors")
    config = FitConfig(kind=kind, dims=tuple(parse_ints(dims, "--dims") or ()) or None,
                       weights=tuple(parse_floats(weights, "--weights") or ()) or None, epochs=epochs,
                       batch_size=batch_size, lr=lr, neighbours=neighbours, pairwise_weight=pairwise_weight,
                       neighbour_weight=neighbour_weight, distribution_weight=distribution_weight,
                       ranking_weight=ranking_weight, hidden=hidden, seed=seed, device=device)
    pick_device(device)  # a missing GPU is an error now, not after encoding and neighbour search
    if vectors is not None:
        fitting = _from_vectors(vectors, query_vectors, positive_vectors, config)
    else:  # data is set: exactly one of --vectors and --data is (checked above)
        fitting = _from_beir(model, cast(Path, data), split, unsupervised, config, encode_batch_size)
    _fit_and_save(fitting, config, out)


def _from_vectors(vectors: Path, query_vectors: Path | None, positive_vectors: Path | None,
                  config: FitConfig) -> _Fitting:
    """The vectors of ``.npy`` files (memory-mapped), the config checked against their dimension."""
    from mrl.adapt.base import check_vectors

    xb = check_vectors(load_array(vectors, "--vectors"), None, f"--vectors {vectors}")
    config.validate(xb.shape[1])
    xq = xp = None
    if query_vectors is not None and positive_vectors is not None:
        xq, xp = load_array(query_vectors, "--query-vectors"), load_array(positive_vectors, "--positive-vectors")
    return xb, xq, xp, str(vectors)


def _from_beir(model: str | None, data: Path, split: str, unsupervised: bool, config: FitConfig,
               encode_batch_size: int) -> _Fitting:
    """The vectors of a BEIR folder encoded with the frozen model, the config checked before encoding."""
    from mrl.encoders.model import embedding_dim, load_model

    if model is None:
        raise MrlError("--data needs --model (the frozen model that encodes it)")
    if not data.is_dir():
        raise MrlError(f"--data {data}: no such folder")
    st_model = load_model(model, config.device)
    config.validate(embedding_dim(st_model))  # options checked before any encoding starts
    xb, xq, xp = _pairs_from_beir(st_model, model, data, split, encode_batch_size)
    if unsupervised:
        xq = xp = None
    return xb, xq, xp, f"{model} on {data}"


def _fit_and_save(fitting: _Fitting, config: FitConfig, out: Path) -> None:
    from mrl.adapt.fit import fit_adaptor

    xb, xq, xp, source = fitting
    adaptor = fit_adaptor(xb, config, xq, xp)
    adaptor = type(adaptor)(adaptor.kind, adaptor.input_dim, adaptor.dims, adaptor.arrays,
                            {**adaptor.info, "source": source})
    adaptor.save(out)
    _print_scores(adaptor.info.get("scores", {}))
    fit_s = adaptor.info["training"].get("fit_s")
    console.print(f"wrote {out} ({adaptor.kind}, {adaptor.input_dim} dims, fitted in {fit_s} s)")


def _print_scores(scores: dict[str, Any]) -> None:
    for metric in ("neighbour_recall@10", "pair_recall@10"):
        block = scores.get(metric)
        if not block:
            continue
        dims = list(block["adaptor"])
        rows = [[method, *[f"{block[method][d]:.4f}" for d in dims]] for method in ("truncate", "adaptor")]
        console.print(results_table(f"held-out {metric} per prefix dim", ["method", *dims], rows))


@app.command("apply")
@handle_errors
def apply_command(
    adaptor_path: Annotated[Path, typer.Argument(help="Adaptor folder (from mrl adapt fit).")],
    vectors: Annotated[Path, typer.Option(help="Input vectors .npy (n, D); memory-mapped.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy (n, D) float32.")],
) -> None:
    """Adapt vectors in row blocks, streaming from and to disk (files larger than RAM work)."""
    from mrl._fs import fsync_dir, temporary_name
    from mrl.adapt import Adaptor

    adaptor = Adaptor.load(adaptor_path)
    x = load_array(vectors, "--vectors")
    if out.resolve() == vectors.resolve():
        raise MrlError(f"--out {out} is the input file; write to another path")
    from mrl.adapt.base import check_vectors

    check_vectors(x, adaptor.input_dim, f"--vectors {vectors}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(out)
    try:
        y = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(x), adaptor.output_dim))
        adaptor.transform(x, out=y)
        y.flush()
        del y
        tmp.replace(out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
    console.print(f"wrote {out}: {len(x)} x {adaptor.output_dim} float32 ({adaptor.kind} adaptor)")
