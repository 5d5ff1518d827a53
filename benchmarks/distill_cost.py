"""Step time of distillation with a cached teacher against InfoNCE alone (same batches, same model).

    OMP_NUM_THREADS=2 python benchmarks/distill_cost.py --pairs 2000 --steps 30 --repeats 3 --out runs/distill-cost

A pairs file of the first N train pairs of debian-pkgs is written; the teacher (default: MiniLM
itself) encodes its texts once into a cache (that time is reported), then InfoNCE-only and
InfoNCE + distillation runs alternate, so both see the same machine load. Prints the ratio of
their training times (the teacher's encoding excluded: it is done once, before step 1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from mrl.data.pairs import pairs_from_beir
from mrl.training.config import TrainConfig
from mrl.training.loop import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/debian-pkgs")
    p.add_argument("--model", default="minilm")
    p.add_argument("--teacher", default="minilm")
    p.add_argument("--distill", default="kl", choices=["kl", "mse"])
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="runs/distill-cost")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = pairs_from_beir(args.data, "train")
    path = out / "pairs.jsonl"
    with path.open("w") as f:
        for i in range(min(args.pairs, len(pairs))):
            f.write(json.dumps({"anchor": pairs.anchors[i], "positive": pairs.positives[i]}) + "\n")
    common = dict(model=args.model, data=str(path), dims=(32, 64, 128, 256, 384), batch_size=32,
                  max_steps=args.steps, seed=42, teacher_cache=str(out / "teacher-cache"))
    t = time.perf_counter()
    first = train(TrainConfig(**common, output=str(out / "warm"), teacher=args.teacher, distill=args.distill),
                  progress=False)
    encode_s = first["distillation"]["teacher_encode_s"]
    print(f"teacher {args.teacher}: {encode_s:.1f} s to encode the texts once (cached); warm-up run "
          f"{time.perf_counter() - t:.0f} s")
    rows = []
    for rep in range(args.repeats):
        times = {}
        for name, extra in (("infonce", {}), ("distill", {"teacher": args.teacher, "distill": args.distill})):
            run = out / f"{name}-{rep}"
            shutil.rmtree(run, ignore_errors=True)
            s = train(TrainConfig(**common, output=str(run), **extra), progress=False)
            times[name] = s["train_time_s"]
        rows.append(times)
        print(f"repeat {rep}: InfoNCE {times['infonce']:.1f} s, + {args.distill} distillation "
              f"{times['distill']:.1f} s: {times['distill'] / times['infonce']:.3f}x")
    total = {k: sum(r[k] for r in rows) for k in rows[0]}
    print(f"all repeats: {total['distill'] / total['infonce']:.3f}x the InfoNCE-only step time "
          f"({args.steps} steps of 32 pairs, {args.repeats} repeats)")
    (out / "result.json").write_text(json.dumps({"teacher_encode_s": encode_s, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
