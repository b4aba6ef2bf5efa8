"""XP per learner: how many points each event awards, and the running total.

Rules (seed 002): lesson_completed 50 XP; quiz_completed round(score) XP, score
on a 0-100 scale, rounded half up; anything else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from projections.events import Event
from projections.rounding import round_half_up

LESSON_XP = 50


def xp_for(event: Event) -> int:
    if event.event_type == "lesson_completed":
        return LESSON_XP
    if event.event_type == "quiz_completed":
        return round_half_up(float(event.properties["score"]))
    return 0


@dataclass(frozen=True)
class XpState:
    xp: int = 0
    events_applied: int = 0


@dataclass(frozen=True)
class XpEarned:
    """Derived output: an award, traceable to the event that earned it."""

    user_id: str
    source_event_id: str
    amount: int
    total_xp: int


def apply_xp(state: XpState, event: Event) -> tuple[XpState, list[XpEarned]]:
    amount = xp_for(event)
    new_state = replace(state, xp=state.xp + amount, events_applied=state.events_applied + 1)
    if amount == 0 or event.user_id is None:
        return new_state, []
    return new_state, [XpEarned(event.user_id, event.event_id, amount, new_state.xp)]
