"""Cross-lingual evaluation: every language's translated queries over the English corpus, per prefix.

Each language is also compared with the English originals of the same queries (the
translated query ids are the English ones), so ``share`` = nDCG@10 of the translation /
nDCG@10 of the English query, at the same dimension.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrl.data.beir import BeirDataset
from mrl.data.xling import CrossLingualSet, languages, load_cross_lingual
from mrl.errors import MrlError
from mrl.eval.evaluate import score_run
from mrl.prefix import truncate

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from mrl.encoders.runtime import Encoder


@dataclass(frozen=True)
class CrossLingualReport:
    """Per language and dim: ``scores[lang][dim]`` = {"ndcg@10", "recall@10", "en_ndcg@10", "share"}.

    ``english[dim]`` is the nDCG@10 of every English query of the split.
    """

    model: str
    split: str
    n_docs: int
    dims: list[int]
    n_queries: dict[str, int]
    scores: dict[str, dict[int, dict[str, float]]]
    english: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "split": self.split, "n_docs": self.n_docs, "dims": self.dims,
                "english_ndcg@10": {str(d): v for d, v in self.english.items()},
                "languages": {lang: {"n_queries": self.n_queries[lang],
                                     **{str(d): s for d, s in per_dim.items()}}
                              for lang, per_dim in self.scores.items()}}

    def write_json(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def header(self) -> list[str]:
        return ["language", "queries", *[f"{d} (share)" for d in self.dims]]

    def rows(self) -> list[list[str]]:
        rows = [["en (all)", "", *[f"{self.english[d]:.4f}" for d in self.dims]]]
        for lang, per_dim in self.scores.items():
            rows.append([lang, str(self.n_queries[lang]),
                         *[f"{per_dim[d]['ndcg@10']:.4f} ({per_dim[d]['share']:.0%})" for d in self.dims]])
        return rows


def load_sets(folder: str | Path, langs: Sequence[str] | None, english: BeirDataset) -> list[CrossLingualSet]:
    """Every wanted language of ``folder`` (default: all), checked against the English set before encoding."""
    wanted = list(langs) if langs else languages(folder, english.split)
    sets = [load_cross_lingual(folder, lang, english.split, english.corpus) for lang in wanted]
    for xs in sets:
        absent = [q for q in xs.queries if q not in english.queries]
        if absent:
            raise MrlError(f"{folder}/{xs.lang}: {len(absent)} query id(s) are not English {english.split} query "
                           f"ids, e.g. {absent[0]!r}")
    return sets


def evaluate_cross_lingual(model: SentenceTransformer | Encoder, english: BeirDataset,
                           sets: Sequence[CrossLingualSet], dims: Sequence[int], batch_size: int = 64,
                           show_progress: bool = True, model_name: str = "",
                           corpus_embeddings: tuple[np.ndarray, list[str]] | None = None) -> CrossLingualReport:
    """Encode the English corpus once (or take ``corpus_embeddings``), then every language's queries.

    ``model`` is a Sentence-Transformers model or an exported encoder (:class:`~mrl.encoders.runtime.Encoder`).
    """
    from mrl.eval.evaluate import embedder

    _, embed = embedder(model, batch_size, show_progress)
    if corpus_embeddings is None:
        doc_ids = list(english.corpus)
        xb = embed([english.corpus[d] for d in doc_ids], "document")
    else:
        xb, doc_ids = corpus_embeddings
    en_ids = list(english.queries)
    xq_en = embed([english.queries[q] for q in en_ids], "query")
    row = {q: i for i, q in enumerate(en_ids)}
    dims = sorted(set(dims))
    english_scores = {d: score_run(truncate(xq_en, d), truncate(xb, d), en_ids, doc_ids, english.qrels)["ndcg@10"]
                      for d in dims}
    scores: dict[str, dict[int, dict[str, float]]] = {}
    counts: dict[str, int] = {}
    for xs in sets:
        qids = list(xs.queries)
        xq = embed([xs.queries[q] for q in qids], "query")
        xq_same = xq_en[[row[q] for q in qids]]
        per_dim = {}
        for d in dims:
            ours = score_run(truncate(xq, d), truncate(xb, d), qids, doc_ids, xs.qrels)
            ref = score_run(truncate(xq_same, d), truncate(xb, d), qids, doc_ids, xs.qrels)["ndcg@10"]
            per_dim[d] = {"ndcg@10": ours["ndcg@10"], "recall@10": ours["recall@10"], "en_ndcg@10": ref,
                          "share": ours["ndcg@10"] / ref if ref > 0 else 0.0}
        scores[xs.lang], counts[xs.lang] = per_dim, len(qids)
    return CrossLingualReport(model_name, english.split, len(doc_ids), dims, counts, scores, english_scores)


def plot_cross_lingual(report: CrossLingualReport, path: str | Path) -> None:
    """Two panels against the prefix dimension: every language's nDCG@10 (and English's), and its share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrl.eval.report import save_figure

    dims = report.dims
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    left.plot(dims, [report.english[d] for d in dims], "-o", color="black", label="en (all queries)", markersize=4)
    for lang, per_dim in report.scores.items():
        left.plot(dims, [per_dim[d]["ndcg@10"] for d in dims], "-o", label=lang, markersize=3)
        right.plot(dims, [per_dim[d]["share"] for d in dims], "-o", label=lang, markersize=3)
    for ax, label in ((left, "nDCG@10"), (right, "share of the same queries in English")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims)
        ax.set_xticklabels([str(d) for d in dims])
        ax.set_xlabel("embedding prefix dimension")
        ax.set_ylabel(label)
    right.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    left.set_title(f"cross-lingual {report.split}: {Path(report.model).name or report.model} "
                   f"({report.n_docs} documents)", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    save_figure(fig, right, path, legend_size=7)
