"""One learner's state and the fold step ``apply(state, event) -> (state, derived)``.

Composes the rules in xp, streaks, mastery, modes, blind_spots and study. Pure: no I/O, no
clock. ``summary`` renders the state as of a given time (the fold CLI's shape) and
``to_json`` / ``from_json`` carry it through a changelog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from projections.blind_spots import DrillAttempt, attempts_from, blind_spots, prune
from projections.events import Event, parse_instant, zone
from projections.mastery import MASTERY_THRESHOLD, PRIOR, bkt_update
from projections.modes import ModeProgress
from projections.streaks import ACTIVITY_TYPES, add_active_day, current_streak
from projections.study import StudyStats, apply_study, study_from_json, study_to_json
from projections.xp import level_for, xp_for


@dataclass(frozen=True)
class Derived:
    """A derived event: what happened to the learner because of ``source_event_id``."""

    kind: str  # xp_earned | level_up | streak_continued | streak_broken | concept_mastered
    user_id: str
    source_event_id: str
    timestamp: datetime
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class Latest:
    """The learner's newest event by event time: its zone decides "today"."""

    timestamp: datetime
    event_id: str
    timezone: str | None


@dataclass(frozen=True)
class LearnerState:
    xp: int = 0
    events_applied: int = 0
    active_days: frozenset[int] = frozenset()
    longest_streak: int = 0
    latest: Latest | None = None
    mastery: Mapping[str, float] = field(default_factory=dict)
    mastered: frozenset[str] = frozenset()
    modes: Mapping[str, ModeProgress] = field(default_factory=dict)
    drill_attempts: tuple[DrillAttempt, ...] = ()
    study: StudyStats = field(default_factory=StudyStats)

    @property
    def level(self) -> int:
        return level_for(self.xp)


def _newer(latest: Latest | None, event: Event) -> Latest:
    candidate = Latest(event.timestamp, event.event_id, event.timezone)
    if latest is None or (candidate.timestamp, candidate.event_id) > (
        latest.timestamp,
        latest.event_id,
    ):
        return candidate
    return latest


def _derive(event: Event, kind: str, **properties: Any) -> Derived:
    assert event.user_id is not None
    return Derived(kind, event.user_id, event.event_id, event.timestamp, properties)


def _apply_xp(state: LearnerState, event: Event, out: list[Derived]) -> LearnerState:
    amount = xp_for(event)
    if amount == 0:
        return state
    total = state.xp + amount
    out.append(
        _derive(
            event, "xp_earned", xp_amount=amount, xp_source=event.event_type, new_total_xp=total
        )
    )
    old_level, new_level = level_for(state.xp), level_for(total)
    if new_level > old_level:
        out.append(
            _derive(event, "level_up", old_level=old_level, new_level=new_level, total_xp=total)
        )
    return replace(state, xp=total)


def _apply_streak(state: LearnerState, event: Event, out: list[Derived]) -> LearnerState:
    if event.event_type not in ACTIVITY_TYPES:
        return state
    days, longest, change = add_active_day(
        state.active_days, state.longest_streak, event.local_date
    )
    if change is not None:
        out.append(
            _derive(
                event,
                change.kind,
                old_streak=change.old_streak,
                new_streak=change.new_streak,
                is_new_record=change.is_new_record,
            )
        )
    return replace(state, active_days=days, longest_streak=longest)


def _apply_mastery(state: LearnerState, event: Event, out: list[Derived]) -> LearnerState:
    if event.event_type != "question_submit":
        return state
    topic, correct = event.properties.get("topic_id"), event.properties.get("is_correct")
    if topic is None or not isinstance(correct, bool):
        return state
    topic = str(topic)
    p = bkt_update(state.mastery.get(topic, PRIOR), correct)
    mastered = state.mastered
    if p >= MASTERY_THRESHOLD and topic not in mastered:
        mastered = mastered | {topic}
        out.append(_derive(event, "concept_mastered", topic_id=topic, mastery_probability=p))
    return replace(state, mastery={**state.mastery, topic: p}, mastered=mastered)


def _apply_session(state: LearnerState, event: Event) -> LearnerState:
    if event.event_type != "session_completed":
        return state
    props = event.properties
    mode = props.get("practice_mode_id")
    modes = state.modes
    if mode is not None:
        drills = props.get("drills_completed")
        drills = drills if isinstance(drills, int) and not isinstance(drills, bool) else 0
        progress = modes.get(str(mode), ModeProgress()).after_session(drills)
        modes = {**modes, str(mode): progress}
    attempts = state.drill_attempts + attempts_from(
        event.timestamp, event.event_id, props.get("scores")
    )
    return replace(state, modes=modes, drill_attempts=attempts)


def apply(state: LearnerState, event: Event) -> tuple[LearnerState, list[Derived]]:
    """Fold one (already deduplicated) event of this learner into the state."""
    derived: list[Derived] = []
    state = _apply_xp(state, event, derived)
    state = _apply_streak(state, event, derived)
    state = _apply_mastery(state, event, derived)
    state = _apply_session(state, event)
    state = replace(state, study=apply_study(state.study, event, xp_for(event)))
    latest = _newer(state.latest, event)
    state = replace(
        state,
        events_applied=state.events_applied + 1,
        latest=latest,
        drill_attempts=prune(state.drill_attempts, latest.timestamp),
    )
    return state, derived


def today(state: LearnerState, as_of: datetime) -> date:
    """T's calendar date in the zone of the learner's latest event (UTC if none)."""
    timezone = state.latest.timezone if state.latest else None
    return as_of.astimezone(zone(timezone)).date()


def summary(state: LearnerState, as_of: datetime) -> dict[str, Any]:
    """The learner as of ``as_of``, in the fold CLI's documented shape."""
    return {
        "xp": state.xp,
        "level": state.level,
        "current_streak": current_streak(state.active_days, today(state, as_of)),
        "longest_streak": state.longest_streak,
        "mastery": dict(sorted(state.mastery.items())),
        "mastered": sorted(state.mastered),
        "blind_spots": blind_spots(state.drill_attempts, as_of),
        "modes": {
            mode: {
                "current_level": p.current_level,
                "total_sessions": p.total_sessions,
                "total_drills_completed": p.total_drills_completed,
                "sessions_at_current_level": p.sessions_at_current_level,
            }
            for mode, p in sorted(state.modes.items())
        },
    }


def to_json(state: LearnerState) -> dict[str, Any]:
    latest = state.latest
    return {
        "xp": state.xp,
        "n": state.events_applied,
        "days": sorted(state.active_days),
        "longest": state.longest_streak,
        "latest": None
        if latest is None
        else [latest.timestamp.isoformat(), latest.event_id, latest.timezone],
        "mastery": dict(state.mastery),
        "mastered": sorted(state.mastered),
        "modes": {
            m: [
                p.current_level,
                p.total_sessions,
                p.total_drills_completed,
                p.sessions_at_current_level,
            ]
            for m, p in state.modes.items()
        },
        "drills": [
            [a.timestamp.isoformat(), a.event_id, a.drill_id, a.drill_name, a.score]
            for a in state.drill_attempts
        ],
        "study": study_to_json(state.study),
    }


def from_json(data: Mapping[str, Any]) -> LearnerState:
    latest = data["latest"]
    return LearnerState(
        xp=data["xp"],
        events_applied=data["n"],
        active_days=frozenset(data["days"]),
        longest_streak=data["longest"],
        latest=None if latest is None else Latest(parse_instant(latest[0]), latest[1], latest[2]),
        mastery=dict(data["mastery"]),
        mastered=frozenset(data["mastered"]),
        modes={m: ModeProgress(*values) for m, values in data["modes"].items()},
        drill_attempts=tuple(
            DrillAttempt(parse_instant(t), e, d, n, s) for t, e, d, n, s in data["drills"]
        ),
        study=study_from_json(data.get("study")),
    )
