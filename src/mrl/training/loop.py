"""The training loop: one encoder pass per column, the objective of the config, checkpoints, per-term logs."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from contextlib import nullcontext
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl.data.beir import BeirDataset, load_beir
from mrl.data.pairs import load_training_data
from mrl.data.parallel import load_parallel
from mrl.data.xling_pairs import load_xling_pairs, xling_files
from mrl.encoders.head import add_linear_head, fix_head
from mrl.encoders.model import embedding_dim, load_model, preprocess
from mrl.errors import MrlError
from mrl.eval.evaluate import evaluate, subsample
from mrl.training.checkpoint import (
    load_latest,
    remove_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mrl.training.config import TrainConfig
from mrl.training.distributed import Distributed
from mrl.training.freeze import freeze
from mrl.training.objective import Objective, build_objective, distill_kind

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


def data_fingerprint(cfg: TrainConfig) -> str:
    """sha256 over the training data's files: a pairs file, or a BEIR folder's corpus, queries and the
    split's qrels; and every --parallel and --xling file."""
    from mrl._fs import sha256

    files: list[Path] = []
    if cfg.data is not None:
        data = Path(cfg.data)
        files += [data] if data.is_file() else sorted(
            [*data.glob("corpus.jsonl*"), *data.glob("queries.jsonl*"), *data.glob(f"qrels/{cfg.split}.tsv")])
    files += [Path(p) for p in cfg.parallel or ()]
    files += xling_files(list(cfg.xling)) if cfg.xling else []
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{sha256(f)}\n".encode())
    return h.hexdigest()


def _check_same_run(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """A checkpoint only resumes the run that wrote it: same data, model and hyper-parameters."""
    ignore = {"resume", "device", "eval_every", "checkpoint_every", "keep_checkpoints", "remove_checkpoints",
              "log_every", "teacher_cache"}
    now = cfg.to_dict()
    # an option added since the checkpoint was written has its default there
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    differ = [k for k in now if k not in ignore and saved.get(k, defaults.get(k)) != now[k]]
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


@dataclass
class _Run:
    """Everything a training run holds between its steps."""

    cfg: TrainConfig
    dist: Distributed
    progress: bool
    out: Path
    model: Any
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    dev: BeirDataset | None
    frozen: frozenset[str]  # names of the parameters that do not train (not in checkpoints)
    counts: dict[str, Any]  # parallel and cross-lingual records per language, for the summary
    teacher_s: float
    start_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    t0: float = 0.0
    n_tokens: int = 0

    @property
    def total(self) -> int:
        """Steps of the run: the first stream's plan sets the length; the others follow it."""
        return self.objective.streams[0].plan.total

    @property
    def log_path(self) -> Path:
        return self.out / "train_log.jsonl"

    def say(self, message: str) -> None:
        _say(self.progress, message)

    def log(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        with self.log_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def _train(cfg: TrainConfig, progress: bool, dist: Distributed) -> dict[str, Any]:
    run = _setup(cfg, progress, dist)
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=run.total, initial=run.start_step, desc="training", unit="step")
    run.t0 = time.perf_counter() - run.elapsed
    run.model.train()
    for step in range(run.start_step, run.total):
        loss = _step(run, step)
        done = step + 1
        if dist.is_main and (done % cfg.log_every == 0 or done == run.total):
            run.log({"kind": "train", "step": done, "loss": loss, "lr": run.scheduler.get_last_lr()[0],
                     **run.objective.logs()})
        if pbar is not None:
            pbar.update(1)
            dims = run.objective.dims
            pbar.set_postfix({f"L{d}": f"{v:.3f}" for d, v in run.objective.short().items()
                              if d in (dims[0], dims[-1])})
        if run.dev is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < run.total:
            _evaluate(run, done)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < run.total:
            _checkpoint(run, done)
    if pbar is not None:
        pbar.close()
    return _finish(run)


def _setup(cfg: TrainConfig, progress: bool, dist: Distributed) -> _Run:
    """Data, model (head, frozen parts), objective with its streams, optimizer; then the checkpoint to resume."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed)
    pairs = load_training_data(cfg.data, cfg.split) if cfg.data else None
    parallel = load_parallel(list(cfg.parallel), cfg.parallel_limit, cfg.seed) if cfg.parallel else None
    xling = load_xling_pairs(list(cfg.xling), list(cfg.xling_langs or ()), cfg.xling_limit,
                             cfg.seed) if cfg.xling else None
    dist.check_same("options", cfg.to_dict())
    dist.check_same("training data", [[len(pairs), pairs.anchors[:50], pairs.positives[-50:]] if pairs else [],
                                      [len(parallel), parallel.sources[:50]] if parallel else [],
                                      [len(xling), xling.queries[:50]] if xling else []])
    dist.share(list(range(cfg.batch_size)))  # the batch must split over the processes
    dev = _dev_set(cfg) if dist.is_main else None  # the dev evaluation runs once
    model = load_model(cfg.model, dist.device(cfg.device), cfg.max_seq_length)
    head_params: list[torch.nn.Parameter] = []
    if cfg.head in ("linear", "orthogonal"):
        model, head_params = add_linear_head(model, orthogonal=cfg.head == "orthogonal")
    frozen = freeze(model, cfg.freeze, cfg.model)
    t_teacher = time.perf_counter()
    objective = build_objective(cfg, embedding_dim(model), pairs, parallel,
                                lambda texts: _token_lengths(model, list(texts), cfg.max_seq_length),
                                str(model.device), say=(lambda m: _say(progress, m)) if dist.is_main else None,
                                barrier=dist.barrier, xling=xling)
    teacher_s = time.perf_counter() - t_teacher
    optimizer, scheduler = _optimizer(cfg, model, head_params, objective)
    counts = {"parallel": parallel.counts() if parallel is not None else None,
              "xling": xling.counts() if xling is not None else None}
    run = _Run(cfg, dist, progress, out, model, objective, optimizer, scheduler, dev, frozen, counts, teacher_s)
    if cfg.resume:
        _resume(run)
    # The log restarts from the checkpoint's history: lines the killed run wrote after it go.
    if dist.is_main:
        run.log_path.write_text("".join(json.dumps(h) + "\n" for h in run.history))
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return run


def _optimizer(cfg: TrainConfig, model: Any, head_params: list[torch.nn.Parameter],
               objective: Objective) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over what trains (the head and the losses' projections at their own rate); linear warm-up and decay."""
    from transformers import get_linear_schedule_with_warmup

    head_ids = {id(p) for p in head_params}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]}]
    extra = head_params + list(objective.modules().parameters())  # the head and the losses' projections
    if extra:
        groups.append({"params": extra, "lr": cfg.head_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = objective.streams[0].plan.total
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)


def _resume(run: _Run) -> None:
    """Load the newest readable checkpoint of this run (model, losses, optimizer, schedule, RNG, log)."""
    state = load_latest(run.out, say=run.say)
    if state is None:
        run.say(f"--resume: no checkpoint in {run.out}/checkpoints yet; starting from step 0")
        return
    _check_same_run(state["config"], run.cfg)
    if state.get("data_sha") not in (None, data_fingerprint(run.cfg)):  # (checkpoints before this have none)
        raise MrlError(f"--resume: the training data changed since the checkpoint in {run.out} was written "
                       "(its files' contents differ); resuming would mix two data sets: use another --output")
    missing, unexpected = run.model.load_state_dict(state["model"], strict=False)
    if unexpected or set(missing) - run.frozen:
        raise MrlError(f"--resume: the checkpoint in {run.out} does not fit the model (missing "
                       f"{sorted(set(missing) - run.frozen)[:3]}, unexpected {sorted(unexpected)[:3]})")
    run.objective.modules().load_state_dict(state.get("loss", {}))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    run.start_step, run.history, run.elapsed = state["step"], state["history"], state["elapsed"]
    run.say(f"--resume: continuing from the checkpoint of step {run.start_step} of {run.total} in {run.out}")


def _step(run: _Run, step: int) -> float:
    """One update: a batch of every stream, each column encoded with its prompt, the summed loss, the step."""
    model, dist, device = run.model, run.dist, run.model.device
    batches = []
    for stream in run.objective.streams:
        global_idx = stream.plan.batch(step)
        idx = dist.share(global_idx)  # the whole global batch when single-process
        features = []
        for column, kind in zip(stream.columns, stream.kinds):
            feats = preprocess(model, [column[i] for i in idx], device, kind)
            run.n_tokens += int(feats["input_ids"].numel())
            features.append(feats)
        batches.append((features, global_idx))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with autocast:
        # in-batch negatives over the global batch: every rank's share is gathered (no-op single-process)
        embedded = [([dist.gather(model(x)["sentence_embedding"]) for x in f], idx) for f, idx in batches]
        loss = run.objective(embedded)
    if not torch.isfinite(loss.detach()):
        raise MrlError(f"step {step + 1}: the training loss is {float(loss.detach())} (not finite); the run "
                       "stopped before the update, the last checkpoint is kept (lower --lr, check the data)")
    loss.backward()
    # = the single-process gradient of the global batch
    dist.average_gradients([*model.parameters(), *run.objective.modules().parameters()])
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _evaluate(run: _Run, done: int) -> None:
    assert run.dev is not None
    scores = _dev_scores(run.model, run.dev, run.objective.dims)
    run.log({"kind": "dev", "step": done, "ndcg@10": scores})
    logger.info("step %d dev nDCG@10 %s", done, scores)


def _checkpoint(run: _Run, done: int) -> None:
    """An atomic checkpoint of what trains (frozen parameters are left out: the base model has them)."""
    if run.dist.is_main:  # one writer; every rank resumes from its file
        weights = {k: v for k, v in run.model.state_dict().items() if k not in run.frozen}
        state = {"step": done, "model": weights, "loss": run.objective.modules().state_dict(),
                 "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "rng": rng_state(), "history": run.history, "elapsed": time.perf_counter() - run.t0,
                 "config": run.cfg.to_dict(), "data_sha": data_fingerprint(run.cfg)}
        save_checkpoint(run.out, done, state, run.cfg.keep_checkpoints)
    run.dist.barrier()


def _finish(run: _Run) -> dict[str, Any]:
    """The final dev score, the saved model and its summary (``mrl.json``)."""
    cfg, model, objective = run.cfg, run.model, run.objective
    train_time = time.perf_counter() - run.t0
    model.eval()
    dims = objective.dims
    final_scores = _dev_scores(model, run.dev, dims) if run.dev is not None else None
    fix_head(model)
    history, total, start = run.history, run.total, run.start_step
    per_step = cfg.batch_size * len(objective.streams)  # every stream gives a batch each step
    summary = {
        "matryoshka_dims": dims,
        "matryoshka_weights": objective.weights,
        "full_dim": embedding_dim(model),
        "base_model": cfg.model,
        "steps": total,
        "pairs_seen": total * per_step,
        "pairs_per_step": per_step,
        "train_time_s": round(train_time, 2),
        "pairs_per_s": round((total - start) * per_step / max(train_time - run.elapsed, 1e-9), 3),
        "padded_tokens_per_step": round(run.n_tokens / max(total - start, 1), 1),
        "final_dev_ndcg@10": final_scores,
        "final_train_loss": history[-1]["dim_loss"] if history else None,
        "final_train_terms": history[-1].get("terms") if history else None,
        "distillation": None if objective.teacher is None and not cfg.resolved_distill_weight else {
            "teacher": objective.teacher.name if objective.teacher else "self (full dimension)",
            "teacher_dim": objective.teacher.dim if objective.teacher else None,
            "kind": distill_kind(cfg) if objective.teacher else "kl", "weight": cfg.resolved_distill_weight,
            "teacher_encode_s": round(run.teacher_s, 2)},
        "parallel_records": run.counts["parallel"],
        "xling_records": run.counts["xling"],
        "config": cfg.to_dict(),
    }
    if run.dist.is_main:
        model.save(str(run.out))
        (run.out / MRL_META).write_text(json.dumps(summary, indent=2) + "\n")
        if cfg.remove_checkpoints:
            remove_checkpoints(run.out)
    run.dist.barrier()
    return summary
