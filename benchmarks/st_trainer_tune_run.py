"""The peer on the tuning proxy: sentence-transformers' trainer with mrl's loss (equal to
MatryoshkaLoss(MNRL), tests/test_loss.py), 261 steps of 32 pairs, for any seed.

    python benchmarks/st_trainer_tune_run.py runs/tune/st-mrl-s7 7 && benchmarks/tune_train.sh st-mrl-s7
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments  # noqa: E402
from sentence_transformers.sentence_transformer.training_args import BatchSamplers  # noqa: E402

from mrl.data.pairs import pairs_from_beir  # noqa: E402
from mrl.encoders.model import load_model  # noqa: E402
from mrl.losses import MatryoshkaInfoNCELoss  # noqa: E402


def main() -> None:
    out, seed = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 42
    data = os.environ.get("DATA", "../shared/data/debian-pkgs")
    model = load_model("minilm", max_seq_length=128)
    pairs = pairs_from_beir(data, "train")
    ds = Dataset.from_dict({"anchor": pairs.anchors, "positive": pairs.positives})
    args = SentenceTransformerTrainingArguments(
        output_dir=out + "-trainer", per_device_train_batch_size=32, max_steps=261, learning_rate=5e-5,
        warmup_ratio=0.1, seed=seed, save_strategy="no", report_to="none", logging_steps=50,
        batch_sampler=BatchSamplers.NO_DUPLICATES, dataloader_drop_last=True)
    loss = MatryoshkaInfoNCELoss(model, [32, 64, 128, 256, 384])
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss).train()
    model.save(out)
    with open(os.path.join(out, "mrl.json"), "w") as f:  # tune_train.sh then only evaluates
        f.write("{}\n")


if __name__ == "__main__":
    main()
