"""Rounding as the product rules state it: half up, on the exact value."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def round_half_up(value: float) -> int:
    # Decimal(value) is the float's exact binary value, so 0.49999999999999994
    # rounds down where floor(value + 0.5) would wrongly round it up.
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))
