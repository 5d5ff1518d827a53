"""``--first-stage auto``: first stages chosen for the corpus size and a RAM budget.

The rule (measured in docs/benchmarks.md, "Adaptive depth and automatic first stages"):

- up to ``FLAT_MAX`` vectors, a flat scan of int8 codes of the 64-dim prefix (``int8@64``): it
  reads 64 B per vector, at most ~13 MB per query, and no inverted file or graph has anything
  to skip at that size;
- above, an inverted file of int8 codes (``ivf8``) over the longest prefix of 64, 128 or 256
  dims that fits the budget (codes ``p`` B + 8 B of id + float16 centroids per vector) and is at
  most half the dimension. An inverted file reads only the lists it scans, so its cost no longer
  grows with the corpus; a longer prefix holds more of the neighbour structure on diffuse data
  (on 1M x 768 diffuse clusters a 64-dim prefix needs 5,000 candidates for recall 0.99, a
  128-dim one 1,000), and ``tune`` then widens the lists scanned until the target is met.

The budget is for the resident first-stage structures (the full vectors are memory-mapped);
without one, a quarter of the machine's memory, at most ``DEFAULT_MAX_BYTES`` per vector.
"""

from __future__ import annotations

import os
import re

from mrl.errors import MrlError
from mrl.index.first_stages.kinds import KINDS

FLAT_MAX = 200_000  # from here an inverted file beats a flat scan of 64-dim int8 codes
DEFAULT_MAX_BYTES = 256.0  # per vector, when no budget is given
PREFIXES = (256, 128, 64)

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str, option: str = "--ram-budget") -> float:
    """``"2GB"``, ``"512MiB"``, ``"1e9"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if not m or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
        raise MrlError(f"{option} {text!r}: expected a positive size such as 2GB, 512MiB or 1e9 (bytes)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _memory_bytes() -> float | None:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def bytes_per_vector_budget(n: int, ram_budget: float | None) -> float:
    if ram_budget is not None:
        return ram_budget / max(n, 1)
    memory = _memory_bytes()
    return min(DEFAULT_MAX_BYTES, memory / 4 / max(n, 1)) if memory else DEFAULT_MAX_BYTES


def auto_first_stages(n: int, dim: int, ram_budget: float | None = None) -> list[str]:
    """The first stages ``--first-stage auto`` builds for ``n`` vectors of ``dim`` dims."""
    budget = bytes_per_vector_budget(n, ram_budget)
    flat = min(64, dim)
    if n <= FLAT_MAX:
        if flat > budget:
            raise MrlError(f"--ram-budget: {budget * n:.0f} B for {n} vectors is {budget:.1f} B per vector, below "
                           f"the {flat} B of the smallest automatic first stage (int8@{flat}); pass a larger "
                           "budget or name a first stage (e.g. --first-stage binary@256)")
        return [f"int8@{flat}"]
    for p in PREFIXES:
        if p <= max(dim // 2, flat) and KINDS["ivf8"].bytes_per_vector(p, n) <= budget:
            return [f"ivf8@{p}"]
    smallest = KINDS["ivf8"].bytes_per_vector(flat, n)
    raise MrlError(f"--ram-budget: {budget * n:.0f} B for {n} vectors is {budget:.1f} B per vector, below the "
                   f"{smallest:.1f} B of the smallest automatic first stage (ivf8@{flat}); pass a larger budget "
                   "or name a first stage (e.g. --first-stage binary@512 keeps 64 B per vector)")


def resolve_first_stages(first_stages: list[str] | tuple[str, ...] | None, n: int, dim: int,
                         ram_budget: float | None = None) -> list[str]:
    """The build's first stages: ``auto`` (or none given) replaced by :func:`auto_first_stages`."""
    given = list(first_stages or ["auto"])
    if "auto" not in given:
        if ram_budget is not None:
            raise MrlError("--ram-budget chooses automatic first stages; it goes with --first-stage auto "
                           "(the default), not with named ones")
        return given
    chosen = auto_first_stages(n, dim, ram_budget)
    return list(dict.fromkeys(s for g in given for s in (chosen if g == "auto" else [g])))
