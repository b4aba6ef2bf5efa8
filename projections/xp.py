"""XP awards and levels.

Rules (pinned; rounding half up on the exact value):
- lesson_completed: 50
- quiz_completed: round(score)
- quiz_complete: round(100 x correct_answers / total_questions)
- question_submit: 10 if is_correct else 0
- material_complete: 20
- anything else: 0

Level: the highest L with 50 x L x (L - 1) <= total XP (L1 at 0, L2 at 100, L3 at 300,
L4 at 600, ...).
"""

from __future__ import annotations

from fractions import Fraction
from math import isqrt
from typing import Any

from projections.events import Event
from projections.rounding import round_half_up

LESSON_XP = 50
CORRECT_ANSWER_XP = 10
MATERIAL_XP = 20
LEVEL_STEP_XP = 50


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number: float | int = value
    return number


def xp_for(event: Event) -> int:
    """XP one event awards. Missing or malformed properties award nothing, never raise."""
    props = event.properties
    if event.event_type == "lesson_completed":
        return LESSON_XP
    if event.event_type == "quiz_completed":
        score = _number(props.get("score"))
        return round_half_up(score) if score is not None else 0
    if event.event_type == "quiz_complete":
        correct, total = (
            _number(props.get("correct_answers")),
            _number(props.get("total_questions")),
        )
        if correct is None or not total:
            return 0
        return round_half_up(Fraction(100) * Fraction(correct) / Fraction(total))
    if event.event_type == "question_submit":
        return CORRECT_ANSWER_XP if props.get("is_correct") is True else 0
    if event.event_type == "material_complete":
        return MATERIAL_XP
    return 0


def level_for(total_xp: int) -> int:
    """Highest L with 50 L (L - 1) <= total_xp."""
    if total_xp < 0:
        return 1
    quota = total_xp // LEVEL_STEP_XP  # L(L-1) is whole, so compare with the floor
    level = (1 + isqrt(1 + 4 * quota)) // 2
    return max(level, 1)
