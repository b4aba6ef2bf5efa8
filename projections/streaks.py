"""Daily streaks on the learner's own calendar.

An active day is a local calendar date (the event's own ``device_info.timezone``,
UTC when missing or invalid) with at least one activity event. The state is the set
of active days, so it does not depend on arrival order; the longest run can only
grow, and only the run holding a newly added day changes, so it is kept incrementally.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# Learning done: content, questions and games completed, and every completed study
# session, whichever seed's app reports it (seed 000 session_completed, 001 session_end,
# 002 session_ended, 003 session_result), as study time comes from the same sessions.
ACTIVITY_TYPES = frozenset(
    {
        "lesson_completed",
        "quiz_completed",
        "quiz_complete",
        "question_submit",
        "material_complete",
        "session_completed",
        "session_end",
        "session_ended",
        "session_result",
        "game_stage_complete",
        "assignment_completed",
        "challenge_completed",
    }
)


@dataclass(frozen=True)
class StreakChange:
    """Derived ``streak_continued`` (the new day follows an active day) or ``streak_broken``."""

    kind: str
    day: date
    old_streak: int
    new_streak: int
    is_new_record: bool


def _run_back(days: frozenset[int], last: int) -> int:
    length = 0
    while last - length in days:
        length += 1
    return length


def _run_forward(days: frozenset[int], first: int) -> int:
    length = 0
    while first + length in days:
        length += 1
    return length


def add_active_day(
    days: frozenset[int], longest: int, day: date
) -> tuple[frozenset[int], int, StreakChange | None]:
    """Mark ``day`` active; returns the new days, new longest and what changed (if new)."""
    ordinal = day.toordinal()
    if ordinal in days:
        return days, longest, None
    before = _run_back(days, ordinal - 1)
    after = _run_forward(days, ordinal + 1)
    run = before + 1 + after
    grown = days | {ordinal}
    record = run > longest
    if before > 0:
        change = StreakChange("streak_continued", day, before, run, record)
    else:
        earlier = [d for d in days if d < ordinal]
        if earlier:
            change = StreakChange("streak_broken", day, _run_back(days, max(earlier)), run, record)
        else:
            change = StreakChange("streak_continued", day, 0, run, record)
    return grown, max(longest, run), change


def current_streak(days: frozenset[int], today: date) -> int:
    """The run ending today or yesterday (a streak survives until the day is over)."""
    ordinal = today.toordinal()
    if ordinal in days:
        return _run_back(days, ordinal)
    return _run_back(days, ordinal - 1)
