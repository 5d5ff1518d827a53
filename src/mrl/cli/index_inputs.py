"""What the index commands read: vectors, ids, a corpus to encode, an adaptor; and the options they share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from mrl.cli.common import console
from mrl.errors import MrlError

IndexArg = Annotated[str, typer.Argument(
    help="Index folder, or qdrant-edge://PATH, qdrant://HOST:PORT/COLLECTION (key: $MRL_QDRANT_API_KEY), "
         "postgresql://USER@HOST:PORT/DB?table=NAME (password: $PGPASSWORD).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model folder or 'minilm' (encodes texts).",
                                              envvar="MRL_MODEL")]
DataOpt = Annotated[Path | None, typer.Option(help="BEIR folder whose corpus.jsonl[.gz] is encoded.")]
VectorsOpt = Annotated[Path | None, typer.Option(
    help="Precomputed vectors: .npy of shape (n, D), or a folder of shards from `mrl encode` (with its ids).")]
IdsOpt = Annotated[Path | None, typer.Option(help="Ids, one per line (.txt) or .npy; default 0..n-1.")]
PayloadOpt = Annotated[Path | None, typer.Option(
    "--payload", help="payload.jsonl: one JSON object per line with an \"id\" key, stored with that id for "
                      "filtered search (mrl search --filter).")]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (messages go to stderr).")]
AdaptorOpt = Annotated[Path | None, typer.Option(
    help="Adaptor folder (mrl adapt fit): store adapted vectors and adapt every query and addition.")]


def load_adaptor(path: Path | None) -> Any:
    if path is None:
        return None
    from mrl.adapt import Adaptor

    return Adaptor.load(path)


def load_vectors(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MrlError(f"{path}: no such file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise MrlError(f"{path}: not a .npy array ({e})") from None


def load_ids(path: Path, kind: str | None = None) -> np.ndarray | list[str]:
    """Ids from a text file (one per line, a byte-order mark ignored) or a .npy array.

    A text file gives int ids when every line is an ASCII integer (``-?[0-9]+``: not ``1_000`` or
    ``٣``), else string ids; ``kind`` ("str" or "int", an existing index's) decides instead.
    """
    if not path.is_file():
        raise MrlError(f"{path}: no such file")
    if path.suffix == ".npy":
        return np.asarray(load_vectors(path))
    from mrl.data.io import read_lines

    lines = read_lines(path)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise MrlError(f"{path}:{i}: empty id")
    values = [line.strip() for line in lines]
    numeric = [re.fullmatch(r"-?[0-9]+", v) is not None for v in values]
    if kind == "str" or (kind is None and not all(numeric)):
        return values  # a list: numpy would drop a trailing NUL, which the id check names
    if not all(numeric):
        bad = numeric.index(False)
        raise MrlError(f"{path}:{bad + 1}: {values[bad]!r} is not an integer id (this index uses integer ids)")
    too_big = [i for i, v in enumerate(values, 1) if not -(2**63) <= int(v) < 2**63]
    if too_big:
        raise MrlError(f"{path}:{too_big[0]}: id {values[too_big[0] - 1]} does not fit in 64 bits")
    return np.array([int(v) for v in values], dtype=np.int64)


def encode_texts(model: str, texts: list[str], kind: str, runtime: str, batch_size: int = 64,
                 progress: bool = False, threads: int | None = None) -> np.ndarray:
    """``texts`` as ``kind`` (query or document, with the model's prompt for it) by ``runtime``'s encoder
    with ``threads`` (None: the runtime's default)."""
    from tqdm.auto import tqdm

    from mrl.encoders.runtime import open_encoder

    encoder = open_encoder(model, runtime, threads)
    step = max(batch_size, 1024)
    parts = [encoder.encode(texts[a : a + step], kind, batch_size)
             for a in tqdm(range(0, len(texts), step), desc=f"encoding {kind}s", unit="block", disable=not progress)]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


def _encode_corpus(model: str, data: Path, batch_size: int, runtime: str,
                   threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    from mrl.data.beir import load_corpus

    corpus = load_corpus(data)
    console.print(f"encoding {len(corpus)} documents from {data} with {model} ({runtime} runtime)")
    xb = encode_texts(model, list(corpus.values()), "document", runtime, batch_size, progress=True,
                      threads=threads)
    return xb, np.array(list(corpus), dtype=str)


def read_inputs(model: str | None, data: Path | None, vectors: Path | None, ids: Path | None,
                batch_size: int, id_kind: str | None = None, runtime: str = "auto",
                threads: int | None = None) -> tuple[np.ndarray, Any]:
    if (vectors is None) == (data is None):
        raise MrlError("give either --vectors X.npy [--ids ids.txt] or --model PATH --data BEIR_DIR")
    if data is not None:
        if model is None:
            raise MrlError("--data needs --model to encode the corpus")
        if ids is not None:
            raise MrlError("--ids goes with --vectors; with --data the corpus ids are used")
        return _encode_corpus(model, data, batch_size, runtime, threads)
    assert vectors is not None
    if vectors.is_dir():  # a folder of shards from `mrl encode`: its ids come with it
        from mrl.data.vectors import load_folder

        if ids is not None:
            raise MrlError(f"--ids: {vectors} is an embeddings folder and carries its own ids")
        return load_folder(vectors)
    return load_vectors(vectors), (load_ids(ids, id_kind) if ids is not None else None)




def read_payloads(path: Path | None, ids: Any, n: int) -> list[Any] | None:
    """The payload per row from ``--payload`` (``None`` without one); ids default to ``0..n-1``."""
    if path is None:
        return None
    from mrl.index.payloads import read_payload_file

    return read_payload_file(path, list(ids) if ids is not None else list(range(n)))
