"""Pure planning of inserts: which rows go together, and under which token.

Each planned insert holds consecutive offsets of one source partition that fall in
one monthly table partition, so ClickHouse writes it as one part: atomically, all or
nothing. That makes "the highest source offset stored" an exact record of progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PendingRow:
    offset: int
    timestamp: datetime
    row: list[Any]


@dataclass(frozen=True)
class PlannedInsert:
    topic: str
    partition: int
    rows: tuple[list[Any], ...]
    first_offset: int
    last_offset: int

    @property
    def dedup_token(self) -> str:
        return f"{self.topic}/{self.partition}/{self.first_offset}-{self.last_offset}"


def _month(moment: datetime) -> tuple[int, int]:
    return moment.year, moment.month


def plan_inserts(topic: str, partition: int, pending: Sequence[PendingRow]) -> list[PlannedInsert]:
    """Split one partition's rows (in offset order) into single-month runs."""
    plans: list[PlannedInsert] = []
    run: list[PendingRow] = []
    for item in pending:
        if run and _month(item.timestamp) != _month(run[-1].timestamp):
            plans.append(_plan(topic, partition, run))
            run = []
        run.append(item)
    if run:
        plans.append(_plan(topic, partition, run))
    return plans


def _plan(topic: str, partition: int, run: list[PendingRow]) -> PlannedInsert:
    return PlannedInsert(
        topic=topic,
        partition=partition,
        rows=tuple(item.row for item in run),
        first_offset=run[0].offset,
        last_offset=run[-1].offset,
    )
