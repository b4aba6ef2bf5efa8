"""Kafka records -> table rows: events (clean and derived) and dead letters."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from fastavro import parse_schema

from schemas.catalog import EventCatalog, Schema
from schemas.reader import compile_record_function
from schemas.registry import SchemaRegistry

EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "category",
    "timestamp",
    "received_at",
    "sent_at",
    "user_id",
    "session_id",
    "organization_id",
    "client_ip",
    "original_timestamp",
    "timezone",
    "content_id",
    "course_id",
    "score",
    "duration_seconds",
    "is_correct",
    "topic_id",
    "practice_mode_id",
    "drill_ids",
    "properties",
    "device_info",
    "context",
    "privacy_level",
    "retention_days",
    "sample_rate",
    "schema_version",
    "source_topic",
    "source_partition",
    "source_offset",
)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _text_uuids(schema: Any) -> Any:
    """A copy of a (parsed) schema whose ``uuid`` strings are read as plain strings."""
    if isinstance(schema, dict):
        copied = {key: _text_uuids(value) for key, value in schema.items()}
        if copied.get("logicalType") == "uuid":
            del copied["logicalType"]
        return copied
    if isinstance(schema, list):
        return [_text_uuids(item) for item in schema]
    return copy.copy(schema)


class UuidsAsText:
    """The sink's view of a registry: the same schemas, with ``uuid`` fields read as
    text. fastavro builds a ``uuid.UUID`` per id (a sixth of the decode) only for the
    sink to turn it back into text; ``canonical_uuid`` checks the text instead."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self._registry = registry
        self._parsed: dict[int, Any] = {}

    def id_for(self, subject: str, schema: Schema) -> int:
        return self._registry.id_for(subject, schema)

    def parsed_by_id(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            original = self._registry.parsed_by_id(schema_id)
            parsed = parse_schema(_text_uuids(original), _force=True)
            self._parsed[schema_id] = parsed
        return parsed


def canonical_uuid(value: object) -> str:
    """A UUID as ClickHouse prints it (lower case, dashed); ValueError if it is none."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _default(obj: object) -> str:
    return obj.isoformat() if isinstance(obj, datetime) else str(obj)


def to_json(value: Any) -> str:
    """JSON text with sorted keys and ISO dates, as the sink stores it in String columns."""
    # orjson: three of these per row were the sink's largest cost (bench: 9x json.dumps)
    return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS).decode()


def _json(value: Mapping[str, Any] | None) -> str:
    return to_json(value) if value else "{}"  # no context, no device info: no call


def _drill_ids(scores: Any) -> list[str]:
    if not isinstance(scores, list):
        return []
    return [str(s["drill_id"]) for s in scores if isinstance(s, Mapping) and s.get("drill_id")]


# How an event becomes its row, written once and compiled twice (see _row_functions):
# over a decoded datum, and over the Avro record's bytes as they are read. Each field the
# row uses is the local f_<name>: as the record has it, else the expression given here.
# (a string split, not a literal: a name per line would repeat EVENT_COLUMNS' shape)
_NULLABLE_FIELDS = (  # noqa: SIM905
    "received_at sent_at original_timestamp client_ip user_id session_id organization_id "
    "device_info properties context privacy_level retention_days"
).split()
_ROW_FIELDS: dict[str, str] = {
    **dict.fromkeys(_NULLABLE_FIELDS, "None"),
    "sample_rate": "1.0",
    "schema_version": "1",
}
_REQUIRED_FIELDS = ("event_id", "event_type", "timestamp")  # KeyError without them
_ROW_BODY = """
    properties = f_properties or {}
    device_info = f_device_info or {}
    context = f_context
    return [
        _canonical_uuid(f_event_id),
        f_event_type,
        _categories.get(f_event_type, ""),
        f_timestamp,
        f_received_at or f_timestamp,
        f_sent_at,
        f_user_id or "",
        f_session_id or "",
        f_organization_id or "",
        f_client_ip or "",
        f_original_timestamp,
        device_info.get("timezone") or "",
        properties.get("content_id") or "",
        properties.get("course_id") or (context or {}).get("course_id") or "",
        properties.get("score"),
        properties.get("duration_seconds"),
        properties.get("is_correct"),
        properties.get("topic_id") or "",
        properties.get("practice_mode_id") or "",
        _drill_ids(properties.get("scores")),
        _json(properties),
        _json(device_info),
        _json(context),
        f_privacy_level or "standard",
        f_retention_days or 2555,
        f_sample_rate,
        f_schema_version,
        topic,
        partition,
        offset,
    ]
"""

# a datum's row and, per parsed schema, the bytes' row
DatumRow = Callable[[Mapping[str, Any], str, int, int], list[Any]]
BytesRow = Callable[[bytes, int, str, int, int], list[Any]]


class _RowFunctions:
    """The row functions of one catalogue: its categories are constants in them."""

    def __init__(self, catalog: EventCatalog) -> None:
        self.catalog = catalog  # held, so its id cannot be reused while cached
        self.namespace: dict[str, Any] = {
            "_canonical_uuid": canonical_uuid,
            # a dict, not ``catalog.get`` (0.75 µs through ``Mapping.get``)
            "_categories": {name: kind.category for name, kind in catalog.items()},
            "_drill_ids": _drill_ids,
            "_json": _json,
        }
        prelude = [f"    f_{name} = datum[{name!r}]" for name in _REQUIRED_FIELDS]
        prelude += [f"    f_{name} = datum.get({name!r}, {v})" for name, v in _ROW_FIELDS.items()]
        source = "\n".join(
            ["def _row(datum, topic, partition, offset):", *prelude, _ROW_BODY.rstrip()]
        )
        scope = dict(self.namespace)
        exec(compile(source, "<event row>", "exec"), scope)
        self.from_datum: DatumRow = scope["_row"]

    def from_bytes(self, parsed_schema: Any) -> BytesRow | None:
        """Compiled on each call: its caller (sinks.routes) keeps one per schema id."""
        names = (
            {f["name"] for f in parsed_schema.get("fields", ())}
            if isinstance(parsed_schema, dict)
            else set()
        )
        if not names.issuperset(_REQUIRED_FIELDS):
            return None
        return compile_record_function(
            parsed_schema,
            "topic, partition, offset",
            {**dict.fromkeys(_REQUIRED_FIELDS, "None"), **_ROW_FIELDS},
            _ROW_BODY,
            self.namespace,
            str(parsed_schema.get("name", "")),
        )


_ROW_FUNCTIONS: dict[int, _RowFunctions] = {}


def _row_functions(catalog: EventCatalog) -> _RowFunctions:
    found = _ROW_FUNCTIONS.get(id(catalog))
    if found is None or found.catalog is not catalog:
        found = _ROW_FUNCTIONS[id(catalog)] = _RowFunctions(catalog)
    return found


def event_row(
    catalog: EventCatalog, datum: Mapping[str, Any], topic: str, partition: int, offset: int
) -> list[Any]:
    """A decoded event's row of ``events`` (EVENT_COLUMNS)."""
    return _row_functions(catalog).from_datum(datum, topic, partition, offset)


def event_row_reader(catalog: EventCatalog, parsed_schema: Any) -> BytesRow | None:
    """The row of an event read straight from its Avro bytes, for records of
    ``parsed_schema``: ``reader(payload, position of the datum, topic, partition,
    offset)``. The same row as ``event_row`` of the decoded datum, without building the
    datum (the sink's largest cost per row: BENCHMARKS.md, session 8). None where the
    compiled reader leaves the schema to fastavro. Compiled on each call: keep it."""
    return _row_functions(catalog).from_bytes(parsed_schema)


INVALID_COLUMNS = (
    "received_at",
    "source",
    "key_id",
    "raw",
    "errors",
    "error_fields",
    "source_topic",
    "source_partition",
    "source_offset",
    "letter_id",
)


def invalid_row(
    letter: Mapping[str, Any], fallback_time: datetime, topic: str, partition: int, offset: int
) -> list[Any]:
    """A dead letter from ``events.invalid``; its own received_at, else the record's time."""
    received = letter.get("received_at")
    received_at = datetime.fromisoformat(received) if isinstance(received, str) else fallback_time
    errors = letter.get("errors") or []
    return [
        received_at,
        str(letter.get("source", "")),
        str(letter.get("key_id") or ""),
        str(letter.get("raw", "")),
        json.dumps(errors, sort_keys=True),
        [str(e.get("field", "")) for e in errors if isinstance(e, dict)],
        topic,
        partition,
        offset,
        # letters written before ids existed: one of their own, as they were stored
        str(letter.get("letter_id") or f"{topic}/{partition}/{offset}"),
    ]
