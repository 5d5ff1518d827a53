"""Loading, encoding and saving Sentence-Transformers models."""

from __future__ import annotations

from mrl.encoders.model import DEFAULT_MODEL, encode, load_model, pick_device, resolve_model_path

__all__ = ["DEFAULT_MODEL", "encode", "load_model", "pick_device", "resolve_model_path"]
