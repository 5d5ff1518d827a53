"""Hard negatives mined with a model: sentence-transformers' ``mine_hard_negatives`` over a BEIR corpus.

Each (query, relevant document) pair of a split gets up to ``num_negatives`` documents of the
whole corpus that the model ranks high for the query but that are not judged relevant to it,
and whose score stays ``relative_margin`` below the positive's (so near-duplicates of the
positive, likely unjudged positives, are skipped). The output is a triplets file that
``mrl train --data`` reads: ``anchor``, ``positive``, ``negative`` (or ``negative_1..n``), with
``anchor_id`` / ``positive_id`` / ``negative_id...`` so a precomputed teacher can find them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl._fs import atomic_write_text
from mrl.data.beir import load_beir
from mrl.errors import MrlError


@dataclass(frozen=True)
class MineOptions:
    num_negatives: int = 1
    range_min: int = 0
    range_max: int = 50
    relative_margin: float = 0.05
    max_score: float | None = None
    sampling: str = "top"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise MrlError(f"--num-negatives must be >= 1, got {self.num_negatives}")
        if not 0 <= self.range_min < self.range_max:
            raise MrlError(f"--range-min {self.range_min} must be >= 0 and below --range-max {self.range_max}")
        if not 0 <= self.relative_margin < 1:
            raise MrlError(f"--relative-margin must be in [0, 1), got {self.relative_margin}")
        if self.sampling not in ("top", "random"):
            raise MrlError(f"--sampling must be 'top' or 'random', got {self.sampling!r}")


def _rows_with_ids(mined: Any, ds: Any, rows: list[tuple[str, str]], by_text: dict[str, str],
                   num_negatives: int) -> list[str]:
    """The mined rows as jsonl lines with the ids of every text; a row whose negative the qrels judge
    relevant to its query (the same text under another id) is dropped as a false negative."""
    negative_columns = [f"negative_{i}" for i in range(1, num_negatives + 1)]
    names = ["negative"] if num_negatives == 1 else negative_columns
    qid_of = {(ds.queries[q], ds.corpus[d]): q for q, d in rows}
    lines = []
    for rec in mined:
        qid = qid_of.get((rec["anchor"], rec["positive"]))
        negatives = [rec[c] for c in negative_columns]
        if qid is None or any(by_text.get(n) in ds.qrels.get(qid, {}) for n in negatives):
            continue
        row = {"anchor": rec["anchor"], "positive": rec["positive"], "anchor_id": qid,
               "positive_id": by_text[rec["positive"]]}
        for name, text in zip(names, negatives):
            row[name] = text
            row[name.replace("negative", "negative_id", 1)] = by_text[text]
        lines.append(json.dumps(row, ensure_ascii=False))
    return lines


def mine(model_name: str, data: str | Path, out: str | Path, split: str = "train",
         options: MineOptions | None = None, device: str | None = None) -> dict[str, int]:
    """Write ``out`` (jsonl) and return counts: pairs, written rows, pairs without enough negatives."""
    try:
        from datasets import Dataset
    except ImportError:
        raise MrlError("mrl mine needs the datasets package: pip install 'mrl[mine]'") from None
    from sentence_transformers.util import mine_hard_negatives

    from mrl.encoders.model import load_model, prompt_name

    options = options or MineOptions()
    ds = load_beir(data, split)
    doc_ids = list(ds.corpus)
    texts = [ds.corpus[d] for d in doc_ids]
    by_text: dict[str, str] = {}
    for d, t in zip(doc_ids, texts):
        by_text.setdefault(t, d)
    rows = [(q, d) for q, judged in ds.qrels.items() for d, rel in judged.items() if rel > 0]
    pairs = Dataset.from_dict({"anchor": [ds.queries[q] for q, _ in rows], "positive": [ds.corpus[d] for _, d in rows],
                               "qid": [q for q, _ in rows]})
    model = load_model(model_name, device)
    mined = mine_hard_negatives(
        pairs, model, anchor_column_name="anchor", positive_column_name="positive", corpus=texts,
        range_min=options.range_min, range_max=options.range_max, relative_margin=options.relative_margin,
        max_score=options.max_score, num_negatives=options.num_negatives,
        sampling_strategy="random" if options.sampling == "random" else "top",
        output_format="n-tuple", batch_size=options.batch_size, use_faiss=True, verbose=False,
        query_prompt_name=prompt_name(model, "query"), corpus_prompt_name=prompt_name(model, "document"),
    )
    lines = _rows_with_ids(mined, ds, rows, by_text, options.num_negatives)
    if not lines:
        raise MrlError(f"{data}/{split}: no pair got {options.num_negatives} negatives; widen --range-max or lower "
                       "--relative-margin")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return {"pairs": len(rows), "written": len(lines), "without_enough_negatives": len(rows) - len(lines)}
