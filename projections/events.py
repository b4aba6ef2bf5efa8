"""The slice of an envelope event that the folds read, from JSON or from Avro."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@cache
def zone(name: str | None) -> tzinfo:
    """The IANA zone by name; UTC when missing or not a valid zone."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_instant(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # no offset given: read as UTC rather than guess a zone
        moment = moment.replace(tzinfo=UTC)
    # millisecond resolution, as on the wire (Avro timestamp-millis)
    return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    timestamp: datetime
    user_id: str | None
    timezone: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def local_date(self) -> date:
        """The calendar date where the learner was (the event's own time zone)."""
        return self.timestamp.astimezone(zone(self.timezone)).date()

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any]) -> Event:
        """Accepts both a decoded Avro datum and the collector's JSON shape."""
        device_info = envelope.get("device_info") or {}
        user_id = envelope.get("user_id")
        properties = envelope.get("properties") or {}
        return cls(
            event_id=str(envelope["event_id"]),
            event_type=str(envelope["event_type"]),
            timestamp=parse_instant(envelope["timestamp"]),
            user_id=None if user_id is None else str(user_id),
            timezone=_timezone(device_info, properties),
            properties=properties,
        )


def _timezone(device_info: Any, properties: Any) -> str | None:
    """The device's zone; else the one seed 001's session_start carries in its
    properties (``user.timezone``), so such an app's learners get their own calendar."""
    for source in (device_info, properties):
        found = source.get("timezone") if isinstance(source, Mapping) else None
        if isinstance(found, str) and found:
            return found
    return None
