"""Rounding as the product rules state it: half up, on the exact value."""

from __future__ import annotations

import math
from fractions import Fraction


def round_half_up(value: float | Fraction | int) -> int:
    # Fraction(value) is a float's exact binary value, so 0.49999999999999994 rounds
    # down where floor(value + 0.5) in floating point would wrongly round it up.
    return math.floor(Fraction(value) + Fraction(1, 2))
