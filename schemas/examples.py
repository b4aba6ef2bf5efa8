"""A valid example event of any type, built from its schema and ``ls.*`` rules.

Used by the tests (every event type end to end) and handy for SDK users who want to
see what a type looks like: ``python -m schemas.examples quiz_complete``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from schemas.catalog import EventCatalog, EventType, Schema, default_catalog

EXAMPLE_EVENT_ID = "0190f3a0-5b1c-7cc3-9a4f-3b0e5d9a0c11"


def _example_value(schema: Any, spec: Schema, name: str) -> Any:
    if isinstance(schema, list):
        non_null = [branch for branch in schema if branch != "null"]
        return _example_value(non_null[0], spec, name)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-millis":
            return "2026-01-27T14:30:45.123Z"
        if schema["type"] == "record":
            return example_record(schema)
        if schema["type"] == "array":
            return [_example_value(schema["items"], {}, name)]
        if schema["type"] == "map":
            return {"key": _example_value(schema["values"], {}, name)}
        if schema["type"] == "enum":
            return schema["symbols"][0]
        return _example_value(schema["type"], spec, name)
    if "ls.enum" in spec:
        return spec["ls.enum"][0]
    if schema == "string":
        length = max(spec.get("ls.minLength", 1), min(8, spec.get("ls.maxLength", 8)))
        return (name.replace("_", "-") + "-example")[:length].ljust(length, "x")
    if schema == "boolean":
        return True
    if schema in ("int", "long", "float", "double"):
        low, high = spec.get("ls.minimum", 0), spec.get("ls.maximum", 100)
        middle = low + (high - low) / 2
        return int(middle) if schema in ("int", "long") else float(middle)
    raise ValueError(f"no example for schema type {schema!r}")


def example_record(schema: Schema) -> dict[str, Any]:
    """Every field of the record, including optional ones, with a valid value."""
    return {f["name"]: _example_value(f["type"], f, f["name"]) for f in schema["fields"]}


def _properties_schema(event_type: EventType) -> Schema:
    (slot,) = [f for f in event_type.schema["fields"] if f["name"] == "properties"]
    properties: Schema = slot["type"]
    return properties


def example_event(event_type: EventType, timestamp: datetime | None = None) -> dict[str, Any]:
    """A complete envelope in the collector's JSON shape."""
    moment = timestamp or datetime(2026, 1, 27, 14, 30, 45, 123000, tzinfo=UTC)
    return {
        "event_id": EXAMPLE_EVENT_ID,
        "event_type": event_type.name,
        "timestamp": moment.isoformat(),
        "user_id": "usr_12345",
        "session_id": "sess_67890",
        "organization_id": "org_54321",
        "device_info": {"platform": "desktop", "timezone": "Europe/Berlin"},
        "context": {"page_url": "/student/dashboard"},
        "properties": example_record(_properties_schema(event_type)),
    }


def main(argv: list[str]) -> int:
    catalog: EventCatalog = default_catalog()
    names = argv or sorted(catalog)
    for name in names:
        print(json.dumps(example_event(catalog[name]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
