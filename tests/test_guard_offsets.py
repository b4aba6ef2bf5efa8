"""The offset guard: records reach the processor once, in order, from where the group
resumes, whatever a confused consumer delivers; commits never pass what was delivered.

The consumer is modelled (a log of offsets per partition, a fetch position, stale
fetches from anywhere, a restart from the committed offset); the guard, ``Positions``
and the commit cap are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.positions import Positions, capped
from processors.steps import GuardOffsets, SkippedRecords
from processors.watchdog import StallWatch


@dataclass(frozen=True)
class _Message:
    partition: int
    offset: int


@dataclass(frozen=True)
class _Event:
    message: _Message


def _batch(partition: int, *offsets: int) -> list[_Event]:
    return [_Event(_Message(partition, offset)) for offset in offsets]


@dataclass
class _Processor:
    """The step after the guard: records what reached it."""

    positions: Positions
    seen: list[tuple[int, int]] = field(default_factory=list)

    async def __call__(self, events: Sequence[Any]) -> None:
        for event in events:
            # while a batch is being processed, no commit may reach it
            safe = self.positions.safe(event.message.partition)
            assert safe is not None and safe <= event.message.offset
            self.seen.append((event.message.partition, event.message.offset))


@dataclass
class _Rewinder:
    """The consumer's fetch positions, which a rewind moves back."""

    position: dict[int, int]
    rewinds: list[tuple[int, int]] = field(default_factory=list)
    fenced: set[int] = field(default_factory=set)

    async def rewind(self, partition: int, offset: int) -> None:
        self.rewinds.append((partition, offset))
        self.position[partition] = offset
        self.fenced.add(partition)

    def rewound(self, partition: int) -> None:
        self.fenced.discard(partition)


@dataclass
class _Worker:
    """One worker's guard over a shared committed-offset store (the broker's)."""

    committed: dict[int, int]
    held: set[int]
    hole_grace_s: float = 15.0
    positions: Positions = field(default_factory=Positions)
    now: float = 0.0
    processor: _Processor = field(init=False)
    rewinder: _Rewinder = field(init=False)
    guard: GuardOffsets = field(init=False)

    def __post_init__(self) -> None:
        self.processor = _Processor(self.positions)
        self.rewinder = _Rewinder(dict(self.committed))
        watch = StallWatch(timeout_s=60)
        watch.assigned(set(self.held), now=0.0)

        async def resume_offsets(partitions: set[int]) -> dict[int, int]:
            return {p: self.committed[p] for p in partitions}

        self.guard = GuardOffsets(
            watch,
            self.positions,
            lambda: set(self.held),
            resume_offsets,
            self.rewinder,
            self.processor,
            hole_grace_s=self.hole_grace_s,
            clock=lambda: self.now,
        )

    def take(self, events: list[_Event]) -> None:
        asyncio.run(self.guard(events))

    def commit(self) -> None:
        """What Faust's commit may name: at most what was proven delivered."""
        for partition in self.held:
            wanted = max((o + 1 for p, o in self.processor.seen if p == partition), default=None)
            offset = capped(wanted, self.positions.safe(partition))
            if offset is not None and offset > self.committed[partition]:
                self.committed[partition] = offset


def test_a_record_fetched_ahead_of_the_committed_offset_rewinds_the_partition() -> None:
    worker = _Worker(committed={0: 100}, held={0})
    worker.take(_batch(0, 120, 121))
    assert worker.processor.seen == []
    assert worker.rewinder.rewinds == [(0, 100)]
    assert worker.rewinder.fenced == {0}
    assert capped(122, worker.positions.safe(0)) == 100  # nothing committed past 100
    worker.now = 1.0
    worker.take(_batch(0, 122))  # fetched before the rewind: no second rewind yet
    assert worker.rewinder.rewinds == [(0, 100)]
    worker.take(_batch(0, *range(100, 125)))  # fetched again from 100
    assert worker.processor.seen == [(0, offset) for offset in range(100, 125)]
    assert worker.rewinder.fenced == set()  # Faust's read offset moves freely again
    assert worker.positions.safe(0) == 125


def test_a_hole_still_open_after_the_grace_stops_the_worker_unprocessed() -> None:
    worker = _Worker(committed={0: 100}, held={0}, hole_grace_s=15.0)
    worker.take(_batch(0, 120))
    worker.now = 2.5
    worker.take(_batch(0, 121))
    assert worker.rewinder.rewinds == [(0, 100), (0, 100)]  # rewound again
    worker.now = 16.0
    with pytest.raises(SkippedRecords, match="offset 122 where 100 comes next"):
        worker.take(_batch(0, 122))
    assert worker.processor.seen == []
    assert capped(123, worker.positions.safe(0)) == 100


def test_one_missing_record_at_the_head_is_a_hole_too() -> None:
    """Faust's own rule commits past a run that misses exactly one head record."""
    worker = _Worker(committed={3: 7}, held={3})
    worker.take(_batch(3, 8, 9))
    assert worker.processor.seen == []
    assert capped(10, worker.positions.safe(3)) == 7


def test_records_below_the_committed_offset_are_dropped() -> None:
    worker = _Worker(committed={0: 100}, held={0})
    worker.take(_batch(0, *range(90, 105)))
    assert worker.processor.seen == [(0, offset) for offset in range(100, 105)]
    assert worker.guard.dropped == 10
    assert worker.positions.safe(0) == 105


def test_records_before_the_assignment_signal_count_and_the_signal_keeps_them() -> None:
    """Faust can deliver an assignment's first records before its signal."""
    worker = _Worker(committed={0: 280}, held={0})
    worker.take(_batch(0, *range(280, 311)))
    worker.positions.assigned({0})  # the signal, late; nothing was committed yet
    worker.take(_batch(0, 311, 312))
    assert worker.processor.seen == [(0, offset) for offset in range(280, 313)]


def test_records_of_a_partition_no_longer_held_are_dropped() -> None:
    worker = _Worker(committed={0: 0, 1: 0}, held={0, 1})
    worker.take(_batch(0, 0, 1, 2))
    worker.held = {1}
    worker.positions.assigned({1})
    assert worker.positions.safe(0) is None  # never commit a partition not held
    worker.take(_batch(0, 3))  # fetched before the revocation, still buffered
    assert worker.processor.seen == [(0, 0), (0, 1), (0, 2)]


def test_a_partition_back_after_another_worker_had_it_resumes_at_their_commit() -> None:
    worker = _Worker(committed={0: 0}, held={0})
    worker.take(_batch(0, 0, 1))
    worker.commit()
    worker.committed[0] = 50  # a generation this worker missed: another one went on
    worker.positions.assigned({0})
    worker.take(_batch(0, 50, 51))
    assert worker.processor.seen == [(0, 0), (0, 1), (0, 50), (0, 51)]


deliveries = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # partition
        st.one_of(
            st.tuples(st.just("fetch"), st.integers(min_value=1, max_value=30)),
            st.tuples(st.just("stale"), st.integers(min_value=0, max_value=119)),
            st.tuples(st.just("commit"), st.just(0)),
            st.tuples(st.just("rebalance"), st.just(0)),
        ),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    committed=st.lists(st.integers(min_value=0, max_value=50), min_size=3, max_size=3),
    plan=deliveries,
    grace=st.sampled_from([0.0, 15.0]),
)
def test_whatever_the_consumer_delivers_every_record_is_processed_and_none_committed_early(
    committed: list[int], plan: list[tuple[int, tuple[str, int]]], grace: float
) -> None:
    """Stale records from anywhere, commits and reassignments in any order, rewinds, and
    a restart from the committed offsets whenever the guard stops the worker: every
    record is processed, and no commit ever names a record that was not."""
    end = 120  # each partition's log end
    worker = _Worker(committed=dict(enumerate(committed)), held={0, 1, 2}, hole_grace_s=grace)
    position = worker.rewinder.position  # the consumer's fetch positions

    def restart() -> None:
        nonlocal worker, position
        seen = worker.processor.seen
        worker = _Worker(committed=worker.committed, held={0, 1, 2}, hole_grace_s=grace)
        worker.processor.seen = seen
        position = worker.rewinder.position

    def take(events: list[_Event]) -> None:
        worker.now += 1.0
        try:
            worker.take(events)
        except SkippedRecords:
            restart()
        processed = {(p, o) for p, o in worker.processor.seen}
        for partition, offset in worker.committed.items():
            assert all((partition, o) in processed for o in range(committed[partition], offset))

    for partition, (kind, n) in plan:
        if kind == "fetch":
            start = position[partition]
            position[partition] = min(start + n, end)
            take(_batch(partition, *range(start, position[partition])))
        elif kind == "stale":  # a fetch from before a seek, a redelivery
            take(_batch(partition, n))
        elif kind == "commit":
            worker.commit()
        else:
            worker.positions.assigned({0, 1, 2})
    for partition in range(3):  # then the consumer behaves until the end
        while position[partition] < end:
            start = position[partition]
            position[partition] = min(start + 25, end)
            take(_batch(partition, *range(start, position[partition])))
    worker.commit()
    for partition in range(3):
        got = sorted({o for p, o in worker.processor.seen if p == partition})
        assert got == list(range(committed[partition], end))
        assert worker.committed[partition] == end
