"""Faust's consumer with a commit rule that never passes an unprocessed record of the
guarded topic (events.raw); ``processors.positions`` says what Faust's own rule misses.

Overrides, on the guarded topic only:

- the offset Faust wants to commit is capped at ``Positions.safe``: records delivered,
  in order, from where the group resumed;
- a jump between fetched offsets is not filled into the acked offsets as a "gap": on a
  topic that is never compacted and has no transaction markers, a jump is records the
  consumer skipped, which ``processors.steps.GuardOffsets`` has fetched again;
- ``rewind``: a seek back that works. Faust's fetcher drops every record below the
  highest offset it has passed on (its "read offset"), and records fetched before a seek
  keep arriving after it, raising that offset past the seek again: the records the seek
  fetched would then be dropped. So a rewound partition's read offset is held at the
  seek's offset until the guard has the first record it was waiting for
  (``rewound``): everything from there on reaches the guard, which drops what it does
  not need.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from processors.positions import Positions, capped


class ReadOffsets(defaultdict[TP, int | None]):
    """Faust's read offsets, each held at its fence while a partition is rewound."""

    def __init__(self, known: dict[TP, int | None]) -> None:
        super().__init__(lambda: None, known)
        self.fences: dict[TP, int] = {}

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        super().__setitem__(tp, self.fences.get(tp, offset))


def guard_commits(
    app: faust.App,
    topic: str,
    positions: Positions,
    after_final_commit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Give ``app`` a consumer whose commits of ``topic`` stay within ``positions``
    and whose partitions can be rewound. Call before anything creates the app's
    transport or consumer. ``after_final_commit`` runs when a graceful stop has made
    its last commit (processors.leave: the group gets the partitions back then, not
    after the rest of the shutdown)."""

    class GuardedConsumer(faust_aiokafka.Consumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # before the fetcher starts: it binds the mapping's methods once
            self._fenced = ReadOffsets(dict(self._read_offset))
            self._read_offset = self._fenced

        async def rewind(self, tp: TP, offset: int) -> None:
            """Fetch ``tp`` again from ``offset``, and pass on everything from there."""
            self._fenced.fences[tp] = offset
            await self.seek(tp, offset)

        def rewound(self, tp: TP) -> None:
            self._fenced.fences.pop(tp, None)

        async def on_stop(self) -> None:
            await super().on_stop()  # the agents are stopped; this commits the last time
            if after_final_commit is not None:
                await after_final_commit()

        def _new_offset(self, tp: TP) -> int | None:
            wanted: int | None = super()._new_offset(tp)
            if tp.topic != topic:
                return wanted
            return capped(wanted, positions.safe(tp.partition))

        async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
            if tp.topic != topic:
                await super()._add_gap(tp, offset_from, offset_to)

    class GuardedTransport(faust_aiokafka.Transport):
        Consumer = GuardedConsumer

    transport: Any = GuardedTransport(app.conf.broker_consumer, app)
    app.transport = transport
