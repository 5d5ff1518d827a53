"""Funnel search over Matryoshka vectors: a persistent index, first stages, cascades, tuning."""

from __future__ import annotations

from mrl.index.cascade import Cascade, FirstStageSpec, parse_cascade, parse_first_stage
from mrl.index.index import MrlIndex

__all__ = ["Cascade", "FirstStageSpec", "MrlIndex", "parse_cascade", "parse_first_stage"]
