"""Funnel search over Matryoshka vectors: a persistent index, first stages, cascades, tuning."""

from __future__ import annotations

from mrl.index.backends import build_index, open_index
from mrl.index.base import Searcher, SearchResult, Tunable, Writer
from mrl.index.cascade import Cascade, FirstStageSpec, parse_cascade, parse_first_stage
from mrl.index.local import MrlIndex

__all__ = ["Cascade", "FirstStageSpec", "MrlIndex", "SearchResult", "Searcher", "Tunable", "Writer", "build_index",
           "open_index", "parse_cascade", "parse_first_stage"]
