"""Projection topics -> projection tables: one row per published snapshot or tombstone.

A compacted projection topic says, per key, "this is the value now" (a snapshot) or
"there is no value any more" (a tombstone: the record has no value). Both become a row;
the table's ReplacingMergeTree keeps the one with the highest offset per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.codec import decode
from schemas.registry import SchemaRegistry
from sinks.routes import Route
from sinks.rows import to_json

# Projection rows carry no event time; one constant keeps each batch in one insert.
_NO_MONTH = datetime(1970, 1, 1, tzinfo=UTC)
_TRAILER = ("snapshot", "is_deleted", "source_topic", "source_partition", "source_offset")


@dataclass(frozen=True)
class ProjectionTable:
    table: str
    # snapshot fields copied to typed columns, with the value a tombstone row gets
    fields: tuple[tuple[str, Any], ...]
    json_fields: tuple[str, ...] = ()  # nested fields kept as JSON text

    @property
    def columns(self) -> tuple[str, ...]:
        return ("key", "user_id", *(name for name, _ in self.fields), *_TRAILER)


PROJECTION_TABLES = {
    "projections.user_progress": ProjectionTable(
        "user_progress",
        (
            ("xp", 0),
            ("level", 0),
            ("current_streak", 0),
            ("longest_streak", 0),
            ("last_active_date", None),
            ("latest_event_at", None),
            ("events_applied", 0),
            ("sessions_completed", 0),
            ("completion_rate", None),
            ("study_seconds", 0),
            ("questions_answered", 0),
            ("questions_correct", 0),
        ),
    ),
    "projections.topic_mastery": ProjectionTable(
        "topic_mastery",
        (("topic_id", ""), ("p_mastery", 0.0), ("mastered", False), ("events_applied", 0)),
    ),
    "projections.mode_progress": ProjectionTable(
        "mode_progress",
        (
            ("practice_mode_id", ""),
            ("current_level", 0),
            ("total_sessions", 0),
            ("total_drills_completed", 0),
            ("sessions_at_current_level", 0),
            ("events_applied", 0),
        ),
    ),
    "projections.blind_spots": ProjectionTable(
        "blind_spots",
        (("as_of", None), ("blind_spots", "[]"), ("events_applied", 0)),
        json_fields=("blind_spots",),
    ),
}


def user_of(key: str) -> str:
    """Projection keys are ``user`` or ``user:topic`` / ``user:mode``."""
    return key.split(":", 1)[0]


def projection_row(
    spec: ProjectionTable, key: str, datum: dict[str, Any] | None, offset_of: tuple[str, int, int]
) -> list[Any]:
    if datum is None:  # tombstone
        typed = [default for _, default in spec.fields]
        return [key, user_of(key), *typed, "{}", 1, *offset_of]
    typed = [
        to_json(datum.get(name)) if name in spec.json_fields else datum.get(name, default)
        for name, default in spec.fields
    ]
    return [key, str(datum.get("user_id") or user_of(key)), *typed, to_json(datum), 0, *offset_of]


def projection_route(spec: ProjectionTable, registry: SchemaRegistry) -> Route:
    def to_row(record: Any, topic: str, partition: int) -> tuple[datetime, list[Any]]:
        key = record.key.decode("utf-8") if record.key is not None else ""
        datum = None if record.value is None else decode(registry, record.value)
        return _NO_MONTH, projection_row(spec, key, datum, (topic, partition, record.offset))

    return Route(spec.table, spec.columns, to_row)
