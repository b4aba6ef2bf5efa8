"""Exactly-once effects on top of at-least-once delivery, as plain decisions.

Faust flushes table changelogs before it commits source offsets, but the two are not
atomic: after a crash a message can be delivered again. So every piece of state
remembers *which source message* it came from, and a redelivery is told apart from
a true duplicate by that position, not by the event id alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class Position:
    """Where a message sits in the source log."""

    partition: int
    offset: int

    def as_json(self) -> dict[str, int]:
        return {"p": self.partition, "o": self.offset}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Position:
        return cls(int(value["p"]), int(value["o"]))


class Seen(Enum):
    FIRST_TIME = "first_time"
    REDELIVERED = "redelivered"  # same message again after a crash: process, idempotently
    DUPLICATE = "duplicate"  # same event_id in another message: drop


def classify(first_seen_at: Position | None, here: Position) -> Seen:
    if first_seen_at is None:
        return Seen.FIRST_TIME
    if first_seen_at == here:
        return Seen.REDELIVERED
    return Seen.DUPLICATE


def already_applied(applied_up_to: Position | None, here: Position) -> bool:
    """State keyed by user lives on the user's partition, so offsets order it."""
    return (
        applied_up_to is not None
        and applied_up_to.partition == here.partition
        and applied_up_to.offset >= here.offset
    )
