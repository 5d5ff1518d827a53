"""Training throughput: one process vs ``torchrun`` data-parallel, same global batch, same steps.

    python benchmarks/ddp_throughput.py --data ../shared/data/debian-pkgs --steps 30 --batch-size 32 --procs 2

Runs ``mrl train`` once in one process (all cores to torch) and once under ``torchrun
--nproc-per-node N`` (cores split between the processes), reads ``pairs_per_s`` from each run's
``mrl.json`` (training time only, set-up excluded) and prints the ratio. On a CPU machine the
processes share the same cores, so this measures the cost of the gathers and gradient
averaging, not a speed-up; on N GPUs each process has its own device.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path


def run(cmd: list[str], env: dict[str, str]) -> None:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{r.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/ddp-throughput"))
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    common = ["train", "--model", args.model, "--data", args.data, "--batch-size", str(args.batch_size),
              "--max-steps", str(args.steps), "--dims", "32,64,128,256,384", "--seed", "42"]
    results = {}
    for name, procs in (("1 process", 1), (f"{args.procs} processes", args.procs)):
        out = args.out / f"p{procs}"
        shutil.rmtree(out, ignore_errors=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(max(1, cores // procs))}
        if procs == 1:
            cmd = [sys.executable, "-m", "mrl", *common, "--output", str(out)]
        else:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), "--master-port",
                   str(port), "-m", "mrl", *common, "--output", str(out)]
        run(cmd, env)
        meta = json.loads((out / "mrl.json").read_text())
        results[name] = meta["pairs_per_s"]
        print(f"{name}: {meta['pairs_per_s']:.2f} pairs/s ({meta['train_time_s']:.1f} s for {args.steps} steps "
              f"of {args.batch_size}; OMP_NUM_THREADS={env['OMP_NUM_THREADS']})", flush=True)
    one, many = results["1 process"], results[f"{args.procs} processes"]
    print(f"ratio {args.procs} processes / 1 process: {many / one:.2f}x on {cores} CPU cores")


if __name__ == "__main__":
    main()
