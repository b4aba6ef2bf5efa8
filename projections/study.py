"""Study sessions, course progress and daily stats (seeds 000, 001, 002).

Every figure is a sum or a set union over events, so the result does not depend on
the order events arrive in, and a learner's state stays small: per-session detail
belongs in the event store (ClickHouse), the fold keeps the totals that the learner's
live progress needs.

- Sessions: started = session_start / session_started events; completed =
  session_end / session_ended / session_completed / session_result (seed 003's language
  sessions); study time = their duration_seconds (total_duration on
  session_completed), 0 when absent; pauses = session_pause.
  Completion rate = completed / started (seed 000), unset before any start.
- Course progress (seed 002): per course_id, the distinct content_ids completed by
  lesson_completed or quiz_completed. The percentage needs the course's size, which
  lives in the course catalogue, not in events; analysts join it in ClickHouse.
- Daily stats (seed 001 daily_user_stats): per local calendar date (the event's own
  time zone), study seconds, sessions completed, questions answered and correct, XP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from projections.events import Event

SESSION_STARTS = frozenset({"session_start", "session_started"})
SESSION_ENDS = frozenset({"session_end", "session_ended", "session_completed", "session_result"})
CONTENT_COMPLETIONS = frozenset({"lesson_completed", "quiz_completed"})
RECENT_DAYS = 30  # daily stats published with a learner's progress


@dataclass(frozen=True)
class DayStats:
    study_seconds: int = 0
    sessions_completed: int = 0
    questions_answered: int = 0
    questions_correct: int = 0
    xp: int = 0

    def plus(self, other: DayStats) -> DayStats:
        return DayStats(
            self.study_seconds + other.study_seconds,
            self.sessions_completed + other.sessions_completed,
            self.questions_answered + other.questions_answered,
            self.questions_correct + other.questions_correct,
            self.xp + other.xp,
        )


@dataclass(frozen=True)
class StudyStats:
    sessions_started: int = 0
    sessions_completed: int = 0
    study_seconds: int = 0
    pauses: int = 0
    materials_opened: int = 0
    questions_answered: int = 0
    questions_correct: int = 0
    courses: Mapping[str, frozenset[str]] = field(default_factory=dict)
    days: Mapping[int, DayStats] = field(default_factory=dict)  # date ordinal -> stats

    @property
    def completion_rate(self) -> float | None:
        if self.sessions_started == 0:
            return None
        return self.sessions_completed / self.sessions_started


def _seconds(event: Event) -> int:
    name = "total_duration" if event.event_type == "session_completed" else "duration_seconds"
    value = event.properties.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def apply_study(stats: StudyStats, event: Event, xp_awarded: int) -> StudyStats:
    """Add one (deduplicated) event of the learner, which earned ``xp_awarded``."""
    kind, props = event.event_type, event.properties
    ended = kind in SESSION_ENDS
    answered = kind == "question_submit"
    correct = answered and props.get("is_correct") is True
    seconds = _seconds(event) if ended else 0
    day = DayStats(seconds, int(ended), int(answered), int(correct), xp_awarded)
    updated = replace(
        stats,
        sessions_started=stats.sessions_started + int(kind in SESSION_STARTS),
        sessions_completed=stats.sessions_completed + int(ended),
        study_seconds=stats.study_seconds + seconds,
        pauses=stats.pauses + int(kind == "session_pause"),
        materials_opened=stats.materials_opened + int(kind == "material_open"),
        questions_answered=stats.questions_answered + int(answered),
        questions_correct=stats.questions_correct + int(correct),
    )
    if day != DayStats():
        ordinal = event.local_date.toordinal()
        days = {**updated.days, ordinal: updated.days.get(ordinal, DayStats()).plus(day)}
        updated = replace(updated, days=days)
    course, content = props.get("course_id"), props.get("content_id")
    if kind in CONTENT_COMPLETIONS and course is not None and content is not None:
        done = updated.courses.get(str(course), frozenset()) | {str(content)}
        updated = replace(updated, courses={**updated.courses, str(course): done})
    return updated


def study_to_json(stats: StudyStats) -> dict[str, Any]:
    return {
        "counts": [
            stats.sessions_started,
            stats.sessions_completed,
            stats.study_seconds,
            stats.pauses,
            stats.materials_opened,
            stats.questions_answered,
            stats.questions_correct,
        ],
        "courses": {c: sorted(done) for c, done in stats.courses.items()},
        "days": {str(d): list(vars(s).values()) for d, s in stats.days.items()},
    }


def study_from_json(data: Mapping[str, Any] | None) -> StudyStats:
    if data is None:  # state written before study stats existed
        return StudyStats()
    started, completed, seconds, pauses, opened, answered, correct = data["counts"]
    return StudyStats(
        sessions_started=started,
        sessions_completed=completed,
        study_seconds=seconds,
        pauses=pauses,
        materials_opened=opened,
        questions_answered=answered,
        questions_correct=correct,
        courses={c: frozenset(done) for c, done in data["courses"].items()},
        days={int(d): DayStats(*values) for d, values in data["days"].items()},
    )
