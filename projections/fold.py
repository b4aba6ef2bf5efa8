"""The batch fold: a whole log, in log order, through the same rulebook as live."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from projections.delivery import Position
from projections.events import Event
from projections.learner import Derived, LearnerState, TopicMastery
from projections.policy import Policy, everything_kept
from projections.rulebook import (
    COURSE,
    DRILLS,
    LEARNER,
    TOPIC,
    Incoming,
    LearnerEntry,
    Ledger,
    Rulebook,
    Verdict,
    split_key,
)


@dataclass
class FoldResult:
    learners: dict[str, LearnerState] = field(default_factory=dict)
    derived: list[Derived] = field(default_factory=list)
    verdicts: Counter[Verdict] = field(default_factory=Counter)
    users: set[str] = field(default_factory=set)  # every learner with an event in the log

    @property
    def duplicates(self) -> int:
        return self.verdicts[Verdict.DUPLICATE]


def fold_log(events: Iterable[Event], policy: Policy = everything_kept) -> FoldResult:
    """Every learner's state after the log, as the live processors would leave it (one
    message per event, in order; a repeated event_id is a duplicate, first wins)."""
    result = FoldResult()
    book = Rulebook(remember_outputs=False)
    ledger = Ledger(lambda table, key: None)
    for offset, event in enumerate(events):
        category, rate = policy(event.event_type)
        outcome = book.step(ledger, Incoming(event, Position(0, offset), 0, category, rate))
        result.verdicts[outcome.verdict] += 1
        result.derived.extend(outcome.derived)
        if event.user_id is not None:
            result.users.add(event.user_id)
    result.learners = gathered(ledger)
    return result


def gathered(ledger: Ledger) -> dict[str, LearnerState]:
    """Every learner's pieces in ``ledger``, gathered per learner."""
    summaries: dict[str, LearnerEntry] = dict(ledger.values(LEARNER))
    topics: dict[str, dict[str, TopicMastery]] = {}
    courses: dict[str, dict[str, frozenset[str]]] = {}
    for key, piece in ledger.values(TOPIC):
        user, topic = split_key(key)
        topics.setdefault(user, {})[topic] = piece
    for key, piece in ledger.values(COURSE):
        user, course = split_key(key)
        courses.setdefault(user, {})[course] = piece
    drills = dict(ledger.values(DRILLS))
    return {
        user: LearnerState(
            entry.summary,
            topics.get(user, {}),
            courses.get(user, {}),
            tuple(drills.get(user, ())),
        )
        for user, entry in summaries.items()
    }
