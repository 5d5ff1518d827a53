"""Encode a corpus into a folder of shards (:mod:`mrl.data.vectors`): resumable, and one share of
the shards per process under ``torchrun`` (rank ``r`` of ``w`` encodes shards ``r, r + w, ...``)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrl.data import vectors as shards
from mrl.errors import MrlError

if TYPE_CHECKING:
    from mrl.encoders.model import TextKind

logger = logging.getLogger(__name__)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, from torchrun's environment (else 0 of 1)."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise MrlError("RANK / WORLD_SIZE must be integers (as torchrun sets them)") from None
    if not 0 <= rank < world:
        raise MrlError(f"RANK={rank} is outside 0..WORLD_SIZE-1 ({world})")
    return rank, world


def _encoder(model_name: str, runtime: str, device: str | None, batch_size: int, kind: TextKind | None,
             threads: int | None = None) -> Callable[[list[str]], np.ndarray]:
    """texts -> full-dimension vectors, by PyTorch (``device``) or an exported ONNX graph, with ``threads``
    (None: the runtime's default)."""
    if runtime == "torch":
        from mrl.encoders.model import encode, load_model
        from mrl.encoders.runtime import set_torch_threads

        set_torch_threads(threads)
        model = load_model(model_name, device)
        return lambda texts: encode(model, texts, batch_size, kind=kind)
    from mrl.encoders.runtime import open_encoder

    encoder = open_encoder(model_name, runtime, threads)
    return lambda texts: encoder.encode(texts, kind or "document", batch_size)


def model_fingerprint(model_name: str) -> str:
    """sha256 over a model folder's files (names, sizes, contents of the weights and configs); a name
    that is not a folder (a hub name) is fingerprinted by its name."""
    from mrl._fs import sha256
    from mrl.encoders.model import resolve_model_path

    folder = Path(resolve_model_path(model_name))
    h = hashlib.sha256()
    if not folder.is_dir():
        h.update(model_name.encode())
        return h.hexdigest()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f"{path.relative_to(folder)}:{path.stat().st_size}:{sha256(path)}\n".encode())
    return h.hexdigest()


def texts_fingerprint(texts: list[str], ids: list[str], kind: str | None) -> str:
    h = hashlib.sha256(f"{kind}\n".encode())
    for i, t in zip(ids, texts):
        h.update(f"{i}\t{t}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def encode_shards(
    model_name: str,
    texts: list[str],
    ids: list[str],
    out: str | Path,
    source: str,
    shard_size: int = 10_000,
    batch_size: int = 64,
    device: str | None = None,
    say: Callable[[str], None] | None = None,
    kind: TextKind | None = None,
    runtime: str = "torch",
    threads: int | None = None,
) -> tuple[int, int, bool]:
    """Encode this process's missing shards; returns ``(written, skipped, complete)``.

    ``kind`` (query or document) picks the model's prompt for the texts (see :func:`mrl.encoders.encode`);
    ``runtime`` is ``torch`` or an exported one (``onnx``, ``onnx-int8``, ``openvino``, ``auto``: see
    ``mrl export``), run with ``threads`` (None: the runtime's default).

    ``complete`` is true once every shard of the folder is done (all ranks finished).
    """
    if shard_size < 1:
        raise MrlError(f"--shard-size must be >= 1, got {shard_size}")
    if len(texts) != len(ids):
        raise MrlError(f"{len(texts)} texts for {len(ids)} ids")
    rank, world = rank_and_world()
    if device is None and world > 1 and "LOCAL_RANK" in os.environ:
        import torch

        device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if torch.cuda.is_available() else "cpu"
    if runtime == "auto":  # record what encodes, so a reader can tell the runtimes apart
        from mrl.encoders.runtime import best_runtime

        runtime = best_runtime(model_name)
    fingerprints = {"model_sha": model_fingerprint(model_name), "texts_sha": texts_fingerprint(texts, ids, kind),
                    "runtime": runtime}
    plan = shards.start(Path(out), model_name, source, len(texts), shard_size, fingerprints)
    mine = [i for i in range(plan.count) if i % world == rank]
    todo = [i for i in mine if not shards.is_done(plan, i)]
    if say is not None:
        say(f"rank {rank}/{world}: {len(mine)} of {plan.count} shards are this process's, {len(mine) - len(todo)} "
            f"already written" + (" (resuming)" if len(todo) < len(mine) else ""))
    if todo:
        run = _encoder(model_name, runtime, device, batch_size, kind, threads)
        for n, i in enumerate(todo, 1):
            rows = plan.rows(i)
            shards.write_shard(plan, i, run(texts[rows]), ids[rows])
            if say is not None:
                say(f"rank {rank}: shard {i} ({rows.stop - rows.start} texts) written, {n}/{len(todo)}")
    return len(todo), len(mine) - len(todo), shards.finish(plan)


def corpus_vectors(folder: str | Path, model_name: str, corpus: dict[str, str],
                   runtime: str = "torch") -> tuple[np.ndarray, list[str]]:
    """The rows of a complete ``mrl encode --what corpus`` folder for ``corpus``'s documents, in its order.

    The folder must have been written by ``model_name`` (the same weights, where it records them) with
    ``runtime`` (where it records one) from the same texts when it holds the whole corpus; a document
    it lacks is named.
    """
    meta = shards.read_plan(Path(folder))
    if meta.get("runtime") not in (None, "auto", runtime):
        raise MrlError(f"{folder}: encoded with the {meta['runtime']} runtime, and these queries with {runtime}; "
                       f"encode the corpus with --runtime {runtime} (or evaluate with --runtime {meta['runtime']})")
    if "model_sha" in meta:
        if meta["model_sha"] != model_fingerprint(model_name):
            raise MrlError(f"{folder}: encoded by another model than {model_name} (its weights differ: "
                           f"{meta.get('model')}); encode the corpus with this model")
    elif meta.get("model") != model_name:
        raise MrlError(f"{folder}: encoded by {meta.get('model')!r}, not {model_name!r}")
    vectors, ids = shards.load_folder(folder)
    row = {str(i): n for n, i in enumerate(ids.tolist())}
    missing = [d for d in corpus if d not in row]
    if missing:
        raise MrlError(f"{folder}: {len(missing)} document(s) of the corpus are not in it, e.g. {missing[0]!r}")
    if "texts_sha" in meta and len(corpus) == len(row) and meta["texts_sha"] != texts_fingerprint(
            list(corpus.values()), list(corpus), "document"):
        raise MrlError(f"{folder}: encoded from other document texts than this corpus's (or as queries)")
    doc_ids = list(corpus)
    return vectors[[row[d] for d in doc_ids]], doc_ids
