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
  lesson_completed or quiz_completed, kept per (learner, course) apart from the rest
  (``projections.learner``). The percentage needs the course's size, which lives in
  the course catalogue, not in events; analysts join it in ClickHouse.
- Daily stats (seed 001 daily_user_stats): per local calendar date (the event's own
  time zone), study seconds, sessions completed, questions answered and correct, XP.
  Live state keeps the last ``KEPT_DAYS`` days before the UTC date of the learner's
  newest event (a learner's progress publishes the last ``RECENT_DAYS`` before its local
  date; the margin covers every time zone); older days are ClickHouse's
  (``daily_user_stats``), so the state does not grow with history.
"""

from __future__ import annotations

import msgspec

from projections.events import Event

SESSION_STARTS = frozenset({"session_start", "session_started"})
SESSION_ENDS = frozenset({"session_end", "session_ended", "session_completed", "session_result"})
CONTENT_COMPLETIONS = frozenset({"lesson_completed", "quiz_completed"})
RECENT_DAYS = 30  # daily stats published with a learner's progress
KEPT_DAYS = RECENT_DAYS + 7


class DayStats(msgspec.Struct, frozen=True, array_like=True):
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


NO_DAY = DayStats()


class StudyStats(msgspec.Struct, frozen=True, array_like=True):
    sessions_started: int = 0
    sessions_completed: int = 0
    study_seconds: int = 0
    pauses: int = 0
    materials_opened: int = 0
    questions_answered: int = 0
    questions_correct: int = 0
    days: dict[int, DayStats] = msgspec.field(default_factory=dict)  # date ordinal -> stats

    @property
    def completion_rate(self) -> float | None:
        if self.sessions_started == 0:
            return None
        return self.sessions_completed / self.sessions_started


def _seconds(event: Event) -> int:
    name = "total_duration" if event.event_type == "session_completed" else "duration_seconds"
    value = event.properties.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def apply_study(stats: StudyStats, event: Event, xp_awarded: int, newest_day: int) -> StudyStats:
    """Add one (deduplicated) event of the learner, which earned ``xp_awarded``;
    ``newest_day`` is the ordinal of the UTC date of the learner's newest event, this one
    included: it only ever grows, so which days are kept does not depend on arrival order."""
    kind, props = event.event_type, event.properties
    ended = kind in SESSION_ENDS
    answered = kind == "question_submit"
    correct = answered and props.get("is_correct") is True
    seconds = _seconds(event) if ended else 0
    day = DayStats(seconds, int(ended), int(answered), int(correct), xp_awarded)
    days = stats.days
    horizon = newest_day - KEPT_DAYS
    if day != NO_DAY and event.local_date.toordinal() > horizon:
        ordinal = event.local_date.toordinal()
        days = {d: s for d, s in days.items() if d > horizon}
        days[ordinal] = days.get(ordinal, NO_DAY).plus(day)
    elif days and min(days) <= horizon:
        days = {d: s for d, s in days.items() if d > horizon}
    return StudyStats(
        sessions_started=stats.sessions_started + int(kind in SESSION_STARTS),
        sessions_completed=stats.sessions_completed + int(ended),
        study_seconds=stats.study_seconds + seconds,
        pauses=stats.pauses + int(kind == "session_pause"),
        materials_opened=stats.materials_opened + int(kind == "material_open"),
        questions_answered=stats.questions_answered + int(answered),
        questions_correct=stats.questions_correct + int(correct),
        days=days,
    )
