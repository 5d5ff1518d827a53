"""Funnel search over Matryoshka vectors: a persistent index, first stages, cascades, tuning."""

from __future__ import annotations

from mrl.index.base import Searcher, SearchResult, open_index
from mrl.index.cascade import Cascade, FirstStageSpec, parse_cascade, parse_first_stage
from mrl.index.index import MrlIndex

__all__ = ["Cascade", "FirstStageSpec", "MrlIndex", "SearchResult", "Searcher", "open_index", "parse_cascade",
           "parse_first_stage"]
