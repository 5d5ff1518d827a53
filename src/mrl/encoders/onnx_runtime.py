"""An exported model folder encoded by onnxruntime or OpenVINO + tokenizers + numpy (never torch).

The graph written by :mod:`mrl.export.onnx` takes the tokenizer's tensors and returns the
model's L2-normalised embedding (Transformer, pooling, an optional head and normalisation all run
inside it), so this module only tokenizes, pads per batch and runs the graph (:mod:`.graph_engines`).
The ``openvino`` runtime runs the fp32 graph (``onnx``) with OpenVINO; it has no file of its own.

The folder's ``mrl.json`` holds an ``"onnx"`` record: the files, their sha256 and what export
measured. Every file is checked against its checksum when an encoder is opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl._fs import sha256
from mrl.encoders.graph_engines import onnxruntime_engine, openvino_computes_bf16, openvino_engine
from mrl.errors import MrlError

RECORD = "mrl.json"
ONNX_KEY = "onnx"
ONNX_RUNTIMES = ("onnx-int8", "onnx")  # the exported graphs, best first
OPENVINO = "openvino"
# prompt names Sentence-Transformers tries, in order, for each kind of text
# the prompt names Sentence-Transformers' encode_query / encode_document look for, in order; the one table
# (encoders.model, for PyTorch, reads it too)
PROMPT_NAMES: dict[str, tuple[str, ...]] = {"query": ("query",), "document": ("document", "passage", "corpus")}
KINDS = tuple(PROMPT_NAMES)


def graph_of(runtime: str) -> str:
    """The exported graph ``runtime`` runs: its own (``onnx``, ``onnx-int8``, export's int8 candidates),
    or for ``openvino`` the fp32 one."""
    return "onnx" if runtime == OPENVINO else runtime


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The ``"onnx"`` record of ``folder``'s ``mrl.json``, or None when the folder has none."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MrlError(f"{path}: not readable JSON ({e})") from None
    record = meta.get(ONNX_KEY) if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else None


def exported_runtimes(folder: str | Path) -> list[str]:
    """The runtimes ``folder``'s export can run, best first (empty when none): ``openvino`` first where
    it computes in bfloat16 (:func:`~.graph_engines.openvino_computes_bf16`), then the int8 and fp32
    graphs with onnxruntime."""
    graphs = (read_record(folder) or {}).get("runtimes", {})
    found = [r for r in ONNX_RUNTIMES if r in graphs]
    return ([OPENVINO] if "onnx" in graphs and openvino_computes_bf16() else []) + found


def check_file(folder: Path, entry: dict[str, Any]) -> Path:
    """``folder / entry["file"]`` after checking its sha256 against the record."""
    path = folder / str(entry.get("file", ""))
    if not path.is_file():
        raise MrlError(f"{path}: listed in {folder / RECORD} but missing; export again with `mrl export`")
    actual = sha256(path)
    if actual != entry.get("sha256"):
        raise MrlError(f"{path}: sha256 {actual[:16]}... does not match {str(entry.get('sha256'))[:16]}... recorded "
                       f"in {folder / RECORD}: the file was altered or damaged; export again with `mrl export`")
    return path


def prompt_for(prompts: dict[str, str], default_prompt_name: str | None, kind: str) -> str:
    """The prompt Sentence-Transformers' ``encode_query`` / ``encode_document`` would prepend."""
    if kind not in PROMPT_NAMES:
        raise MrlError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    for name in PROMPT_NAMES[kind]:
        if name in prompts:
            return prompts[name]
    return prompts.get(default_prompt_name or "", "")


class OnnxEncoder:
    """Encode with an exported graph: float32 ``(n, dim)``, every row L2-normalised.

    Thread-safe: the tokenizer is configured once and an onnxruntime session may run concurrently.

    Args:
        folder: a model folder written by ``mrl export``.
        runtime: ``onnx`` (fp32), ``onnx-int8`` (onnxruntime) or ``openvino`` (the fp32 graph with OpenVINO).
        threads: intra-op threads (None: the runtime's default, every core).
        spin: onnxruntime only: whether idle pool threads spin between runs (``False``: they sleep,
            leaving the cores to the rest of the process).
    """

    def __init__(self, folder: str | Path, runtime: str = "onnx", threads: int | None = None,
                 spin: bool = True) -> None:
        self.folder = Path(folder)
        record = read_record(self.folder)
        if record is None:
            raise MrlError(f"{self.folder} has no ONNX export (no \"{ONNX_KEY}\" record in {RECORD}); "
                           f"run `mrl export {self.folder} --out DIR` first")
        if graph_of(runtime) not in record.get("runtimes", {}):
            raise MrlError(f"{self.folder} has no {runtime!r} export (it has: "
                           f"{', '.join(record.get('runtimes', {})) or 'none'}); run `mrl export` with "
                           f"{'--quantize int8' if runtime == 'onnx-int8' else '--quantize none'}")
        if threads is not None and threads < 1:
            raise MrlError(f"threads must be >= 1, got {threads}")
        from tokenizers import Tokenizer

        self.runtime = runtime
        self.dim = int(record["dim"])
        self.max_seq_length = int(record["max_seq_length"])
        self.prompts: dict[str, str] = dict(record.get("prompts") or {})
        self.default_prompt_name: str | None = record.get("default_prompt_name")
        self._pad_id = int(record["pad_id"])
        self._inputs: list[str] = list(record["inputs"])
        tok_path = check_file(self.folder, record["tokenizer"])
        model_path = check_file(self.folder, record["runtimes"][graph_of(runtime)])
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_seq_length)
        self.engine = (openvino_engine(model_path, threads) if runtime == OPENVINO else
                       onnxruntime_engine(model_path, threads, spin))

    def encode(self, texts: Sequence[str], kind: str = "document", batch_size: int = 32) -> np.ndarray:
        """Embeddings of ``texts`` (with the model's ``kind`` prompt), float32 ``(n, dim)``, normalised."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, d)
        for rows, feed in self.batches(texts, kind, batch_size):
            out[rows] = self.engine.run(feed)  # (b, d)
        return out

    def batches(self, texts: Sequence[str], kind: str = "document",
                batch_size: int = 32) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """``(rows, feed)`` per batch: the rows of ``texts`` it holds and the graph's padded inputs.

        Texts are sorted by token count so each batch pads little, as Sentence-Transformers does.
        """
        if batch_size < 1:
            raise MrlError(f"batch_size must be >= 1, got {batch_size}")
        prompt = prompt_for(self.prompts, self.default_prompt_name, kind)
        if not len(texts):
            return
        encodings = self._tokenizer.encode_batch([prompt + t for t in texts])
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            yield rows, self._feed([encodings[r] for r in rows], int(lengths[rows].max()))

    def _feed(self, encodings: list[Any], width: int) -> dict[str, np.ndarray]:
        n = len(encodings)
        feed = {"input_ids": np.full((n, width), self._pad_id, dtype=np.int64),  # (b, L)
                "attention_mask": np.zeros((n, width), dtype=np.int64),
                "token_type_ids": np.zeros((n, width), dtype=np.int64)}
        for j, e in enumerate(encodings):
            length = len(e.ids)
            feed["input_ids"][j, :length] = e.ids
            feed["attention_mask"][j, :length] = 1
            feed["token_type_ids"][j, :length] = e.type_ids
        return {k: feed[k] for k in self._inputs}

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads for ``texts`` (truncated, special tokens included, no prompt)."""
        return int(sum(len(e.ids) for e in self._tokenizer.encode_batch(list(texts))))
