"""UUIDv7 (RFC 9562) event ids: time-ordered, so ids sort and index like timestamps.
Python has uuid.uuid7 only from 3.14."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable


def uuid7(
    now_ms: int | None = None, random_bytes: Callable[[int], bytes] = os.urandom
) -> uuid.UUID:
    """48 bits of Unix milliseconds, version 7, 74 random bits, RFC 4122 variant."""
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not 0 <= millis < 1 << 48:
        raise ValueError("uuid7 timestamp must fit in 48 bits of milliseconds")
    rand = int.from_bytes(random_bytes(10), "big")  # 80 bits, 74 used
    rand_a = (rand >> 62) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)
