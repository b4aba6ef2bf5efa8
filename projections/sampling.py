"""Deterministic sampling (seed 004): keep/drop from a hash of event_id.

A retried duplicate hashes the same, so it gets the same decision; the kept event
records its rate so analysts can weight rows by 1 / sample_rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol


class Sampled(Protocol):
    """What sampling reads of an event type (``schemas.catalog.EventType`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def sampling(self) -> str: ...


PRODUCTION = "production"
PERFORMANCE_RATE_IN_PRODUCTION = 0.1
HIGH_VOLUME_RATE = 0.01


def sample_rate(event_type: Sampled, environment: str, overrides: Mapping[str, float]) -> float:
    """Learning progress, user actions and errors are never sampled (rate 1)."""
    if event_type.name in overrides:
        return overrides[event_type.name]
    production = environment == PRODUCTION
    if event_type.sampling == "performance":
        return PERFORMANCE_RATE_IN_PRODUCTION if production else 1.0
    if event_type.sampling == "high_volume":
        return HIGH_VOLUME_RATE
    if event_type.sampling == "debug":
        return 0.0 if production else 1.0
    return 1.0


def keeps(event_id: str, rate: float) -> bool:
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    bucket = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big") / 2**64
    return bucket < rate
