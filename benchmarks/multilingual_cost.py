"""Training cost of multilingual-e5-small against MiniLM with the same multi-stream recipe, in one run.

    python benchmarks/multilingual_cost.py --steps 12 --out runs/multilingual-cost

Trains each model for ``--steps`` steps (English pairs of debian-pkgs plus debian-xling's
cross-lingual pairs, batch 32 each, every Matryoshka dim; the token table frozen for e5, as the
recipe has it) one after the other on one thread, and prints pairs/s (both streams' pairs), the
time per step and the ratio e5 / MiniLM. The first step (warm-up) is inside both figures alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run(model: str, steps: int, out: Path, freeze: bool) -> dict:
    cmd = [sys.executable, "-m", "mrl", "train", "--model", model, "--data", str(DATA / "debian-pkgs"),
           "--xling", str(DATA / "debian-xling"), "--xling-limit", "3000", "--dims", "32,64,128,256,384",
           "--max-steps", str(steps), "--seed", "42", "-o", str(out), "--overwrite", "--device", "cpu"]
    if freeze:
        cmd += ["--freeze", "embeddings"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "mrl.json").read_text())
    return {"model": model, "steps": steps, "pairs_per_step": summary["pairs_per_step"],
            "pairs_per_s": summary["pairs_per_s"], "train_time_s": summary["train_time_s"],
            "s_per_step": round(summary["train_time_s"] / steps, 2),
            "wall_s_with_loading": round(time.perf_counter() - t, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "multilingual-cost")
    args = p.parse_args()
    rows = [run("minilm", args.steps, args.out / "minilm", False),
            run("multilingual-e5-small", args.steps, args.out / "me5", True)]
    for r in rows:
        print(f"{r['model']:24s} {r['pairs_per_s']:6.2f} pairs/s  {r['s_per_step']:6.2f} s/step  "
              f"({r['pairs_per_step']} pairs per step; {r['wall_s_with_loading']} s with loading)")
    ratio = rows[0]["pairs_per_s"] / rows[1]["pairs_per_s"]
    print(f"multilingual-e5-small costs {ratio:.2f}x MiniLM per pair")
    doc = {"runs": rows, "e5_cost_x_minilm": round(ratio, 3)}
    (args.out / "cost.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
