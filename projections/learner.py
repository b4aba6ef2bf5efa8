"""One learner's state, in pieces, and the fold step over them.

An event reads and writes only the pieces it touches, so the cost of an event does not
depend on the learner's history:

- ``Summary`` (one per learner): XP, counters, the streak window, the newest event,
  study totals, recent daily stats, per-course counts and practice-mode progress. Its
  size is bounded whatever the history (every part is a counter, a fixed window or one
  entry per course / mode).
- ``TopicMastery`` per (learner, topic): read and written by question_submit only.
- the completed content ids per (learner, course): by lesson/quiz completions only.
- the recent drill attempts per learner (30 days + lateness): by session_completed.

``step`` folds one event into the pieces it needs (``needs``). ``LearnerState`` gathers
every piece of one learner, for the batch fold and the fold CLI: ``apply`` on it is
``step`` on its pieces. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import msgspec

from projections.blind_spots import DrillAttempt, attempts_from, blind_spots, prune
from projections.events import Event, zone
from projections.mastery import MASTERY_THRESHOLD, PRIOR, bkt_update
from projections.modes import ModeProgress
from projections.streaks import ACTIVITY_TYPES, Streak, add_active_day, current_streak
from projections.study import CONTENT_COMPLETIONS, StudyStats, apply_study
from projections.xp import level_for, xp_for


class Derived(msgspec.Struct, frozen=True, array_like=True):
    """A derived event: what happened to the learner because of ``source_event_id``."""

    kind: str  # xp_earned | level_up | streak_continued | streak_broken | concept_mastered
    user_id: str
    source_event_id: str
    timestamp: datetime
    properties: dict[str, Any]


class Latest(msgspec.Struct, frozen=True, array_like=True):
    """The learner's newest event by event time: its zone decides "today"."""

    timestamp: datetime
    event_id: str
    timezone: str | None

    @property
    def local_date(self) -> date:
        return self.timestamp.astimezone(zone(self.timezone)).date()


class Summary(msgspec.Struct, frozen=True, array_like=True):
    xp: int = 0
    events_applied: int = 0
    streak: Streak = Streak()
    latest: Latest | None = None
    study: StudyStats = StudyStats()
    courses: dict[str, int] = msgspec.field(default_factory=dict)  # completed content
    modes: dict[str, ModeProgress] = msgspec.field(default_factory=dict)

    @property
    def level(self) -> int:
        return level_for(self.xp)


class TopicMastery(msgspec.Struct, frozen=True, array_like=True):
    p: float = PRIOR
    mastered: bool = False


@dataclass(frozen=True)
class Needs:
    """The pieces beyond the summary that one event reads and writes."""

    topic: str | None = None  # question_submit with a topic and a boolean answer
    course: str | None = None  # a content completion within a course
    content: str | None = None
    drills: bool = False  # session_completed: its scores join the recent attempts


NOTHING_MORE = Needs()


def needs(event: Event) -> Needs:
    kind, props = event.event_type, event.properties
    if kind == "question_submit":
        topic = props.get("topic_id")
        if topic is not None and isinstance(props.get("is_correct"), bool):
            return Needs(topic=str(topic))
    elif kind in CONTENT_COMPLETIONS:
        course, content = props.get("course_id"), props.get("content_id")
        if course is not None and content is not None:
            return Needs(course=str(course), content=str(content))
    elif kind == "session_completed":
        return Needs(drills=True)
    return NOTHING_MORE


@dataclass(frozen=True)
class Pieces:
    """The pieces one event reads (None: that piece does not exist yet, or is not needed)."""

    summary: Summary
    topic: TopicMastery | None = None
    course: frozenset[str] | None = None
    drills: tuple[DrillAttempt, ...] | None = None


def _derive(event: Event, kind: str, **properties: Any) -> Derived:
    assert event.user_id is not None
    return Derived(kind, event.user_id, event.event_id, event.timestamp, properties)


def _newer(latest: Latest | None, event: Event) -> Latest:
    if latest is None or (event.timestamp, event.event_id) > (latest.timestamp, latest.event_id):
        return Latest(event.timestamp, event.event_id, event.timezone)
    return latest


def _xp(xp: int, amount: int, event: Event, out: list[Derived]) -> int:
    if amount == 0:
        return xp
    total = xp + amount
    out.append(
        _derive(
            event, "xp_earned", xp_amount=amount, xp_source=event.event_type, new_total_xp=total
        )
    )
    old_level, new_level = level_for(xp), level_for(total)
    if new_level > old_level:
        out.append(
            _derive(event, "level_up", old_level=old_level, new_level=new_level, total_xp=total)
        )
    return total


def _streak(streak: Streak, event: Event, out: list[Derived]) -> Streak:
    if event.event_type not in ACTIVITY_TYPES:
        return streak
    streak, change = add_active_day(streak, event.local_date)
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
    return streak


def _mastery(
    piece: TopicMastery | None, topic: str, event: Event, out: list[Derived]
) -> TopicMastery:
    before = piece or TopicMastery()
    p = bkt_update(before.p, event.properties["is_correct"])
    if p >= MASTERY_THRESHOLD and not before.mastered:
        out.append(_derive(event, "concept_mastered", topic_id=topic, mastery_probability=p))
        return TopicMastery(p, True)
    return TopicMastery(p, before.mastered)


def _modes(modes: dict[str, ModeProgress], event: Event) -> dict[str, ModeProgress]:
    mode = event.properties.get("practice_mode_id")
    if event.event_type != "session_completed" or mode is None:
        return modes
    drills = event.properties.get("drills_completed")
    drills = drills if isinstance(drills, int) and not isinstance(drills, bool) else 0
    return {**modes, str(mode): modes.get(str(mode), ModeProgress()).after_session(drills)}


def step(pieces: Pieces, event: Event, wanted: Needs) -> tuple[Pieces, list[Derived]]:
    """Fold one (already deduplicated) event of this learner into the pieces it needs."""
    derived: list[Derived] = []
    before = pieces.summary
    amount = xp_for(event)
    xp = _xp(before.xp, amount, event, derived)
    streak = _streak(before.streak, event, derived)
    topic = None if wanted.topic is None else _mastery(pieces.topic, wanted.topic, event, derived)
    latest = _newer(before.latest, event)
    courses, course = before.courses, pieces.course
    if wanted.course is not None and wanted.content is not None:
        done = course or frozenset()
        if wanted.content not in done:
            course = done | {wanted.content}
            courses = {**courses, wanted.course: len(course)}
    drills = pieces.drills
    if wanted.drills:
        attempts = attempts_from(event.timestamp, event.event_id, event.properties.get("scores"))
        drills = prune((drills or ()) + attempts, latest.timestamp)
    summary = Summary(
        xp=xp,
        events_applied=before.events_applied + 1,
        streak=streak,
        latest=latest,
        # the UTC day of the newest event: it never moves back, whatever the zones
        study=apply_study(before.study, event, amount, latest.timestamp.date().toordinal()),
        courses=courses,
        modes=_modes(before.modes, event),
    )
    return Pieces(summary, topic, course, drills), derived


# ---- one learner gathered: the batch fold's and the fold CLI's view ----------------


@dataclass(frozen=True)
class LearnerState:
    summary: Summary = field(default_factory=Summary)
    topics: Mapping[str, TopicMastery] = field(default_factory=dict)
    courses: Mapping[str, frozenset[str]] = field(default_factory=dict)
    drills: tuple[DrillAttempt, ...] = ()

    @property
    def xp(self) -> int:
        return self.summary.xp

    @property
    def level(self) -> int:
        return self.summary.level

    @property
    def study(self) -> StudyStats:
        return self.summary.study

    @property
    def longest_streak(self) -> int:
        return self.summary.streak.longest

    @property
    def mastery(self) -> dict[str, float]:
        return {topic: piece.p for topic, piece in self.topics.items()}

    @property
    def mastered(self) -> frozenset[str]:
        return frozenset(topic for topic, piece in self.topics.items() if piece.mastered)


def pieces_of(state: LearnerState, wanted: Needs) -> Pieces:
    return Pieces(
        state.summary,
        None if wanted.topic is None else state.topics.get(wanted.topic),
        None if wanted.course is None else state.courses.get(wanted.course),
        state.drills if wanted.drills else None,
    )


def gathered(state: LearnerState, pieces: Pieces, wanted: Needs) -> LearnerState:
    """``state`` with the pieces an event wrote."""
    topics, courses = state.topics, state.courses
    if wanted.topic is not None and pieces.topic is not None:
        topics = {**topics, wanted.topic: pieces.topic}
    if wanted.course is not None and pieces.course is not None:
        courses = {**courses, wanted.course: pieces.course}
    drills = pieces.drills if pieces.drills is not None else state.drills
    return LearnerState(pieces.summary, topics, courses, drills)


def apply(state: LearnerState, event: Event) -> tuple[LearnerState, list[Derived]]:
    """Fold one (already deduplicated) event of this learner into the whole learner."""
    wanted = needs(event)
    pieces, derived = step(pieces_of(state, wanted), event, wanted)
    return gathered(state, pieces, wanted), derived


def today(summary: Summary, as_of: datetime) -> date:
    """T's calendar date in the zone of the learner's latest event (UTC if none)."""
    timezone = summary.latest.timezone if summary.latest else None
    return as_of.astimezone(zone(timezone)).date()


def summary(state: LearnerState, as_of: datetime) -> dict[str, Any]:
    """The learner as of ``as_of``, in the fold CLI's documented shape."""
    return {
        "xp": state.xp,
        "level": state.level,
        "current_streak": current_streak(state.summary.streak, today(state.summary, as_of)),
        "longest_streak": state.longest_streak,
        "mastery": dict(sorted(state.mastery.items())),
        "mastered": sorted(state.mastered),
        "blind_spots": blind_spots(state.drills, as_of),
        "modes": {
            mode: {
                "current_level": p.current_level,
                "total_sessions": p.total_sessions,
                "total_drills_completed": p.total_drills_completed,
                "sessions_at_current_level": p.sessions_at_current_level,
            }
            for mode, p in sorted(state.summary.modes.items())
        },
    }
