"""Training streams: each source of batches with its columns, how they are read, its batch plan, loss and teacher keys.

A step takes one batch from every stream (English pairs; parallel sentences; later cross-lingual
pairs), encodes each column with the model's prompt for its kind, and sums the streams' losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrl.errors import MrlError
from mrl.training.batching import plan_epoch

if TYPE_CHECKING:
    from mrl.encoders.model import TextKind
    from mrl.losses import MatryoshkaLoss


#: parallel sentences are a symmetric task, which e5 reads as queries on both sides
PARALLEL_KIND: TextKind = "query"


def pair_kinds(n_columns: int) -> tuple[TextKind, ...]:
    """How the columns of a pairs file are read: the anchor as a query, positive and negatives as documents."""
    document: TextKind = "document"
    return ("query", *[document] * (n_columns - 1))


class BatchPlan:
    """The batch of every step, derived from the seed alone so that a resumed run replays it.

    ``keys`` keep duplicates out of a batch (the positives' ids; the parallel sources);
    ``offset`` gives a stream a shuffle of its own.
    """

    def __init__(self, keys: Sequence[str], lengths: Sequence[int], batch_size: int, seed: int, epochs: int,
                 max_steps: int | None, group_by_length: bool, what: str, offset: int = 0) -> None:
        self.keys, self.lengths, self.offset = keys, lengths, offset
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self._epochs: dict[int, list[list[int]]] = {}
        self.per_epoch = len(self.epoch(0))
        if self.per_epoch == 0:
            distinct = len(set(keys))
            why = (f" (only {distinct} distinct positives: a batch never holds two pairs with the same positive, "
                   "so duplicated pairs do not fill one)") if distinct < len(keys) else ""
            raise MrlError(f"{what}: {len(keys)} examples make no full batch of {batch_size}{why}")
        self.total = max_steps if max_steps else epochs * self.per_epoch

    def epoch(self, e: int) -> list[list[int]]:
        if e not in self._epochs:
            self._epochs = {e: plan_epoch(self.lengths, self.keys, self.batch_size, self.seed + self.offset + e,
                                          self.group_by_length)}
        return self._epochs[e]

    def batch(self, step: int) -> list[int]:
        return self.epoch(step // self.per_epoch)[step % self.per_epoch]


@dataclass(frozen=True)
class Stream:
    """One source of training batches.

    Attributes:
        name: ``pairs`` or ``parallel``; names the loss in checkpoints and the terms in the log.
        columns: the texts of every column, all of one length (anchors, positives, negatives...).
        kinds: how the model reads each column (its query or document prompt).
        plan: the seeded batch plan (row indices per step).
        loss: the Matryoshka loss over the columns' embeddings.
        teacher_keys: per column, the teacher's key of every row, when the loss distils from a teacher.
        log_prefix: put before the loss's term names in the log (``parallel_mse``).
    """

    name: str
    columns: tuple[Sequence[str], ...]
    kinds: tuple[TextKind, ...]
    plan: BatchPlan
    loss: MatryoshkaLoss
    teacher_keys: tuple[Sequence[str], ...] | None = None
    log_prefix: str = ""

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.columns):
            raise ValueError(f"stream {self.name}: {len(self.kinds)} kinds for {len(self.columns)} columns")
        if self.loss.needs_teacher and (self.teacher_keys is None or len(self.teacher_keys) != len(self.columns)):
            raise ValueError(f"stream {self.name}: its loss distils from a teacher: one key list per column needed")
