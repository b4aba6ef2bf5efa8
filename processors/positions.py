"""Where each assigned partition of events.raw stands, as far as this worker can prove.

Faust's own commit rule trusts whatever its consumer delivered and acked. Two things in it
commit past records nobody processed (faust-streaming's ``transport/consumer.py``):

- a record fetched before the seek to the committed offset lands can arrive first after
  an assignment, ahead of that offset; its ack starts a run of acked offsets, and the
  head check (``min(acked) - committed > 1``) lets a run that misses exactly one record,
  or any run when the committed offset is 0, be committed;
- a jump in offsets between two fetched records is recorded as a "gap" and filled into
  the acked offsets (meant for compacted topics and transaction markers; events.raw has
  neither), so the records of the jump count as done.

The chaos soak lost 8-148 acknowledged events per run that way. So this worker tracks,
per partition it holds, three positions it can vouch for:

- ``start``: the group's committed offset, asked of the broker on the first record
  after each assignment (never the consumer's own idea of it);
- ``next``: the next offset to process: records must come in order from ``start``;
- ``safe``: the end of the records whose every effect was delivered: the highest offset
  a commit may name (``processors.commits`` caps Faust's commit at it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Positions:
    epoch: int = 0  # one per assignment: broker answers asked for an older one are ignored
    _start: dict[int, int] = field(default_factory=dict)
    _next: dict[int, int] = field(default_factory=dict)
    _safe: dict[int, int] = field(default_factory=dict)
    _verify: set[int] = field(default_factory=set)  # kept across a reassignment

    def assigned(self, partitions: Iterable[int]) -> None:
        """A new assignment (Faust's signal, which can come after the first records of
        it). A partition no longer assigned is forgotten; one kept is verified again
        against the broker, in case the worker missed a generation in which another
        worker owned it."""
        mine = set(partitions)
        self.epoch += 1
        for partition in set(self._next) - mine:
            self._start.pop(partition, None)
            self._next.pop(partition, None)
            self._safe.pop(partition, None)
        self._verify = mine & set(self._next)

    def unknown(self, partitions: Iterable[int]) -> set[int]:
        """Which of ``partitions`` need the broker's word on where the group resumes."""
        return {p for p in partitions if p not in self._start or p in self._verify}

    def started(self, epoch: int, resumes: dict[int, int]) -> bool:
        """Where the group resumes each partition, as the broker answered during
        ``epoch``. False, and nothing taken, if a new assignment came meanwhile (ask
        again). A partition this worker kept resumes where it is if that is further:
        it processed and delivered those records itself."""
        if epoch != self.epoch:
            return False
        for partition, offset in resumes.items():
            start = max(offset, self._safe.get(partition, offset))
            self._start[partition] = start
            self._next[partition] = start
            self._safe[partition] = start
            self._verify.discard(partition)
        return True

    def next(self, partition: int) -> int | None:
        return self._next.get(partition)

    def advance(self, partition: int, offset: int) -> None:
        """``offset`` (== ``next``) is being processed."""
        self._next[partition] = offset + 1

    def delivered(self, partitions: Iterable[int]) -> None:
        """Everything processed so far on ``partitions`` has been delivered (the batch
        that processed it returned), so commits may go that far."""
        for partition in partitions:
            if partition in self._next:
                self._safe[partition] = self._next[partition]

    def safe(self, partition: int) -> int | None:
        """The highest offset a commit of ``partition`` may name; None: nothing proven."""
        return self._safe.get(partition)


def capped(wanted: int | None, safe: int | None) -> int | None:
    """The offset to commit: what Faust wants, never past what was proven delivered."""
    if wanted is None or safe is None:
        return None
    return min(wanted, safe)
