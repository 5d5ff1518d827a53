"""The training loop: one encoder pass per column, the objective of the config, checkpoints, per-term logs."""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl.data.beir import BeirDataset, load_beir
from mrl.data.pairs import load_training_data
from mrl.data.parallel import load_parallel
from mrl.encoders.head import add_linear_head, fix_head
from mrl.encoders.model import TextKind, embedding_dim, load_model, preprocess
from mrl.errors import MrlError
from mrl.eval.evaluate import evaluate, subsample
from mrl.training.batching import plan_epoch
from mrl.training.checkpoint import (
    load_latest,
    remove_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mrl.training.config import TrainConfig
from mrl.training.distributed import Distributed
from mrl.training.objective import build_objective, distill_kind

logger = logging.getLogger(__name__)

MRL_META = "mrl.json"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _token_lengths(model: Any, texts: list[str], max_len: int) -> list[int]:
    tok = model.tokenizer
    lengths: list[int] = []
    for i in range(0, len(texts), 4096):
        enc = tok(texts[i : i + 4096], truncation=True, max_length=max_len, add_special_tokens=True)
        lengths.extend(len(x) for x in enc["input_ids"])
    return lengths


class _Plan:
    """The batch of every step, derived from the seed alone so that a resumed run replays it.

    ``keys`` keep duplicates out of a batch (the positives' ids; the parallel sources);
    ``offset`` gives the parallel data a shuffle of its own.
    """

    def __init__(self, keys: list[str], lengths: list[int], cfg: TrainConfig, what: str, offset: int = 0) -> None:
        self.keys, self.lengths, self.cfg, self.offset = keys, lengths, cfg, offset
        self._epochs: dict[int, list[list[int]]] = {}
        self.per_epoch = len(self.epoch(0))
        if self.per_epoch == 0:
            raise MrlError(f"{what}: {len(keys)} examples make no full batch of {cfg.batch_size}")
        self.total = cfg.max_steps if cfg.max_steps else cfg.epochs * self.per_epoch

    def epoch(self, e: int) -> list[list[int]]:
        if e not in self._epochs:
            self._epochs = {e: plan_epoch(self.lengths, self.keys, self.cfg.batch_size,
                                          self.cfg.seed + self.offset + e, self.cfg.group_by_length)}
        return self._epochs[e]

    def batch(self, step: int) -> list[int]:
        return self.epoch(step // self.per_epoch)[step % self.per_epoch]


def _dev_set(cfg: TrainConfig) -> BeirDataset | None:
    if not cfg.dev_data:
        return None
    return subsample(load_beir(cfg.dev_data, cfg.dev_split), cfg.dev_max_queries, cfg.dev_max_docs, cfg.seed)


def _dev_scores(model: Any, dev: BeirDataset, dims: list[int]) -> dict[str, float]:
    was_training = model.training
    model.eval()
    report = evaluate(model, dev, dims, show_progress=False)
    model.train(was_training)
    return {str(d): report.results["truncate"][d]["ndcg@10"] for d in dims}


def _say(progress: bool, message: str) -> None:
    """A line for the person running the command (on stderr beside the progress bar), else a log record."""
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(message)
    else:
        logger.info(message)


def _check_same_run(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """A checkpoint only resumes the run that wrote it: same data, model and hyper-parameters."""
    ignore = {"resume", "device", "eval_every", "checkpoint_every", "keep_checkpoints", "remove_checkpoints",
              "log_every", "teacher_cache"}
    now = cfg.to_dict()
    differ = [k for k in now if k not in ignore and saved.get(k) != now[k]]
    if differ:
        k = differ[0]
        raise MrlError(f"--resume: the checkpoint in {cfg.output} was written with {k}={saved.get(k)!r}, "
                       f"this run has {k}={now[k]!r}; use the same options or another --output")


def train(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` with its Matryoshka objective and save it in Sentence-Transformers format.

    The objective comes from the config (:mod:`mrl.training.objective`): InfoNCE on the pairs,
    distillation from a teacher or from the full dimension, parallel sentences.

    Under ``torchrun --nproc-per-node N -m mrl train ...`` the run is data-parallel (see
    :mod:`mrl.training.distributed`); ``--batch-size`` is the global batch.

    Returns:
        The run summary also written to ``<output>/mrl.json``.
    """
    dist = Distributed.from_env()
    try:
        return _train(cfg, progress and dist.is_main, dist)
    finally:
        dist.close()


def _train(cfg: TrainConfig, progress: bool, dist: Distributed) -> dict[str, Any]:
    from transformers import get_linear_schedule_with_warmup

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed)
    pairs = load_training_data(cfg.data, cfg.split) if cfg.data else None
    parallel = load_parallel(list(cfg.parallel), cfg.parallel_limit, cfg.seed) if cfg.parallel else None
    dist.check_same("options", cfg.to_dict())
    dist.check_same("training data", [len(pairs), pairs.anchors[:50], pairs.positives[-50:]] if pairs else
                    [len(parallel), parallel.sources[:50]] if parallel else [])
    dist.share(list(range(cfg.batch_size)))  # the batch must split over the processes
    dev = _dev_set(cfg) if dist.is_main else None  # the dev evaluation runs once
    model = load_model(cfg.model, dist.device(cfg.device), cfg.max_seq_length)
    head_params: list[torch.nn.Parameter] = []
    if cfg.head in ("linear", "orthogonal"):
        model, head_params = add_linear_head(model, orthogonal=cfg.head == "orthogonal")
    device = model.device
    t_teacher = time.perf_counter()
    objective = build_objective(cfg, embedding_dim(model), pairs, parallel, str(device),
                                say=(lambda m: _say(progress, m)) if dist.is_main else None, barrier=dist.barrier)
    teacher_s = time.perf_counter() - t_teacher
    dims = objective.dims
    plan = par_plan = None
    if pairs is not None:
        plan = _Plan(pairs.keys, _token_lengths(model, pairs.positives, cfg.max_seq_length), cfg, str(cfg.data))
    if parallel is not None:
        par_plan = _Plan(parallel.sources, _token_lengths(model, parallel.targets, cfg.max_seq_length), cfg,
                         "--parallel", offset=1_000_003)
    plan = plan or par_plan
    assert plan is not None
    head_ids = {id(p) for p in head_params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in head_ids]}]
    extra = head_params + list(objective.modules().parameters())  # the head and the losses' projections
    if extra:
        groups.append({"params": extra, "lr": cfg.head_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * plan.total), plan.total)
    log_path = out / "train_log.jsonl"
    start_step, history, elapsed = 0, [], 0.0
    if cfg.resume:
        state = load_latest(out, say=lambda message: _say(progress, message))
        if state is not None:
            _check_same_run(state["config"], cfg)
            model.load_state_dict(state["model"])
            objective.modules().load_state_dict(state.get("loss", {}))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            start_step, history, elapsed = state["step"], state["history"], state["elapsed"]
            _say(progress, f"--resume: continuing from the checkpoint of step {start_step} of {plan.total} in {out}")
        else:
            _say(progress, f"--resume: no checkpoint in {out}/checkpoints yet; starting from step 0")
    # The log restarts from the checkpoint's history: lines the killed run wrote after it go.
    if dist.is_main:
        log_path.write_text("".join(json.dumps(h) + "\n" for h in history))
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    )
    columns = [pairs.anchors, pairs.positives, *pairs.negatives] if pairs is not None else []
    par_columns = [parallel.sources, parallel.targets] if parallel is not None else []
    # the model's prompt per column: anchors are queries, positives and negatives documents; parallel
    # sentences are a symmetric task, which e5 encodes as queries on both sides
    kinds: list[list[TextKind]] = [["query"] + ["document"] * (len(columns) - 1), ["query"] * len(par_columns)]
    model.train()
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=plan.total, initial=start_step, desc="training", unit="step")
    t0 = time.perf_counter() - elapsed
    n_tokens = 0
    for step in range(start_step, plan.total):
        batches = []
        for cols, col_kinds, p in ((columns, kinds[0], plan if pairs is not None else None),
                                   (par_columns, kinds[1], par_plan)):
            if p is None or not cols:
                batches.append((None, None))
                continue
            global_idx = p.batch(step)
            idx = dist.share(global_idx)  # the whole global batch when single-process
            features = []
            for col, kind in zip(cols, col_kinds):
                feats = preprocess(model, [col[i] for i in idx], device, kind)
                n_tokens += int(feats["input_ids"].numel())
                features.append(feats)
            batches.append((features, global_idx))
        with autocast:
            # in-batch negatives over the global batch: every rank's share is gathered (no-op single-process)
            embedded = [None if f is None else [dist.gather(model(x)["sentence_embedding"]) for x in f]
                        for f, _ in batches]
            loss = objective(embedded[0], batches[0][1], embedded[1], batches[1][1])
        if not torch.isfinite(loss.detach()):
            raise MrlError(f"step {step + 1}: the training loss is {float(loss.detach())} (not finite); the run "
                           "stopped before the update, the last checkpoint is kept (lower --lr, check the data)")
        loss.backward()
        # = the single-process gradient of the global batch
        dist.average_gradients([*model.parameters(), *objective.modules().parameters()])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if dist.is_main and (done % cfg.log_every == 0 or done == plan.total):
            entry = {"kind": "train", "step": done, "loss": float(loss.detach()),
                     "lr": scheduler.get_last_lr()[0], **objective.logs()}
            history.append(entry)
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix({f"L{d}": f"{v:.3f}" for d, v in objective.short().items()
                              if d in (dims[0], dims[-1])})
        if dev is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < plan.total:
            scores = _dev_scores(model, dev, dims)
            entry = {"kind": "dev", "step": done, "ndcg@10": scores}
            history.append(entry)
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            logger.info("step %d dev nDCG@10 %s", done, scores)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < plan.total:
            if dist.is_main:  # one writer; every rank resumes from its file
                state = {"step": done, "model": model.state_dict(), "loss": objective.modules().state_dict(),
                         "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "rng": rng_state(), "history": history,
                         "elapsed": time.perf_counter() - t0, "config": cfg.to_dict()}
                save_checkpoint(out, done, state, cfg.keep_checkpoints)
            dist.barrier()
    if pbar is not None:
        pbar.close()
    train_time = time.perf_counter() - t0
    model.eval()
    final_scores = _dev_scores(model, dev, dims) if dev is not None else None
    fix_head(model)
    summary = {
        "matryoshka_dims": dims,
        "matryoshka_weights": objective.weights,
        "full_dim": embedding_dim(model),
        "base_model": cfg.model,
        "steps": plan.total,
        "pairs_seen": plan.total * cfg.batch_size,
        "train_time_s": round(train_time, 2),
        "pairs_per_s": round((plan.total - start_step) * cfg.batch_size / max(train_time - elapsed, 1e-9), 3),
        "padded_tokens_per_step": round(n_tokens / max(plan.total - start_step, 1), 1),
        "final_dev_ndcg@10": final_scores,
        "final_train_loss": history[-1]["dim_loss"] if history else None,
        "final_train_terms": history[-1].get("terms") if history else None,
        "distillation": None if objective.teacher is None and not cfg.resolved_distill_weight else {
            "teacher": objective.teacher.name if objective.teacher else "self (full dimension)",
            "teacher_dim": objective.teacher.dim if objective.teacher else None,
            "kind": distill_kind(cfg) if objective.teacher else "kl", "weight": cfg.resolved_distill_weight,
            "teacher_encode_s": round(teacher_s, 2)},
        "parallel_records": parallel.counts() if parallel is not None else None,
        "config": cfg.to_dict(),
    }
    if dist.is_main:
        model.save(str(out))
        (out / MRL_META).write_text(json.dumps(summary, indent=2) + "\n")
        if cfg.remove_checkpoints:
            remove_checkpoints(out)
    dist.barrier()
    return summary
