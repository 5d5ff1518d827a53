"""Fitting a Matryoshka adaptor on frozen embeddings (torch; CUDA when present).

Losses, at every prefix ``d`` of the adapted vectors (each prefix renormalised), weighted per dim:

- **pairwise**: mean ``|cos_d(f(a), f(b)) - cos(a, b)|`` over the pairs of a batch of corpus rows;
- **neighbours**: the same over each row and its ``k`` nearest corpus neighbours (full-dim, exact);
- **distribution** (optional): KL from the full-dim softmax over a row's neighbours and the batch to
  the prefix's, which asks for the same order rather than the same values;
- **ranking** (supervised, when query/document pairs are given): InfoNCE of queries against the
  documents of the batch.

The orthogonal and MLP kinds start from the corpus's principal axes (the PCA baseline without
centring), so the fit starts where PCA is and only moves what the losses improve, and an
input that is a rotated copy of another fits to the same result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mrl.adapt.base import BLOCK, Adaptor, check_vectors, fit_pca, normalize_input
from mrl.errors import MrlError

logger = logging.getLogger(__name__)

FIT_KINDS = ("orthogonal", "mlp")


@dataclass(frozen=True)
class FitConfig:
    """How an adaptor is fitted. ``dims`` default: powers of two from 32 plus the full dim."""

    kind: str = "orthogonal"
    dims: tuple[int, ...] | None = None
    weights: tuple[float, ...] | None = None
    epochs: int = 8
    batch_size: int = 256
    lr: float = 1e-2
    neighbours: int = 10
    pairwise_weight: float = 1.0
    neighbour_weight: float = 1.0
    ranking_weight: float = 1.0
    distribution_weight: float = 1.0  # KL of in-batch + neighbour score distributions (order, not values)
    distribution_scale: float = 20.0
    scale: float = 20.0
    hidden: int | None = None  # mlp width (default: the input dim)
    holdout: int = 1000  # corpus rows (and pairs) held out to score the fit
    seed: int = 0
    device: str | None = None

    def validate(self, dim: int) -> tuple[list[int], list[float]]:
        from mrl.prefix import check_dims, default_dims

        if self.kind not in FIT_KINDS + ("pca",):
            raise MrlError(f"adaptor kind {self.kind!r} is unknown (choose from: pca, {', '.join(FIT_KINDS)})")
        for name in ("epochs", "batch_size", "neighbours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MrlError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("lr", "scale", "distribution_scale"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise MrlError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("pairwise_weight", "neighbour_weight", "ranking_weight", "distribution_weight"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise MrlError(f"{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.hidden is not None and self.hidden < 1:
            raise MrlError(f"hidden must be a positive integer, got {self.hidden!r}")
        return check_dims(list(self.dims or default_dims(dim)), self.weights, dim)


def fit_adaptor(
    xb: Any,
    config: FitConfig = FitConfig(),
    queries: Any | None = None,
    positives: Any | None = None,
    progress: bool = True,
) -> Adaptor:
    """Fit an adaptor on corpus vectors ``xb`` ``(n, D)``; with ``queries``/``positives`` ``(m, D)``
    (row i of each is one relevant pair), also with the ranking loss (the supervised variant).

    Returns:
        The adaptor, whose ``info`` records the config, data sizes, fit time and held-out scores
        (neighbour recall@10 against full-dim search, and pair recall@10 when pairs are given) of
        the adaptor and of plain truncation at every dim.
    """
    xb = check_vectors(xb, None, "corpus vectors")
    dim = xb.shape[1]
    dims, weights = config.validate(dim)
    supervised = queries is not None or positives is not None
    if supervised:
        if queries is None or positives is None:
            raise MrlError("supervised fitting needs both queries and their positive documents")
        queries = check_vectors(queries, dim, "query vectors")
        positives = check_vectors(positives, dim, "positive vectors")
        if len(queries) != len(positives):
            raise MrlError(f"{len(queries)} queries but {len(positives)} positives: give one positive per query")
    t0 = time.perf_counter()
    x = _normalized(xb)
    pairs = (_normalized(queries), _normalized(positives)) if supervised else None
    start = fit_pca(x, tuple(dims)) if config.kind == "pca" else _fit_torch(x, dims, weights, config, pairs, progress)
    fit_s = time.perf_counter() - t0
    info = {
        "training": {**{k: v for k, v in asdict(config).items() if k != "device"}, "dims": dims, "weights": weights,
                     "n_vectors": len(x), "n_pairs": len(pairs[0]) if pairs is not None else 0,
                     "supervised": supervised, "fit_s": round(fit_s, 1)},
        "scores": heldout_scores(start, x, config, pairs),
    }
    return Adaptor(start.kind, dim, tuple(dims), start.arrays, info)


def _normalized(x: Any) -> np.ndarray:
    """A float32 copy with unit rows, read in blocks (``x`` may be a memmap); bad rows are errors."""
    out = np.empty(x.shape, np.float32)
    for s in range(0, len(x), BLOCK):
        out[s : s + BLOCK] = normalize_input(np.asarray(x[s : s + BLOCK], dtype=np.float32), s)
    return out


def _split(n: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): at most a fifth of the rows is held out."""
    order = np.random.default_rng(seed).permutation(n)
    h = min(holdout, n // 5)
    return np.sort(order[h:]), np.sort(order[:h])


def neighbours(x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest corpus rows (inner product, exact) of each of ``rows``, itself excluded."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    k1 = min(k + 1, len(x))
    _, nn = index.search(x[rows], k1)  # (len(rows), k + 1)
    keep = nn != rows[:, None]
    return np.stack([r[m][: k1 - 1] for r, m in zip(nn, keep)])  # (len(rows), k)


@dataclass(frozen=True)
class _TrainSet:
    """The fit's training rows on the device: corpus rows and their neighbours; pairs when supervised."""

    xt: Any  # (n_train, D)
    nn: np.ndarray | None  # (n_train, k): each row's nearest training rows (None: no neighbour term)
    qt: Any = None  # (m_train, D) queries
    pt: Any = None  # (m_train, D) their positives


def _fit_torch(
    x: np.ndarray,
    dims: Sequence[int],
    weights: Sequence[float],
    config: FitConfig,
    pairs: tuple[np.ndarray, np.ndarray] | None,
    progress: bool,
) -> Adaptor:
    import torch
    from tqdm.auto import tqdm

    from mrl.adapt.model import AdaptorModule
    from mrl.encoders.model import pick_device

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = _train_set(x, config, pairs, device)
    rotation = fit_pca(x).arrays["rotation"]  # principal axes; the uncentred start keeps inner products
    module = AdaptorModule(config.kind, rotation, config.hidden).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=config.lr)
    b = min(config.batch_size, len(data.xt))
    steps_per_epoch = max(1, len(data.xt) // b)
    if data.qt is not None:
        steps_per_epoch = max(steps_per_epoch, len(data.qt) // b)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.05 * total + 1)) * (1 - s / total))
    bar = tqdm(total=total, desc=f"fitting {config.kind} adaptor", disable=not progress, unit="step")
    for _ in range(total):
        loss = _loss(module, data, dims, weights, config, rng, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
    bar.close()
    return Adaptor(config.kind, x.shape[1], tuple(dims), module.export())


def _train_set(x: np.ndarray, config: FitConfig, pairs: tuple[np.ndarray, np.ndarray] | None,
               device: str) -> _TrainSet:
    """The rows the fit trains on (the held-out ones left out), with their neighbours, on ``device``."""
    import torch

    train_rows, _ = _split(len(x), config.holdout, config.seed)
    k = min(config.neighbours, len(train_rows) - 1)
    uses_nn = config.neighbour_weight > 0 or config.distribution_weight > 0
    nn = neighbours(x[train_rows], np.arange(len(train_rows)), k) if uses_nn and k > 0 else None
    xt = torch.from_numpy(x[train_rows]).to(device)  # (n_train, D)
    if pairs is None:
        return _TrainSet(xt, nn)
    pair_rows, _ = _split(len(pairs[0]), config.holdout, config.seed)
    return _TrainSet(xt, nn, torch.from_numpy(pairs[0][pair_rows]).to(device),
                     torch.from_numpy(pairs[1][pair_rows]).to(device))


def _loss(module: Any, data: _TrainSet, dims: Sequence[int], weights: Sequence[float], config: FitConfig,
          rng: np.random.Generator, b: int) -> Any:
    """One step's loss on a random batch of ``b`` rows (and of pairs): every term at every dim, weighted."""
    import torch
    from torch.nn.utils import parametrize

    device = data.xt.device
    idx = torch.from_numpy(rng.choice(len(data.xt), size=b, replace=False)).to(device)
    with parametrize.cached():  # the rotation is computed once per step, not once per call
        terms = _unsupervised_terms(module, data.xt, idx, data.nn, dims, config)
        if data.qt is not None and config.ranking_weight > 0:
            pidx = torch.from_numpy(rng.choice(len(data.qt), size=min(b, len(data.qt)), replace=False)).to(device)
            terms["ranking"] = config.ranking_weight * _ranking(module, data.qt[pidx], data.pt[pidx], dims,
                                                                config.scale)
        loss: Any = sum(sum(w * t[i] for i, w in enumerate(weights)) for t in terms.values())  # a 0-dim tensor
    if not torch.isfinite(loss):
        raise MrlError("the adaptor loss became NaN or Inf; lower --lr")
    return loss


def _unsupervised_terms(module: Any, xt: Any, idx: Any, nn: np.ndarray | None, dims: Sequence[int],
                        config: FitConfig) -> dict[str, Any]:
    """Per-dim similarity-preservation losses on one batch of corpus rows: ``{term: (n_dims,)}``."""
    import torch

    from mrl.prefix import truncate

    a = xt[idx]  # (B, D)
    terms: dict[str, Any] = {}
    fa = module(a)  # (B, D)
    if config.pairwise_weight > 0:
        target = a @ a.T  # (B, B)
        terms["pairwise"] = config.pairwise_weight * torch.stack(
            [(truncate(fa, d) @ truncate(fa, d).T - target).abs().mean() for d in dims])
    if nn is not None:
        nb = xt[torch.from_numpy(nn).to(xt.device)[idx]]  # (B, k, D)
        target = torch.einsum("bd,bkd->bk", a, nb)  # (B, k)
        fnb = module(nb.reshape(-1, nb.shape[-1])).reshape(nb.shape)  # (B, k, D)
        if config.neighbour_weight > 0:
            terms["neighbours"] = config.neighbour_weight * torch.stack(
                [(torch.einsum("bd,bkd->bk", truncate(fa, d), truncate(fnb, d)) - target).abs().mean()
                 for d in dims])
        if config.distribution_weight > 0:
            terms["distribution"] = config.distribution_weight * _distribution(a, nb, fa, fnb, dims, config)
    return terms


def _distribution(a: Any, nb: Any, fa: Any, fnb: Any, dims: Sequence[int], config: FitConfig) -> Any:
    """KL(full || prefix) of each row's softmax scores over its own neighbours and the other rows of the
    batch, per dim: ``(n_dims,)``. Order, not values: a prefix may score everything higher or lower."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from mrl.prefix import truncate

    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)  # a row is not its own candidate

    def scores(x: Any, xn: Any) -> Any:  # (B, k + B): own neighbours, then the batch
        own = torch.einsum("bd,bkd->bk", x, xn)
        return config.distribution_scale * torch.cat([own, (x @ x.T).masked_fill(eye, -1e4)], dim=1)

    teacher = F.softmax(scores(a, nb), dim=-1)
    return torch.stack([F.kl_div(F.log_softmax(scores(truncate(fa, d), truncate(fnb, d)), dim=-1), teacher,
                                 reduction="batchmean") for d in dims])


def _ranking(module: Any, q: Any, p: Any, dims: Sequence[int], scale: float) -> Any:
    """InfoNCE of each query against the batch's positives, per dim: ``(n_dims,)``."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from mrl.prefix import truncate

    fq, fp = module(q), module(p)  # (B, D) each
    target = torch.arange(len(q), device=q.device)
    return torch.stack([F.cross_entropy(scale * truncate(fq, d) @ truncate(fp, d).T, target) for d in dims])


def heldout_scores(adaptor: Adaptor, x: np.ndarray, config: FitConfig,
                   pairs: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """Recall@10 per dim on rows the fit never saw, for the adaptor and for plain truncation.

    ``neighbour_recall@10``: held-out corpus rows' top 10 at the prefix vs their top 10 by full-dim
    search over the whole corpus. ``pair_recall@10``: held-out queries ranking their own positive
    among all held-out positives.
    """
    from mrl.prefix import exact_top_k, truncate

    _, held = _split(len(x), config.holdout, config.seed)
    out: dict[str, Any] = {"heldout_rows": int(len(held))}
    if len(held) == 0:
        return out
    k = min(10, len(x) - 1)
    _, truth = exact_top_k(x[held], x, k + 1)
    truth = truth[:, 1:]  # drop the row itself
    adapted = adaptor.transform(x)
    for name, data in (("truncate", x), ("adaptor", adapted)):
        scores = {}
        for d in adaptor.dims:
            _, got = exact_top_k(truncate(data[held], d), truncate(data, d), k + 1)
            scores[str(d)] = round(_overlap(got, truth, held), 4)
        out.setdefault("neighbour_recall@10", {})[name] = scores
    if pairs is not None:
        q, p = pairs  # unit rows already
        _, hp = _split(len(q), config.holdout, config.seed)
        if len(hp):
            for name, (qq, pp) in (("truncate", (q[hp], p[hp])),
                                   ("adaptor", (adaptor.transform(q[hp]), adaptor.transform(p[hp])))):
                scores = {}
                for d in adaptor.dims:
                    _, got = exact_top_k(truncate(qq, d), truncate(pp, d), min(10, len(hp)))
                    scores[str(d)] = round(float((got == np.arange(len(hp))[:, None]).any(axis=1).mean()), 4)
                out.setdefault("pair_recall@10", {})[name] = scores
            out["heldout_pairs"] = int(len(hp))
    return out


def _overlap(got: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> float:
    """Mean share of ``truth`` found in ``got`` (the query row itself ignored)."""
    hits = [len(set(g[g != r][: truth.shape[1]]) & set(t)) / truth.shape[1] for g, t, r in zip(got, truth, rows)]
    return float(np.mean(hits))
