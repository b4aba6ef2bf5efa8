"""Daily streaks on the learner's own calendar, in state whose size never grows.

An active day is a local calendar date (the event's own ``device_info.timezone``,
UTC when missing or invalid) with at least one activity event.

The state keeps the last ``WINDOW_DAYS`` days before the newest active day as a bitmap
(bit i: day ``newest - i``), and of everything older only the most recent active day
and the length of the run ending there. Within the window the result is exactly that
of the full set of days, whatever the arrival order; a day that arrives more than
``WINDOW_DAYS`` days older than the newest active day no longer changes streaks (it
still counts for XP and everything else). Cost per event is a few bit operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import msgspec

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

# A year and a day: an app that syncs a whole year of offline activity late still gets
# exact streaks. The bitmap is 46 bytes.
WINDOW_DAYS = 366
_WINDOW_MASK = (1 << WINDOW_DAYS) - 1


class Streak(msgspec.Struct, frozen=True, array_like=True):
    newest: int = 0  # ordinal of the newest active day; 0: none yet
    recent: bytes = b""  # the window's bitmap, little-endian: bit i is day newest - i
    older_end: int = 0  # the most recent active day older than the window; 0: none
    older_run: int = 0  # the length of the run of active days ending at older_end
    longest: int = 0

    @property
    def bits(self) -> int:
        return int.from_bytes(self.recent, "little")


def _pack(bits: int) -> bytes:
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


@dataclass(frozen=True)
class StreakChange:
    """Derived ``streak_continued`` (the new day follows an active day) or ``streak_broken``."""

    kind: str
    day: date
    old_streak: int
    new_streak: int
    is_new_record: bool


class _Days:
    """Read-only questions about one Streak's days."""

    def __init__(self, streak: Streak) -> None:
        self.newest = streak.newest
        self.bits = streak.bits
        self.older_end = streak.older_end
        self.older_run = streak.older_run

    def active(self, ordinal: int) -> bool:
        index = self.newest - ordinal
        if 0 <= index < WINDOW_DAYS:
            return bool(self.bits >> index & 1)
        return ordinal == self.older_end and self.older_end != 0

    def run_back(self, last: int) -> int:
        """The length of the run of active days ending at ``last``."""
        index = self.newest - last
        if index < 0:
            return 0
        if index >= WINDOW_DAYS:
            return self.older_run if last == self.older_end and last != 0 else 0
        ones = _trailing_ones(self.bits >> index)
        if index + ones < WINDOW_DAYS:
            return ones
        # the run reaches the window's lower edge: it goes on if the day below is older_end
        below = self.newest - WINDOW_DAYS
        return ones + (self.older_run if self.older_end == below and below != 0 else 0)

    def run_forward(self, first: int) -> int:
        """The length of the run of active days starting at ``first``."""
        length = 0
        while first + length <= self.newest and self.active(first + length):
            length += 1
        return length

    def latest_before(self, ordinal: int) -> int | None:
        """The most recent active day before ``ordinal``."""
        index = self.newest - ordinal + 1  # the day before, as an index
        if index < 0:
            index = 0
        if index < WINDOW_DAYS:
            higher = self.bits >> index
            if higher:
                return self.newest - index - _trailing_zeros(higher)
        return self.older_end or None


def _trailing_ones(bits: int) -> int:
    return ((bits ^ (bits + 1)).bit_length()) - 1


def _trailing_zeros(bits: int) -> int:
    return (bits & -bits).bit_length() - 1


def _shift_to(streak: Streak, days: _Days, newest: int) -> Streak:
    """The same days, with the window moved up so that ``newest`` is its top."""
    if streak.newest == 0:
        return Streak(newest, b"", 0, 0, streak.longest)
    shift = newest - streak.newest
    bits = days.bits
    older_end, older_run = streak.older_end, streak.older_run
    # the days leaving the window: old indices WINDOW_DAYS - shift .. WINDOW_DAYS - 1
    leaving = bits >> max(WINDOW_DAYS - shift, 0)
    if leaving:
        top = streak.newest - max(WINDOW_DAYS - shift, 0) - _trailing_zeros(leaving)
        older_end, older_run = top, days.run_back(top)
    shifted = _pack((bits << shift) & _WINDOW_MASK)
    return Streak(newest, shifted, older_end, older_run, streak.longest)


def add_active_day(streak: Streak, day: date) -> tuple[Streak, StreakChange | None]:
    """Mark ``day`` active; returns the new streak state and what changed (if it is new)."""
    ordinal = day.toordinal()
    days = _Days(streak)
    if days.active(ordinal) or (streak.newest and ordinal <= streak.newest - WINDOW_DAYS):
        return streak, None  # already active, or too old to place (see module docstring)
    before = days.run_back(ordinal - 1)
    after = days.run_forward(ordinal + 1)
    run = before + 1 + after
    record = run > streak.longest
    if before > 0:
        change = StreakChange("streak_continued", day, before, run, record)
    else:
        earlier = days.latest_before(ordinal)
        old = days.run_back(earlier) if earlier is not None else 0
        kind = "streak_broken" if earlier is not None else "streak_continued"
        change = StreakChange(kind, day, old, run, record)
    moved = _shift_to(streak, days, ordinal) if ordinal > streak.newest else streak
    index = moved.newest - ordinal
    bits = moved.bits | (1 << index)
    grown = msgspec.structs.replace(moved, recent=_pack(bits), longest=max(streak.longest, run))
    return grown, change


def current_streak(streak: Streak, today: date) -> int:
    """The run ending today or yesterday (a streak survives until the day is over)."""
    days = _Days(streak)
    ordinal = today.toordinal()
    if days.active(ordinal):
        return days.run_back(ordinal)
    return days.run_back(ordinal - 1)


def is_active(streak: Streak, day: date) -> bool:
    return _Days(streak).active(day.toordinal())


def last_active(streak: Streak) -> date | None:
    return date.fromordinal(streak.newest) if streak.newest else None
