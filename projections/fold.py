"""The batch fold: a whole log, in log order, deduplicated by event_id."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from projections.events import Event
from projections.learner import Derived, LearnerState, apply


@dataclass
class FoldResult:
    learners: dict[str, LearnerState] = field(default_factory=dict)
    derived: list[Derived] = field(default_factory=list)
    duplicates: int = 0


def fold_log(events: Iterable[Event]) -> FoldResult:
    """Every learner's state after the log; a repeated event_id is ignored (first wins)."""
    result = FoldResult()
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            result.duplicates += 1
            continue
        seen.add(event.event_id)
        if event.user_id is None:
            continue
        state = result.learners.get(event.user_id, LearnerState())
        result.learners[event.user_id], derived = apply(state, event)
        result.derived.extend(derived)
    return result
