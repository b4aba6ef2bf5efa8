"""Pure planning of inserts: which rows go together, and under which token.

Each planned insert falls in one monthly table partition, so ClickHouse writes it as
one part: atomically, all or nothing. It holds, for each source partition it covers,
one run of that partition's consecutive pending rows, and a partition's runs are
planned in offset order. So after any insert lands, "the highest source offset
stored" per partition is an exact record of progress. Runs of different source
partitions share an insert when they share a month: in the usual batch, one insert
per table instead of one per partition (fewer parts, and each insert's fixed cost,
materialized views included, is paid once).
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import chain
from typing import Any, NamedTuple, cast

Month = tuple[int, int]
_NO_MONTH = datetime(1970, 1, 1)  # a split plan's rows are already in their month


class PendingRow(NamedTuple):
    """One record's row, waiting to be planned. A tuple: one is built per record, and
    a frozen dataclass costs a ``object.__setattr__`` call per field to build."""

    offset: int
    timestamp: datetime
    row: list[Any]


# A PendingRow from its three fields as one tuple, built in C: the NamedTuple's own
# constructor is a Python lambda, 1.2 µs a row in the sink (BENCHMARKS.md, session 8).
pending_row = cast(
    Callable[[tuple[int, datetime, list[Any]]], PendingRow],
    partial(tuple.__new__, PendingRow),
)


@dataclass(frozen=True)
class SourceRun:
    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class PlannedInsert:
    rows: tuple[list[Any], ...]
    runs: tuple[SourceRun, ...]  # rows hold each run's rows in turn, in offset order
    offsets: tuple[int, ...]  # each row's source offset

    @property
    def dedup_token(self) -> str:
        return "+".join(
            f"{r.topic}/{r.partition}/{r.first_offset}-{r.last_offset}" for r in self.runs
        )


# C-level getters: planning touches every row the sink stores
_TIMESTAMP = operator.attrgetter("timestamp")
_ROW = operator.attrgetter("row")
_OFFSET = operator.attrgetter("offset")


def _month_runs(
    topic: str, partition: int, pending: Sequence[PendingRow]
) -> list[tuple[Month, SourceRun, Sequence[PendingRow]]]:
    """One partition's rows (in offset order) as consecutive single-month runs.
    Called on every row the sink stores, so a row's month is compared, not built."""
    if not pending:
        return []
    earliest, latest = min(map(_TIMESTAMP, pending)), max(map(_TIMESTAMP, pending))
    if (earliest.year, earliest.month) == (latest.year, latest.month):  # the usual batch
        run = SourceRun(topic, partition, pending[0].offset, pending[-1].offset)
        return [((earliest.year, earliest.month), run, pending)]
    runs: list[tuple[Month, SourceRun, Sequence[PendingRow]]] = []
    start = 0
    while start < len(pending):
        first = pending[start].timestamp
        year, month = first.year, first.month
        end = start + 1
        while end < len(pending):
            moment = pending[end].timestamp
            if moment.month != month or moment.year != year:
                break
            end += 1
        chunk = pending[start:end]
        runs.append(
            ((year, month), SourceRun(topic, partition, chunk[0].offset, chunk[-1].offset), chunk)
        )
        start = end
    return runs


def _planned(runs: Sequence[tuple[SourceRun, Sequence[PendingRow]]]) -> PlannedInsert:
    return PlannedInsert(
        rows=tuple(chain.from_iterable(map(_ROW, chunk) for _, chunk in runs)),
        runs=tuple(run for run, _ in runs),
        offsets=tuple(chain.from_iterable(map(_OFFSET, chunk) for _, chunk in runs)),
    )


def plan_inserts(pending: Mapping[tuple[str, int], Sequence[PendingRow]]) -> list[PlannedInsert]:
    """Plan the inserts of one table from each source partition's pending rows."""
    queues = {tp: _month_runs(tp[0], tp[1], rows) for tp, rows in sorted(pending.items())}
    plans: list[PlannedInsert] = []
    while any(queues.values()):
        # each round takes the next run of every partition, so a partition's runs keep
        # their order across rounds and no insert holds two runs of one partition
        by_month: dict[Month, list[tuple[SourceRun, Sequence[PendingRow]]]] = defaultdict(list)
        for queue in queues.values():
            if queue:
                month, run, chunk = queue.pop(0)
                by_month[month].append((run, chunk))
        plans.extend(_planned(by_month[month]) for month in sorted(by_month))
    return plans


def halves(plan: PlannedInsert) -> tuple[PlannedInsert, PlannedInsert]:
    """Two inserts that store together what ``plan`` of two or more rows stores.

    Inserted first then second, they keep the rule every plan keeps: a partition's rows
    are stored in offset order, so the highest stored offset stays an exact record of
    progress. Several runs are split between the halves (one partition each); a single
    run is cut in the middle of its rows. Deterministic, so a retry after a crash
    splits the same way and reuses the same deduplication tokens."""
    if len(plan.rows) < 2:
        raise ValueError("a plan of one row cannot be split")
    chunks: list[tuple[SourceRun, Sequence[PendingRow]]] = []
    start = 0
    for run in plan.runs:
        end = plan.offsets.index(run.last_offset, start) + 1
        chunk = [
            PendingRow(offset, _NO_MONTH, row)
            for offset, row in zip(plan.offsets[start:end], plan.rows[start:end], strict=True)
        ]
        chunks.append((run, chunk))
        start = end
    if len(chunks) > 1:
        middle = len(chunks) // 2
        return _planned(chunks[:middle]), _planned(chunks[middle:])
    ((only, rows),) = chunks
    middle = len(rows) // 2
    first = SourceRun(only.topic, only.partition, rows[0].offset, rows[middle - 1].offset)
    second = SourceRun(only.topic, only.partition, rows[middle].offset, rows[-1].offset)
    return _planned([(first, rows[:middle])]), _planned([(second, rows[middle:])])
