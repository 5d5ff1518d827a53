"""Export a Sentence-Transformers folder to one ONNX graph (tokens in, normalised embedding out).

PyTorch's exporter traces the whole module chain: Transformer, pooling, an optional head
(:mod:`mrl.encoders.head`) and normalisation, with dynamic batch and sequence axes. For BERT-family
encoders (MiniLM, multilingual-e5) onnxruntime's transformer optimizer then fuses each layer's
attention, its layer norms with their residual adds and GELU with its bias (with the TorchScript
exporter and eager attention, whose pattern it knows; the dynamo exporter's graph it does not fuse):
about a fifth faster in fp32 and a third in int8, where the attention itself runs in int8.
int8 comes from ``onnxruntime.quantization``: dynamic, with per-channel
weights; with a calibration set also dynamic with the FFN down-projections left in fp32, and
static (activation ranges from its texts); the candidate that loses least nDCG@10 at its worst
prefix is kept. The folder is built under a temporary name beside ``out`` (``.NAME.<hex>.tmp``)
and renamed at the end: a run killed half-way leaves ``out`` untouched (and that hidden work
folder, which can be deleted); a run that fails removes its work folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrl._fs import fsync_dir
from mrl.encoders.graph_engines import ONNX_HINT
from mrl.encoders.onnx_runtime import ONNX_KEY, RECORD
from mrl.errors import MrlError
from mrl.export.config import ExportConfig
from mrl.export.quantize import CANDIDATES, FILES, entry, keep_better_int8, quantize, quiet_logger

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "onnx/tokenizer.json"
MAX_GRAPH_BYTES = 1_900_000_000  # one .onnx file holds at most 2 GB (protobuf); no external data yet


def require_export_dependencies() -> None:
    """onnxruntime, onnx and onnxscript (torch's exporter needs the last two)."""
    for name in ("onnxruntime", "onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise MrlError(f"mrl export needs {name}: {ONNX_HINT}") from None


def export(cfg: ExportConfig, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``cfg.out``: the model folder, its ONNX graphs and the ``"onnx"`` record in ``mrl.json``.

    Returns:
        The record (files, checksums, agreement with PyTorch, calibration scores).

    Raises:
        MrlError: bad input, or (with ``calibrate``) a runtime losing more than ``max_loss`` nDCG@10 at
            some prefix without ``accept_loss``; nothing is left at ``cfg.out`` then.
    """
    from mrl.encoders.model import load_model, resolve_model_path
    from mrl.export.check import agreement, agreement_texts, guard, load_calibration

    say = say or logger.info
    cfg.check()
    require_export_dependencies()
    source = resolve_model_path(cfg.model)
    model = load_model(cfg.model, "cpu")
    model.eval()
    _check_exportable(model)
    data = load_calibration(cfg) if cfg.calibrate is not None else None
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        _copy_model(model, source, tmp)
        say(f"exporting {cfg.model} to ONNX (fp32)")
        record = _export_fp32(model, tmp)
        _write_record(tmp, record)
        if cfg.quantize == "int8":
            say("quantising to int8 (dynamic" + ("; candidates: FFN down-projections fp32, and static calibrated on "
                                                 f"{cfg.calibrate})" if data else ")"))
            quantize(tmp, data, record)
            _write_record(tmp, record)
        if data is not None:
            _calibrate(model, tmp, record, data, cfg, say)
        texts = agreement_texts(data)
        say(f"measuring agreement with PyTorch on {len(texts[0]) + len(texts[1])} texts")
        record["agreement"] = agreement(model, tmp, measured_runtimes(record), texts, cfg)
        if data is not None:
            guard(record["calibration"], cfg)
        _write_record(tmp, record)
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _calibrate(model: SentenceTransformer, tmp: Path, record: dict[str, Any], data: Any, cfg: ExportConfig,
               say: Callable[[str], None]) -> None:
    """Per-prefix nDCG@10 of PyTorch and every runtime on the calibration set; of several int8
    candidates, the one with the smallest worst loss is kept."""
    from mrl.export.check import calibration_scores

    say(f"scoring nDCG@10 per prefix on {data.name}/{data.split}: {len(data.queries)} queries, "
        f"{len(data.corpus)} documents, runtimes torch, {', '.join(record['runtimes'])}")
    record["calibration"] = calibration_scores(model, tmp, measured_runtimes(record), data, cfg)
    if len(set(CANDIDATES) & set(record["runtimes"])) > 1:
        kept = keep_better_int8(tmp, record)
        _write_record(tmp, record)  # the kept graph's checksum, before anything opens it
        say(f"keeping the {kept} int8 graph (the smaller worst loss over the prefixes)")


def measured_runtimes(record: dict[str, Any]) -> list[str]:
    """The runtimes export measures: one per graph, and ``openvino`` (which runs the fp32 graph) when
    OpenVINO is installed here."""
    from mrl.encoders.graph_engines import openvino_installed
    from mrl.encoders.onnx_runtime import OPENVINO

    return [*record["runtimes"], *([OPENVINO] if openvino_installed() and "onnx" in record["runtimes"] else [])]


def _check_exportable(model: SentenceTransformer) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    modules = list(model)
    if not modules or not isinstance(modules[0], Transformer) or getattr(modules[0], "tokenizer", None) is None \
            or not getattr(modules[0].tokenizer, "is_fast", False):
        raise MrlError("only text models whose first module is a Transformer with a fast tokenizer can be exported")
    if any(isinstance(m, Pooling) and not getattr(m, "include_prompt", True) for m in modules):
        raise MrlError("pooling that leaves the prompt out (include_prompt=False) cannot be exported yet")


def _copy_model(model: SentenceTransformer, source: str, tmp: Path) -> None:
    """The Sentence-Transformers folder (a copy of a local one, else saved), without an older export."""
    if Path(source).is_dir():
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("onnx", "checkpoints", ".*.tmp"))
    else:
        model.save(str(tmp))


class _Embedding:
    """Builds the torch module the graph is traced from: token tensors -> normalised embedding ``(b, d)``."""

    @staticmethod
    def module(model: SentenceTransformer) -> Any:
        import torch
        import torch.nn.functional as F  # noqa: N812

        class Embedding(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
                features = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    features["token_type_ids"] = token_type_ids
                embedding = self.model(features)["sentence_embedding"]  # (b, d)
                return F.normalize(embedding, p=2, dim=-1)

        return Embedding().eval()


def _export_fp32(model: SentenceTransformer, folder: Path) -> dict[str, Any]:
    from mrl.encoders.model import embedding_dim

    path = folder / FILES["onnx"]
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = _trace(model, path)
    fused = _fuse(model, path)
    if path.stat().st_size > MAX_GRAPH_BYTES:
        raise MrlError(f"{path}: the graph is over 2 GB; models this large cannot be exported yet")
    hf_tokenizer: Any = model[0].tokenizer
    max_seq_length = model.max_seq_length
    if not max_seq_length:
        raise MrlError("the model has no max_seq_length; set one before exporting")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())  # a copy, lower-casing included
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(folder / TOKENIZER_FILE))
    pad_id = hf_tokenizer.pad_token_id
    return {
        "format": 1,
        "dim": embedding_dim(model),
        "max_seq_length": int(max_seq_length),
        "inputs": inputs,
        "output": "sentence_embedding (L2-normalised)",
        "fused": fused,
        "pad_id": int(pad_id if pad_id is not None else 0),
        "prompts": dict(getattr(model, "prompts", None) or {}),
        "default_prompt_name": getattr(model, "default_prompt_name", None),
        "tokenizer": entry(folder, TOKENIZER_FILE),
        "runtimes": {"onnx": entry(folder, FILES["onnx"]) | {"precision": "fp32"}},
        "exported_with": _versions(),
    }


def _trace(model: SentenceTransformer, path: Path) -> list[str]:
    """The module chain as one graph, by PyTorch's TorchScript exporter with eager attention (whose
    pattern onnxruntime's transformer optimizer fuses); returns the graph's inputs."""
    import onnx
    import torch

    example = model.preprocess(["an example text", "a second, longer example text for the trace"])
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if isinstance(example.get(k), torch.Tensor)]
    auto = getattr(model[0], "auto_model", None)
    before = getattr(getattr(auto, "config", None), "_attn_implementation", None)
    try:
        if auto is not None and before not in (None, "eager"):
            auto.set_attn_implementation("eager")
        with warnings.catch_warnings(), torch.no_grad(), quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(_Embedding.module(model), tuple(example[k] for k in names), str(path), dynamo=False,
                              input_names=names, output_names=["sentence_embedding"], opset_version=17,
                              dynamic_axes={k: {0: "batch", 1: "sequence"} for k in names})
    except MrlError:
        raise
    except Exception as e:  # the exporter raises many types for modules it cannot trace
        raise MrlError(f"torch.onnx.export could not trace the model ({type(e).__name__}: {e})") from None
    finally:
        if auto is not None and before not in (None, "eager"):
            auto.set_attn_implementation(before)
    graph = onnx.load(str(path), load_external_data=False).graph
    return [i.name for i in graph.input]  # an input the model ignores is not in the graph


#: architectures whose layers onnxruntime's transformer optimizer fuses as BERT's
FUSABLE = ("bert", "xlm-roberta", "roberta")


def _fuse(model: SentenceTransformer, path: Path) -> dict[str, int]:
    """Fuse a BERT-family graph in place (attention, layer norms with their residual, GELU with its bias:
    fewer, faster kernels, and int8 attention after quantisation); the fused operators and their counts."""
    config: Any = getattr(getattr(model[0], "auto_model", None), "config", None)
    if config is None or getattr(config, "model_type", None) not in FUSABLE:
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings(), quiet_logger("onnxruntime"), quiet_logger():
        warnings.simplefilter("ignore")
        optimized = optimize_model(str(path), model_type="bert", num_heads=int(config.num_attention_heads),
                                   hidden_size=int(config.hidden_size))
        optimized.save_model_to_file(str(path))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    from mrl import __version__

    return {"mrl": __version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    """Merge the record into the folder's ``mrl.json`` (the training summary, when there is one, stays)."""
    path = folder / RECORD
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta[ONNX_KEY] = record
    path.write_text(json.dumps(meta, indent=2) + "\n")


def _commit(tmp: Path, out: Path) -> None:
    """fsync every file, then rename the folder into place: the one commit point."""
    for path in sorted(tmp.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(path)
    fsync_dir(tmp)
    if out.is_dir():
        out.rmdir()  # empty (checked up front); fails if another writer filled it meanwhile
    os.rename(tmp, out)
    fsync_dir(out.parent)
