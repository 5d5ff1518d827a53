from __future__ import annotations

import numpy as np

from mrl.training.batching import plan_epoch


def _plan(seed=0, group=True):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=1000).tolist()
    keys = [f"d{i % 700}" for i in range(1000)]  # 300 positives are shared by two anchors
    return lengths, keys, plan_epoch(lengths, keys, 32, seed, group)


def test_batches_are_full_deterministic_and_duplicate_free():
    lengths, keys, batches = _plan()
    assert all(len(b) == 32 for b in batches) and len(batches) >= 28
    assert all(len({keys[i] for i in b}) == 32 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert batches == _plan()[2] and batches != _plan(seed=1)[2]


def test_length_grouping_cuts_padding():
    lengths, _, grouped = _plan()
    _, _, plain = _plan(group=False)

    def padded(batches):
        return sum(32 * max(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)
