"""Blind spots (seed 000): the drills a learner scores lowest on lately.

From session_completed ``scores[]`` whose event timestamp lies within the 30 days
before T (inclusive): per drill_id the average score and the number of attempts;
the three lowest averages, ties broken by drill_id. The drill_name shown is the one
from the most recent session, so the answer does not depend on arrival order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec

WINDOW = timedelta(days=30)
HOW_MANY = 3
# Scores older than the newest event minus WINDOW minus this bound are dropped from
# live state: an as-of time that far behind the newest event is not asked for.
LATENESS_BOUND = timedelta(days=7)


class DrillAttempt(msgspec.Struct, frozen=True, array_like=True):
    timestamp: datetime
    event_id: str
    drill_id: Any
    drill_name: Any
    score: float


def attempts_from(timestamp: datetime, event_id: str, scores: Any) -> tuple[DrillAttempt, ...]:
    """The usable entries of a session_completed ``scores[]``; malformed ones are skipped."""
    if not isinstance(scores, list):
        return ()
    found = []
    for entry in scores:
        if not isinstance(entry, dict) or entry.get("drill_id") is None:
            continue
        score = entry.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            continue
        found.append(
            DrillAttempt(
                timestamp, event_id, entry["drill_id"], entry.get("drill_name"), float(score)
            )
        )
    return tuple(found)


def _drill_order(drill_id: Any) -> tuple[int, Any]:
    # ids are strings after the collector; raw fold input may carry numbers
    if isinstance(drill_id, int | float) and not isinstance(drill_id, bool):
        return (0, drill_id)
    return (1, str(drill_id))


def _before(moment: datetime, span: timedelta) -> datetime:
    """``moment - span``, or the earliest representable instant when that falls before
    year 1: a valid event near the start of the calendar (.NET's DateTime.MinValue) makes
    the window start at the beginning of time instead of failing the whole fold."""
    try:
        return moment - span
    except OverflowError:
        return datetime.min.replace(tzinfo=moment.tzinfo)


def blind_spots(attempts: Iterable[DrillAttempt], as_of: datetime) -> list[dict[str, Any]]:
    by_drill: dict[Any, list[DrillAttempt]] = defaultdict(list)
    since = _before(as_of, WINDOW)
    for attempt in attempts:
        if since <= attempt.timestamp <= as_of:
            by_drill[attempt.drill_id].append(attempt)
    ranked = []
    for drill_id, group in by_drill.items():
        newest = max(group, key=lambda a: (a.timestamp, a.event_id))
        average = math.fsum(a.score for a in group) / len(group)  # fsum: order-independent
        ranked.append((average, _drill_order(drill_id), drill_id, newest.drill_name, len(group)))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [
        {"drill_id": drill_id, "drill_name": name, "avg_score": average, "attempts": count}
        for average, _, drill_id, name, count in ranked[:HOW_MANY]
    ]


def prune(attempts: tuple[DrillAttempt, ...], newest: datetime) -> tuple[DrillAttempt, ...]:
    horizon = _before(newest, WINDOW + LATENESS_BOUND)
    return tuple(a for a in attempts if a.timestamp >= horizon)
