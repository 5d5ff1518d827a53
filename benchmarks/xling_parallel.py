"""Build the multilingual training files from debian-xling: per language, the translated synopses
(short, like the cross-lingual queries) and a seeded sample of the translated long descriptions.

    python benchmarks/xling_parallel.py --xling ../shared/data/debian-xling --out runs/xling/parallel \
        --descriptions 1500

Writes <out>/<lang>.jsonl.gz in the plain parallel form {"source", "target", "id", "lang"} that
`mrl train --parallel` reads. Train packages only (the shared files hold no dev/test package).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

from mrl.data.io import read_jsonl


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xling", default="../shared/data/debian-xling")
    p.add_argument("--out", required=True)
    p.add_argument("--descriptions", type=int, default=1500, help="long descriptions per language (0: none)")
    p.add_argument("--no-synopses", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(args.xling).glob("*.jsonl.gz")):
        lang = path.name.removesuffix(".jsonl.gz")
        records = [r for _, r in read_jsonl(path)]
        rows = []
        if not args.no_synopses:
            rows += [{"source": r["synopsis_en"], "target": r["synopsis"], "id": r["id"], "lang": lang}
                     for r in records if r.get("synopsis") and r.get("synopsis_en")
                     and r["synopsis"].strip() != r["synopsis_en"].strip()]
        picked = random.Random(args.seed).sample(records, min(args.descriptions, len(records)))
        rows += [{"source": r["en"], "target": r["text"], "id": r["id"], "lang": lang} for r in picked]
        with gzip.open(out / f"{lang}.jsonl.gz", "wt", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{lang}: {len(rows)} records ({len(rows) - len(picked)} synopses, {len(picked)} descriptions)")


if __name__ == "__main__":
    main()
