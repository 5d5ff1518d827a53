"""Matryoshka adaptors: make frozen embeddings of any model or API prefix-friendly.

``Adaptor`` (load / transform / save) is numpy only; fitting (:func:`fit_adaptor`) needs torch.
"""

from __future__ import annotations

from typing import Any

from mrl.adapt.base import KINDS, Adaptor, fit_pca

__all__ = ["Adaptor", "KINDS", "FitConfig", "fit_adaptor", "fit_pca"]


def __getattr__(name: str) -> Any:
    if name in ("FitConfig", "fit_adaptor"):
        from mrl.adapt import fit

        return getattr(fit, name)
    raise AttributeError(f"module 'mrl.adapt' has no attribute {name!r}")
