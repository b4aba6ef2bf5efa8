"""Guards around the batch processor, each a small step wrapping the next (as
getsentry/arroyo composes its strategies): the business code never sees them.

    ExitOnFailure(GuardOffsets(watch, FailOnce(marker, BatchProcessor(...))))
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from processors.watchdog import StallWatch, exit_for_restart

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


class GuardOffsets:
    """Each record of a partition is processed once per assignment, in offset order, with
    no hole; the watchdog hears of every position reached.

    - A record at or below what this assignment already processed was fetched again (at
      start-up Faust's fetcher can deliver records before its seek to the committed
      offset lands, and then deliver them again after it): it is dropped. Its outputs
      went out, and were acknowledged, the first time; acking it again is harmless. A
      new assignment starts afresh (``StallWatch.assigned``), so records another worker
      may have processed meanwhile are processed here.
    - events.raw is written by idempotent, non-transactional producers and never
      compacted, so its offsets have no holes: a jump means the consumer dropped records.
      Nothing of the batch is processed then: the worker exits, and the restart reads
      the hole."""

    def __init__(self, watch: StallWatch, inner: Step) -> None:
        self._watch = watch
        self._inner = inner
        self.dropped = 0  # records delivered again within an assignment

    async def __call__(self, events: Sequence[Any]) -> None:
        now = time.monotonic()
        fresh = []
        for event in events:
            message = event.message
            if self._watch.already_processed(message.partition, message.offset):
                self.dropped += 1
                continue
            skipped_from = self._watch.skipped_before(message.partition, message.offset)
            if skipped_from is not None:
                exit_for_restart(
                    "partition %d: offsets %d..%d were skipped by the consumer; exiting so "
                    "a restart reads them",
                    message.partition,
                    skipped_from,
                    message.offset - 1,
                )
            self._watch.processed(message.partition, message.offset, now)
            fresh.append(event)
        if fresh:
            await self._inner(fresh)


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
