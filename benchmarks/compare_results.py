"""Search results before and after a change of the index code: ids and scores, cascade by cascade (issue 26).

    python benchmarks/compare_results.py dump --out DIR [--n 60000 --dim 384 --seed 0 --dups 0.02]
        build an index with whatever ``mrl`` is importable, run every search below, save
        DIR/results.npz and keep the index folders (DIR/index, DIR/str-index, DIR/mutated)
    python benchmarks/compare_results.py compare A B
        per search: ids identical, scores identical (max |diff|), and where ids differ whether
        every difference is among equal scores (a tie: "tie-only")
    python benchmarks/compare_results.py reopen OLD_DIR
        open the folders another mrl wrote (and a copy of DIR/index with its manifest turned into
        version 1) with this mrl and compare their searches with OLD_DIR's dump

Run the same file against two checkouts: ``PYTHONPATH=OLD/src python ... dump --out /tmp/a`` and
``PYTHONPATH=NEW/src python ... dump --out /tmp/b``, then ``compare /tmp/a /tmp/b``. It uses only
the API both have (MrlIndex.build/open/search/exact_search/keys/add/delete/compact). The corpus
is generated here (not imported from funnel_vs_peers.py, which needs the new package layout), so
both sides search the same vectors. Exit status 1 on a difference that is not a tie.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mrl.index import MrlIndex  # noqa: E402

K = 10
N_QUERIES = 500
STR_ROWS = 5000  # rows of the string-id index


# ---------------------------------------------------------------------------- data
def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def corpus(n: int, dim: int, seed: int, dups: float = 0.02) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xb, xq, extra)``: Gaussian clusters under a decaying spectrum (as funnel_vs_peers.clusters),
    ``dups`` of the rows exact copies of others (ties at every stage), 20 queries that are corpus rows,
    and 1,000 fresh rows to add later."""
    rng = np.random.default_rng(seed)
    scale = ((1.0 + np.arange(dim)) ** -0.5).astype(np.float32)
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32) * scale

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(len(centres), size=m)]
        return unit(x + rng.standard_normal((m, dim), dtype=np.float32) * scale)

    xb, xq, extra = draw(n), draw(N_QUERIES), draw(1000)
    src = rng.choice(n, size=int(n * dups), replace=False)
    xb[rng.permutation(n)[: len(src)]] = xb[src]  # exact duplicates (some overwrite each other: fine)
    xq[:20] = xb[rng.choice(n, size=20, replace=False)]
    return xb, xq, extra


def mutations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(deleted, replaced)`` ids; row ``replaced[j]`` gets the vector of row ``replaced[::-1][j]``."""
    rng = np.random.default_rng(seed + 1)
    return rng.choice(n, size=2000, replace=False), rng.choice(n, size=500, replace=False)


def cascades(n: int, dim: int) -> list[tuple[str, int]]:
    """``(cascade, k)`` searched on the main index: 2-3 shortlists per first stage, one-stage ones too."""
    out = ["int8@64:1000,384:10", "int8@64:200,128:50,384:10", "int8@64:10",
           "binary@128:2000,384:10", "binary@128:500,256:100,384:10", "binary@128:10",
           "hnsw@64:500,384:10", "hnsw@64:100/64,384:10", "hnsw@64:1000,128:100,384:10",
           "exact@64:1000,384:10", "exact@64:100,64:50,384:10", "exact@64:10",
           "256:200,384:10", "128:300,256:50,384:10"]
    if n >= 20000:
        out += ["ivf8@64:500,384:10", "ivf8@64:200/16,384:10", "ivf8@64:1000/64,128:200,384:10",
                "ivf8@64:300,64:100,384:10"]
    out = [(c, K) for c in out] + [("hnsw@64:2000,384:100", 100), ("binary@128:3000,384:100", 100)]
    return [(c.replace("384", str(dim)), k) for c, k in out]  # 384: the full width


# ---------------------------------------------------------------------------- searches
def run_searches(index: MrlIndex, xq: np.ndarray, todo: list[tuple[str, int]], prefix: str,
                 out: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """``out[prefix + name] = (scores, ids)``; ``exact`` / ``exact-64`` are exact_search, ``default``
    the index's default cascade."""
    for name, k in todo:
        if name == "exact":
            r = index.exact_search(xq, k)
        elif name == "exact-64":
            r = index.exact_search(xq, k, dim=64)
        else:
            r = index.search(xq, k, cascade=None if name == "default" else name)
        out[f"{prefix}{name}|k{k}"] = (np.asarray(r.scores), np.asarray(r.ids))


def str_keys(index: MrlIndex, ids: np.ndarray) -> np.ndarray:
    return np.array([["" if s is None else s for s in row] for row in index.keys(ids)])


def main_searches(n: int, dim: int) -> list[tuple[str, int]]:
    return cascades(n, dim) + [("exact", K), ("exact-64", K), ("exact", 100), ("default", K)]


def str_searches(dim: int) -> list[tuple[str, int]]:
    return [(f"int8@64:200,{dim}:10", K), (f"hnsw@64:300,{dim}:10", K), ("exact", K)]


def mut_searches(dim: int) -> list[tuple[str, int]]:
    return [(f"int8@64:1000,{dim}:10", K), (f"binary@128:2000,{dim}:10", K), (f"hnsw@64:500,{dim}:10", K),
            (f"exact@64:1000,{dim}:10", K), ("exact", K)]


def dump(args: argparse.Namespace) -> None:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    xb, xq, extra = corpus(args.n, args.dim, args.seed, args.dups)
    stages = ["int8@64", "binary@128", "hnsw@64", "exact@64"] + (["ivf8@64"] if args.n >= 20000 else [])
    res: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    t0 = time.perf_counter()
    index = MrlIndex.build(out_dir / "index", xb, first_stages=stages, overwrite=True)
    print(f"built {args.n} x {args.dim} ({', '.join(stages)}) in {time.perf_counter() - t0:.0f} s")
    run_searches(index, xq, main_searches(args.n, args.dim), "", res)

    # string ids: a small index of the first rows, ids "doc-<i>" in reverse order
    keys = [f"doc-{i}" for i in range(STR_ROWS)][::-1]
    sidx = MrlIndex.build(out_dir / "str-index", xb[:STR_ROWS], keys, first_stages=["int8@64", "hnsw@64"],
                          overwrite=True)
    before = len(res)
    run_searches(sidx, xq, str_searches(args.dim), "str:", res)
    for name in list(res)[before:]:
        res[name.replace("str:", "str-keys:")] = (res[name][0], str_keys(sidx, res[name][1]))

    # delete + add (new ids and replaced ones) + compact, on a copy of the index
    mut_dir = out_dir / "mutated"
    shutil.rmtree(mut_dir, ignore_errors=True)
    shutil.copytree(out_dir / "index", mut_dir)
    deleted, replaced = mutations(args.n, args.seed)
    mut = MrlIndex.open(mut_dir).delete(deleted.tolist())
    run_searches(mut, xq, mut_searches(args.dim), "deleted:", res)
    mut = mut.add(np.concatenate([extra, xb[replaced[::-1]]]),
                  np.concatenate([np.arange(args.n, args.n + len(extra)), replaced]))
    run_searches(mut, xq, mut_searches(args.dim), "added:", res)
    mut = mut.compact()
    run_searches(mut, xq, mut_searches(args.dim), "compacted:", res)

    names = list(res)
    arrays = {f"s{j}": res[nm][0] for j, nm in enumerate(names)} | {f"i{j}": res[nm][1] for j, nm in enumerate(names)}
    np.savez(out_dir / "results.npz", names=np.array(names), xq=xq, **arrays)
    (out_dir / "meta.json").write_text(json.dumps({"n": args.n, "dim": args.dim, "seed": args.seed, "dups": args.dups,
                                                   "mrl": str(Path(sys.modules["mrl"].__file__).parent)}))
    print(f"{len(names)} searches of {len(xq)} queries -> {out_dir}/results.npz "
          f"({time.perf_counter() - t0:.0f} s in all)")


# ---------------------------------------------------------------------------- comparing
def load(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    z = np.load(path / "results.npz") if path.is_dir() else np.load(path)
    return {str(nm): (z[f"s{j}"], z[f"i{j}"]) for j, nm in enumerate(z["names"])}


def duplicates(meta: dict) -> dict[str, np.ndarray]:
    """For the corpus before and after add(): every row's lowest row with the very same vector."""
    xb, _, extra = corpus(meta["n"], meta["dim"], meta["seed"], meta.get("dups", 0.02))
    after = np.concatenate([xb, extra])
    replaced = mutations(meta["n"], meta["seed"])[1]
    after[replaced] = xb[replaced[::-1]]
    out = {}
    for name, x in (("before", xb), ("after", after)):
        _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
        out[name] = first[inverse.ravel()]
    return out


def key_rows(keys: np.ndarray) -> np.ndarray:
    """String keys "doc-<i>" of the string-id index back to its rows (-1 for "")."""
    return np.array([[STR_ROWS - 1 - int(s[4:]) if s else -1 for s in row] for row in keys.tolist()], np.int64)


def classify(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], rep: np.ndarray
             ) -> tuple[str, float, int, int]:
    """``(status, max |score diff|, queries that differ, first query that differs / is different)``.

    identical: ids and scores bitwise equal. tie-only: scores bitwise equal; ids differ only inside
    runs of equal scores (the same ids, or exact duplicate rows, in another order), or in the row's
    last run, which the cut at k may split. dup-tie: as tie-only, and some exact duplicate row's score
    differs (by 1 ulp): the tie order put it at another place in a rescoring batch, and numpy's
    batched matmul rounds by place. different: anything else (exit status 1)."""
    (sa, ia), (sb, ib) = a, b
    if sa.shape != sb.shape or ia.shape != ib.shape:
        return "different", float("inf"), len(sa), 0
    diff = float(np.abs(np.nan_to_num(sa - sb, nan=np.inf)).max(initial=0.0))
    if ia.dtype.kind == "U":
        ia, ib = key_rows(ia), key_rows(ib)
    bad = np.flatnonzero((ia != ib).any(axis=1) | (sa != sb).any(axis=1))
    if not len(bad):
        return "identical", diff, 0, -1
    m = len(rep)
    ca, cb = (np.where((i >= 0) & (i < m), rep[np.clip(i, 0, m - 1)], np.where(i < 0, -1, i + m)) for i in (ia, ib))
    in_group = np.append(np.bincount(rep, minlength=m)[rep] > 1, False)  # rows with an exact duplicate
    k = sa.shape[1]
    for q in bad:
        moved = sa[q] != sb[q]
        if moved.any() and not ((ca[q] == cb[q]) & in_group[np.clip(ca[q], 0, m)] & (ca[q] >= 0)
                                & (np.abs(sa[q] - sb[q]) <= 1e-6))[moved].all():
            return "different", diff, len(bad), int(q)
        i = 0
        while i < k:
            j = i + 1
            while j < k and sa[q, j] == sa[q, i]:
                j += 1
            if sorted(ca[q, i:j]) != sorted(cb[q, i:j]) and not (j == k and (sb[q, i:j] == sa[q, i]).all()):
                return "different", diff, len(bad), int(q)
            i = j
    return ("tie-only" if np.array_equal(sa, sb) else "dup-tie"), diff, len(bad), int(bad[0])


def report(a: dict, b: dict, title: str, meta: dict) -> bool:
    """Print the table; True when every search is identical, tie-only or dup-tie."""
    reps = duplicates(meta)
    print(f"\n{title}\n{'search':48s} {'status':10s} {'max|dscore|':>11s} {'q differ':>8s} {'first q':>7s}")
    counts = {"identical": 0, "tie-only": 0, "dup-tie": 0, "different": 0, "missing": 0}
    for name in list(a) + [nm for nm in b if nm not in a]:
        if name not in a or name not in b:
            counts["missing"] += 1
            print(f"{name:48s} {'missing':10s} (only in {'A' if name in a else 'B'})")
            continue
        rep = reps["after" if name.startswith(("added:", "compacted:")) else "before"]
        status, diff, nrows, first = classify(a[name], b[name], rep)
        counts[status] += 1
        print(f"{name:48s} {status:10s} {diff:11.3g} {nrows:8d} {first if first >= 0 else '':>7}")
    print(f"{len(set(a) | set(b))} searches: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts["different"] == 0 and counts["missing"] == 0


def compare(args: argparse.Namespace) -> int:
    meta_a, meta_b = (json.loads((Path(p) / "meta.json").read_text()) for p in (args.a, args.b))
    if any(meta_a.get(f) != meta_b.get(f) for f in ("n", "dim", "seed", "dups")):
        sys.exit(f"the dumps are of different corpora: {meta_a} vs {meta_b}")
    title = f"compare {args.a} (A: {meta_a['mrl']}) with {args.b} (B: {meta_b['mrl']})"
    return 0 if report(load(Path(args.a)), load(Path(args.b)), title, meta_a) else 1


def reopen(args: argparse.Namespace) -> int:
    """Open OLD_DIR's folders with this mrl (and a copy of its index as manifest version 1) and search them."""
    old_dir = Path(args.old)
    old = load(old_dir)
    meta = json.loads((old_dir / "meta.json").read_text())
    n, dim = meta["n"], meta["dim"]
    xq = np.load(old_dir / "results.npz")["xq"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        v1 = Path(tmp) / "index-v1"
        shutil.copytree(old_dir / "index", v1)
        manifest = json.loads((v1 / "manifest.json").read_text())
        print(f"{old_dir}/index: manifest version {manifest.get('version')}, "
              f"checksum {'present' if 'checksum' in manifest else 'absent'}")
        manifest.pop("checksum", None)
        manifest["version"] = 1
        (v1 / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for label, folder in (("v2 (as written)", old_dir / "index"), ("v1 (crafted copy)", v1)):
            new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            index = MrlIndex.open(folder)
            run_searches(index, xq, main_searches(n, dim), "", new)
            title = f"reopen {folder} [{label}]: old dump (A) vs this mrl (B)"
            ok &= report({nm: old[nm] for nm in new}, new, title, meta)
    new = {}
    sidx = MrlIndex.open(old_dir / "str-index")
    run_searches(sidx, xq, str_searches(dim), "str:", new)
    for name in list(new):
        new[name.replace("str:", "str-keys:")] = (new[name][0], str_keys(sidx, new[name][1]))
    run_searches(MrlIndex.open(old_dir / "mutated"), xq, mut_searches(dim), "compacted:", new)
    title = f"reopen {old_dir}/str-index and /mutated: old dump (A) vs this mrl (B)"
    ok &= report({nm: old[nm] for nm in new}, new, title, meta)
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", required=True)
    d.add_argument("--n", type=int, default=60000)
    d.add_argument("--dim", type=int, default=384)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--dups", type=float, default=0.02, help="share of rows that are exact copies of others")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    r = sub.add_parser("reopen")
    r.add_argument("old")
    args = p.parse_args()
    if args.cmd == "dump":
        dump(args)
        sys.exit(0)
    sys.exit(compare(args) if args.cmd == "compare" else reopen(args))


if __name__ == "__main__":
    main()
