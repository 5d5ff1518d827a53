"""The ceiling of a depth gate: each query's shallowest lossless level of a gated cascade's ladder.

    python benchmarks/gate_oracle.py --index runs/bench-funnel/real-epoch1-count/mrl-index \
        --queries runs/embeddings/epoch1-mrl-orth-w12/queries-dev.npy --cascade binary@256:1000,384:10

For every query, the rescoring depths of the ladder mrl's gate chooses from (none, n/32 ... n)
are tried, and the shallowest that returns as many true neighbours as the whole shortlist is
the oracle's choice. Prints the mean depth and the share of queries per level: a learned gate
that rescores more than this on average loses to the oracle by the difference.
"""

from __future__ import annotations

import argparse

import numpy as np

from mrl.index import MrlIndex
from mrl.index.cascade import parse_cascade
from mrl.index.tuning.adaptive import ladder, level_data
from mrl.index.tuning.recall import per_query_recall, true_neighbours
from mrl.prefix import unit_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True)
    p.add_argument("--queries", required=True, help=".npy of query vectors in the index's space")
    p.add_argument("--cascade", required=True, help="the gated cascade's fixed form, e.g. binary@256:1000,384:10")
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("-k", type=int, default=10)
    args = p.parse_args()
    index = MrlIndex.open(args.index)
    xq = unit_rows(np.load(args.queries))[: args.nq]
    plan = parse_cascade(args.cascade, index.dim)
    levels = ladder(plan.first[1], plan.stages[1][1])
    _, ids = level_data(index, xq, args.k, plan, levels)
    truth = true_neighbours(index, xq, args.k)
    recalls = np.stack([per_query_recall(i, truth) for i in ids], axis=1)  # (nq, L)
    lossless = np.argmax(recalls >= recalls[:, -1:] - 1e-9, axis=1)
    depth = np.asarray(levels)[lossless]
    shares = np.bincount(lossless, minlength=len(levels)) / len(xq)
    print(f"{args.cascade}: recall of the whole shortlist {recalls[:, -1].mean():.4f}; oracle mean depth "
          f"{depth.mean():.1f} of {levels[-1]}")
    print("level share: " + ", ".join(f"{lv}: {s:.3f}" for lv, s in zip(levels, shares)))


if __name__ == "__main__":
    main()
