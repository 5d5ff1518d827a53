"""Sentence-Transformers' own ONNX and OpenVINO backends, timed as ``encode_speed.py`` times mrl's runtimes.

Runs in its own environment, because Sentence-Transformers' ``[onnx]`` / ``[openvino]`` extras pin an
older transformers (optimum-onnx wants transformers < 4.58) than mrl's:

    python -m venv .venv-st && .venv-st/bin/pip install torch==2.13.0 "sentence-transformers[onnx,openvino]"
    .venv-st/bin/python benchmarks/st_peer.py --model MODEL_FOLDER --backend onnx --threads 1 \
        --texts runs/encode-speed/peer-texts.json --out runs/encode-speed/peer-onnx-1.json

``encode_speed.py --peers st-onnx,st-onnx-int8,st-openvino --peer-python .venv-st/bin/python`` runs it
for each thread count. The model folder is copied without mrl's ``onnx/`` export (Sentence-Transformers
would take that graph for its own), and Sentence-Transformers exports it its way: the transformer in
ONNX (or OpenVINO IR) and pooling and normalisation in PyTorch, as a user of ``backend="onnx"`` gets.
``onnx-int8`` is its ``export_dynamic_quantized_onnx_model`` with the ``avx512_vnni`` configuration.
Writes the speed figures and the first documents' embeddings (for the cosine to PyTorch).
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_speed import speed  # noqa: E402

COSINE_DOCS = 256  # documents whose embeddings go back for the cosine to PyTorch


def load(folder: Path, backend: str, threads: int, work: Path) -> Any:
    """The model in ``backend`` (onnx, onnx-int8, openvino) with ``threads`` compute threads."""
    import torch
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    torch.set_num_threads(threads)  # pooling and normalisation run in PyTorch
    copy = work / "model"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("onnx", "mrl.json", "openvino"))
    if backend == "openvino":
        return SentenceTransformer(str(copy), backend="openvino", device="cpu",
                                   model_kwargs={"ov_config": {"INFERENCE_NUM_THREADS": str(threads)}})
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    kwargs: dict[str, Any] = {"provider": "CPUExecutionProvider", "session_options": options}
    model = SentenceTransformer(str(copy), backend="onnx", device="cpu", model_kwargs=kwargs)
    if backend == "onnx":
        return model
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(copy))
    return SentenceTransformer(str(copy), backend="onnx", device="cpu",
                               model_kwargs={**kwargs, "file_name": "onnx/model_qint8_avx512_vnni.onnx"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a Sentence-Transformers model folder")
    p.add_argument("--backend", choices=("onnx", "onnx-int8", "openvino"), required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--texts", type=Path, required=True, help='JSON: {"docs": [...], "queries": [...]}')
    p.add_argument("--out", type=Path, required=True, help="JSON written here, the embeddings beside it (.npy)")
    args = p.parse_args()
    texts = json.loads(args.texts.read_text())
    with tempfile.TemporaryDirectory() as work:
        model = load(args.model, args.backend, args.threads, Path(work))

        def encode(batch: list[str], kind: str, batch_size: int) -> np.ndarray:
            fn = model.encode_query if kind == "query" else model.encode_document
            return fn(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)

        row = speed(encode, texts["docs"], texts["queries"])
        np.save(args.out.with_suffix(".npy"), encode(texts["docs"][:COSINE_DOCS], "document", 32))
    import sentence_transformers

    row["versions"] = {"sentence_transformers": sentence_transformers.__version__}
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
