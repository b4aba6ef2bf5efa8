"""Server-side fields added to an accepted event before it is published."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.catalog import EventType

# Seed 004: standard 7 years, sensitive 3 years, PII 1 year, system events 1 year.
RETENTION_DAYS = {"standard": 2555, "sensitive": 1095, "pii": 365}
SYSTEM_RETENTION_DAYS = 365


def default_retention_days(event_type: EventType, privacy_level: str) -> int:
    if event_type.category == "system_performance":
        return SYSTEM_RETENTION_DAYS
    return RETENTION_DAYS[privacy_level]


def enrich(event_type: EventType, datum: dict[str, Any], received_at: datetime) -> dict[str, Any]:
    enriched = dict(datum)
    enriched["received_at"] = received_at
    if enriched.get("retention_days") is None:
        enriched["retention_days"] = default_retention_days(event_type, enriched["privacy_level"])
    return enriched


def partition_key(datum: dict[str, Any]) -> bytes:
    """One learner's events share a partition; anonymous ones group by session."""
    key = datum.get("user_id") or datum.get("session_id") or datum["event_id"]
    return str(key).encode()
