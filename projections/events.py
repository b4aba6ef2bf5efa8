"""The slice of an envelope event that the folds read, from JSON or from Avro."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    timestamp: datetime
    user_id: str | None
    timezone: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any]) -> Event:
        """Accepts both a decoded Avro datum and the collector's JSON shape."""
        timestamp = envelope["timestamp"]
        if isinstance(timestamp, str):
            timestamp = datetime.fromisoformat(timestamp)
        if timestamp.tzinfo is None:
            raise ValueError("timestamp must carry a UTC offset")
        device_info = envelope.get("device_info") or {}
        return cls(
            event_id=str(envelope["event_id"]),
            event_type=str(envelope["event_type"]),
            timestamp=timestamp.astimezone(UTC),
            user_id=envelope.get("user_id"),
            timezone=device_info.get("timezone"),
            properties=envelope.get("properties") or {},
        )
