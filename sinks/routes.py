"""Which topic lands in which table, and how one record becomes one row."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.catalog import EventCatalog
from schemas.codec import schema_id_of
from schemas.reader import FRAMING_HEADER_SIZE, decode
from schemas.registry import SchemaRegistry
from sinks.rows import (
    EVENT_COLUMNS,
    INVALID_COLUMNS,
    BytesRow,
    event_row,
    event_row_reader,
    invalid_row,
)

TIMESTAMP_AT = EVENT_COLUMNS.index("timestamp")

# (record, topic, partition) -> (time that picks the monthly partition, row)
RowBuilder = Callable[[Any, str, int], tuple[datetime, list[Any]]]


@dataclass(frozen=True)
class Route:
    table: str
    columns: tuple[str, ...]
    to_row: RowBuilder
    # rows are events: one row per event_id, whatever offsets the copies came at
    unique_events: bool = False
    # rows are dead letters: one row per letter_id (the same refusal sent again)
    unique_letters: bool = False

    @functools.cached_property
    def key_positions(self) -> tuple[int, int, int, int]:
        """Where organization_id, user_id, timestamp and event_id are in a row."""
        org, user, moment, event_id = (
            self.columns.index(n) for n in ("organization_id", "user_id", "timestamp", "event_id")
        )
        return org, user, moment, event_id

    def event_key(self, row: list[Any]) -> tuple[str, str, datetime, str]:
        """(organization_id, user_id, timestamp, event_id): the table's sort key.
        Called for every row the sink stores, so the column positions are found once."""
        org, user, moment, event_id = self.key_positions
        return str(row[org]), str(row[user]), row[moment], str(row[event_id])


def event_route(catalog: EventCatalog, registry: SchemaRegistry) -> Route:
    """Confluent-framed Avro events (events.clean, events.derived) -> ``events``.

    A record's row is read straight from its bytes where the compiled reader covers its
    schema (one function per schema id, found once), else from the decoded datum."""
    by_schema: dict[int, BytesRow | None] = {}

    def to_row(record: Any, topic: str, partition: int) -> tuple[datetime, list[Any]]:
        value = record.value
        schema_id = schema_id_of(value)
        try:
            reader = by_schema[schema_id]
        except KeyError:
            reader = by_schema[schema_id] = event_row_reader(
                catalog, registry.parsed_by_id(schema_id)
            )
        if reader is None:
            row = event_row(catalog, decode(registry, value), topic, partition, record.offset)
        else:
            row = reader(value, FRAMING_HEADER_SIZE, topic, partition, record.offset)
        return row[TIMESTAMP_AT], row

    return Route("events", EVENT_COLUMNS, to_row, unique_events=True)


def invalid_route() -> Route:
    """JSON dead letters (events.invalid) -> ``events_invalid``."""

    def to_row(record: Any, topic: str, partition: int) -> tuple[datetime, list[Any]]:
        record_time = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        try:
            letter = json.loads(record.value)
        except ValueError:  # keep even a dead letter we cannot read, as raw bytes
            letter = {
                "raw": record.value.decode("utf-8", errors="replace"),
                "errors": [{"field": "(dead letter)", "message": "not JSON"}],
            }
        if not isinstance(letter, dict):
            letter = {"raw": json.dumps(letter)}
        row = invalid_row(letter, record_time, topic, partition, record.offset)
        return row[0], row

    return Route("events_invalid", INVALID_COLUMNS, to_row, unique_letters=True)
