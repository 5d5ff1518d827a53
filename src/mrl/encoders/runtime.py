"""One ``Encoder`` whatever runs it: PyTorch (Sentence-Transformers) or an exported ONNX graph.

Callers (the CLI, the service) see ``dim``, ``prompts``, ``encode(texts, kind)`` and
``count_tokens``; :func:`open_encoder` picks the runtime. Importing this module imports neither
torch nor onnxruntime: each loads when its encoder is opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from mrl.encoders.onnx_runtime import KINDS, ONNX_RUNTIMES, OPENVINO, OnnxEncoder, exported_runtimes
from mrl.errors import MrlError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

RUNTIMES = ("torch", *reversed(ONNX_RUNTIMES), OPENVINO)  # torch, onnx, onnx-int8, openvino
AUTO = "auto"


@runtime_checkable
class Encoder(Protocol):
    """What callers need of an encoder: full-dimension, normalised float32 embeddings."""

    dim: int
    prompts: dict[str, str]

    def encode(self, texts: Sequence[str], kind: str = "document", batch_size: int = 32) -> np.ndarray:
        """float32 ``(n, dim)``, each row L2-normalised; ``kind`` is ``query`` or ``document``."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        ...


class TorchEncoder:
    """A Sentence-Transformers model behind the :class:`Encoder` surface.

    Args:
        model: a loaded model (:func:`mrl.encoders.model.load_model`).
        threads: torch's intra-op threads (process-wide: ``torch.set_num_threads``); None leaves them.
    """

    runtime = "torch"

    def __init__(self, model: SentenceTransformer, threads: int | None = None) -> None:
        from mrl.encoders.model import embedding_dim

        set_torch_threads(threads)
        self.model = model
        self.dim = embedding_dim(model)
        self.prompts: dict[str, str] = dict(getattr(model, "prompts", None) or {})

    def encode(self, texts: Sequence[str], kind: str = "document", batch_size: int = 32) -> np.ndarray:
        if kind not in KINDS:
            raise MrlError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        fn = self.model.encode_query if kind == "query" else self.model.encode_document
        out = fn(list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                 show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        ids = self.model.tokenizer(list(texts), truncation=True, max_length=self.model.max_seq_length)["input_ids"]
        return int(sum(len(x) for x in ids))


def set_torch_threads(threads: int | None) -> None:
    """PyTorch's intra-op threads (process-wide: ``torch.set_num_threads``); None leaves them."""
    if threads is None:
        return
    if threads < 1:
        raise MrlError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def best_runtime(folder: str | Path) -> str:
    """The best runtime ``folder`` has: ``openvino`` (installed, on a CPU with bfloat16 units), else
    ``onnx-int8``, else ``onnx``, else ``torch``."""
    found = exported_runtimes(folder) if Path(folder).is_dir() else []
    return found[0] if found else "torch"


def open_encoder(model: str, runtime: str = AUTO, threads: int | None = None,
                 device: str | None = None, spin: bool = True) -> Encoder:
    """Open ``model`` (a folder, ``minilm`` or a cached hub name) with ``runtime``.

    Args:
        runtime: ``torch``, ``onnx``, ``onnx-int8``, ``openvino`` or ``auto`` (the best the folder was
            exported for: :func:`best_runtime`).
        threads: threads per process for the encoder (None: the runtime's default).
        device: for ``torch`` only (``cpu``, ``cuda`` ...).
        spin: onnxruntime only: whether the encoder's idle threads spin between runs (faster alone; ``False``
            leaves the cores to the rest of a process, such as a service's searches).

    Raises:
        MrlError: an unknown runtime, or one the folder was not exported for (the message names
            ``mrl export``), or an exported file whose checksum does not match.
    """
    if runtime not in (AUTO, *RUNTIMES):
        raise MrlError(f"runtime {runtime!r}: expected one of {', '.join((AUTO, *RUNTIMES))}")
    if runtime == AUTO:
        runtime = best_runtime(model)
    if runtime == "torch":
        from mrl.encoders.model import load_model

        return TorchEncoder(load_model(model, device), threads)
    if device not in (None, "cpu"):
        raise MrlError(f"runtime {runtime} runs on the CPU; leave --device out or use --runtime torch")
    if not Path(model).is_dir():
        raise MrlError(f"runtime {runtime} needs a model folder written by `mrl export`, got {model!r}")
    return OnnxEncoder(model, runtime, threads, spin)
