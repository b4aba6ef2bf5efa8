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

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Month = tuple[int, int]


@dataclass(frozen=True)
class PendingRow:
    offset: int
    timestamp: datetime
    row: list[Any]


@dataclass(frozen=True)
class SourceRun:
    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class PlannedInsert:
    rows: tuple[list[Any], ...]
    runs: tuple[SourceRun, ...]

    @property
    def dedup_token(self) -> str:
        return "+".join(
            f"{r.topic}/{r.partition}/{r.first_offset}-{r.last_offset}" for r in self.runs
        )


def _month(moment: datetime) -> Month:
    return moment.year, moment.month


def _month_runs(
    topic: str, partition: int, pending: Sequence[PendingRow]
) -> list[tuple[Month, SourceRun, list[list[Any]]]]:
    """One partition's rows (in offset order) as consecutive single-month runs."""
    runs: list[tuple[Month, SourceRun, list[list[Any]]]] = []
    start = 0
    for i in range(1, len(pending) + 1):
        if i == len(pending) or _month(pending[i].timestamp) != _month(pending[start].timestamp):
            chunk = pending[start:i]
            run = SourceRun(topic, partition, chunk[0].offset, chunk[-1].offset)
            runs.append((_month(chunk[0].timestamp), run, [p.row for p in chunk]))
            start = i
    return runs


def plan_inserts(pending: Mapping[tuple[str, int], Sequence[PendingRow]]) -> list[PlannedInsert]:
    """Plan the inserts of one table from each source partition's pending rows."""
    queues = {tp: _month_runs(tp[0], tp[1], rows) for tp, rows in sorted(pending.items())}
    plans: list[PlannedInsert] = []
    while any(queues.values()):
        # each round takes the next run of every partition, so a partition's runs keep
        # their order across rounds and no insert holds two runs of one partition
        by_month: dict[Month, list[tuple[SourceRun, list[list[Any]]]]] = defaultdict(list)
        for queue in queues.values():
            if queue:
                month, run, rows = queue.pop(0)
                by_month[month].append((run, rows))
        for month in sorted(by_month):
            runs = by_month[month]
            plans.append(
                PlannedInsert(
                    rows=tuple(row for _, rows in runs for row in rows),
                    runs=tuple(run for run, _ in runs),
                )
            )
    return plans
