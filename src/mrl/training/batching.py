"""Deterministic batch plans: length-grouped, with no duplicated positive inside a batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan_epoch(
    lengths: Sequence[int],
    keys: Sequence[str],
    batch_size: int,
    seed: int,
    group_by_length: bool = True,
    mega: int = 50,
) -> list[list[int]]:
    """Split ``range(n)`` into batches for one epoch.

    The order is a seeded shuffle; with ``group_by_length`` every window of ``mega``
    batches is sorted by length before cutting (as Hugging Face's length-grouped sampler),
    so a batch pads to little more than its own texts. A batch never holds two examples
    with the same key (their positives would be each other's false negatives): a duplicate
    waits for the next batch. Batch order is shuffled again so lengths do not trend.

    Returns:
        A list of index lists; each full batch has ``batch_size`` items, a short last batch
        is dropped.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    if group_by_length:
        window = batch_size * mega
        lengths_arr = np.asarray(lengths)
        chunks = [order[i : i + window] for i in range(0, len(order), window)]
        order = np.concatenate([c[np.argsort(-lengths_arr[c], kind="stable")] for c in chunks])
    batches: list[list[int]] = []
    current: list[int] = []
    current_keys: set[str] = set()
    waiting: list[int] = []
    for idx in order.tolist():
        if keys[idx] in current_keys:
            waiting.append(idx)
            continue
        current.append(idx)
        current_keys.add(keys[idx])
        if len(current) == batch_size:
            batches.append(current)
            current, current_keys = [], set()
            retry, waiting = waiting, []
            for w in retry:
                if keys[w] in current_keys or len(current) == batch_size - 1:
                    waiting.append(w)  # keep room: the next fresh example closes the batch
                else:
                    current.append(w)
                    current_keys.add(keys[w])
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]
