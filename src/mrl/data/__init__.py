"""Data sources: BEIR folders and pair/triplet files."""

from __future__ import annotations

from mrl.data.beir import BeirDataset, load_beir
from mrl.data.pairs import Pairs, load_pairs, pairs_from_beir

__all__ = ["BeirDataset", "load_beir", "Pairs", "load_pairs", "pairs_from_beir"]
