"""Guards around the batch processor, each a small step wrapping the next (as
getsentry/arroyo composes its strategies): the business code never sees them.

    ExitOnFailure(GuardOffsets(watch, positions, ..., FailOnce(marker, BatchProcessor(...))))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from processors.positions import Positions
from processors.watchdog import StallWatch, exit_for_restart

log = logging.getLogger(__name__)

Step = Callable[[Sequence[Any]], Awaitable[None]]


class ExitOnFailure:
    """Whatever escapes a batch is infrastructure (content failures were dead-lettered):
    exit at once, without acking. Faust acks taken events in a ``finally`` and commits
    acked offsets on shutdown, which would skip the failed batch for good; exiting
    without a commit makes the restart retry it, as after a SIGKILL. (A shutdown does not
    cancel a batch halfway: ``processors.app.finished_even_if_cancelled``.)"""

    def __init__(self, inner: Step) -> None:
        self._inner = inner

    async def __call__(self, events: Sequence[Any]) -> None:
        try:
            await self._inner(events)
        except BaseException:
            exit_for_restart(
                "processing a batch failed; exiting so a restart retries it", exc_info=True
            )


class SkippedRecords(RuntimeError):
    """The consumer delivered a record past a hole: ExitOnFailure restarts the worker."""

    def __init__(self, partition: int, expected: int, delivered: int) -> None:
        super().__init__(
            f"partition {partition}: the consumer delivered offset {delivered} where "
            f"{expected} comes next; a restart reads {expected}..{delivered - 1} from the "
            "committed offset"
        )
        self.partition = partition
        self.expected = expected


class Rewinder(Protocol):
    async def rewind(self, partition: int, offset: int) -> None: ...
    def rewound(self, partition: int) -> None: ...


class GuardOffsets:
    """Each record of a partition is processed once, in offset order from where the group
    resumes, with no hole; commits never pass what was delivered (``processors.positions``
    says why Faust's own rule is not enough).

    - Records of a partition the consumer no longer holds (fetched before a revocation)
      are dropped: the partition's new owner processes them.
    - On the first record of a partition after an assignment, the broker is asked where
      the group resumes it: that, not the first record fetched, is where processing
      starts. (Faust can deliver an assignment's first records before its own
      assignment signal: the consumer's assignment is what counts.)
    - A record below the next expected offset was processed already (by this worker, or
      by the partition's previous owner: Faust's fetcher can deliver records before its
      seek to the committed offset lands, and again after it): it is dropped.
    - A record past the next expected offset means the consumer skipped records: a fetch
      from before the seek to the committed offset, delivered after it (seen after
      rebalances). events.raw is written by idempotent, non-transactional producers and
      never compacted, so its offsets have no holes. The record is dropped and the
      partition rewound to the next expected offset (``processors.commits``), again
      every ``REWIND_EVERY_S`` while the hole stays open. Commits stay behind the hole
      meanwhile. If it is not filled within ``hole_grace_s``, ``SkippedRecords`` stops
      the worker (ExitOnFailure), and its restart reads the hole from the committed
      offset.
    - After the batch's effects are delivered, ``Positions.delivered`` lets commits
      reach them; the watchdog hears of every position reached."""

    REWIND_EVERY_S = 2.0

    def __init__(
        self,
        watch: StallWatch,
        positions: Positions,
        assignment: Callable[[], set[int]],
        resume_offsets: Callable[[set[int]], Awaitable[dict[int, int]]],
        rewinder: Rewinder,
        inner: Step,
        hole_grace_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._watch = watch
        self._positions = positions
        self._assignment = assignment
        self._resume_offsets = resume_offsets
        self._rewinder = rewinder
        self._inner = inner
        self._hole_grace_s = hole_grace_s
        self._clock = clock
        self._holes: dict[int, tuple[int, float, float]] = {}  # p -> (expected, since, rewound)
        self.dropped = 0  # records delivered again, or of partitions no longer held
        self.ahead = 0  # records delivered past a hole (fetched again after a rewind)

    async def __call__(self, events: Sequence[Any]) -> None:
        positions = self._positions
        held = self._assignment() & {event.message.partition for event in events}
        while unknown := positions.unknown(held):
            epoch = positions.epoch
            resumes = await self._resume_offsets(unknown)
            if not positions.started(epoch, resumes):  # reassigned meanwhile: ask again
                held &= self._assignment()
        now = self._clock()
        fresh = []
        ahead: dict[int, tuple[int, int]] = {}  # partition -> (expected, first past it)
        for event in events:
            partition, offset = event.message.partition, event.message.offset
            expected = positions.next(partition) if partition in held else None
            if expected is None or offset < expected:
                self.dropped += 1
                continue
            if offset > expected:
                self.ahead += 1
                ahead.setdefault(partition, (expected, offset))
                continue
            positions.advance(partition, offset)
            self._watch.processed(partition, offset, now)
            fresh.append(event)
        for partition in list(self._holes):
            if positions.next(partition) != self._holes[partition][0]:  # filled, or gone
                del self._holes[partition]
                self._rewinder.rewound(partition)
        for partition, (expected, offset) in ahead.items():
            if positions.next(partition) == expected:  # else later records filled it
                await self._mind_the_hole(partition, expected, offset, now)
        if fresh:
            await self._inner(fresh)
            positions.delivered({event.message.partition for event in fresh})

    async def _mind_the_hole(
        self, partition: int, expected: int, delivered: int, now: float
    ) -> None:
        known = self._holes.get(partition)
        if known is not None and known[0] != expected:  # an older hole was filled
            known = None
        since, rewound = (now, None) if known is None else known[1:]
        if now - since > self._hole_grace_s:
            raise SkippedRecords(partition, expected, delivered)
        if rewound is None or now - rewound >= self.REWIND_EVERY_S:
            if known is None:
                log.warning(
                    "partition %d: the consumer delivered offset %d where %d comes next; "
                    "fetching again from %d",
                    partition,
                    delivered,
                    expected,
                    expected,
                )
            await self._rewinder.rewind(partition, expected)
            rewound = now
        self._holes[partition] = (expected, since, rewound)


class FailOnce:
    """Tests only (``LEARNSTREAM_FAULT_FAIL_MARKER``): an infrastructure failure in the
    middle of a batch, once: the first half is carried out, then the batch fails."""

    def __init__(self, marker: Path | None, inner: Step) -> None:
        self._marker = marker
        self._inner = inner

    async def __call__(self, events: Sequence[Any]) -> None:
        marker = self._marker
        if marker is None or marker.exists():
            await self._inner(events)
            return
        await self._inner(events[: len(events) // 2])  # nothing of a batch of one
        marker.touch()
        raise RuntimeError("fault injection: this batch fails halfway through, once")
