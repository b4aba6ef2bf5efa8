"""Hypothesis strategies derived from the Avro schemas and their ls.* rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from schemas.catalog import EventType, Schema

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
# any JSON document: what a client could send, valid or not
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


# what a free-form JSON field (ls.json) takes: any object of finite JSON values
FREE_FORM = st.dictionaries(
    SAFE_TEXT,
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | SAFE_TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SAFE_TEXT, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)


def _for_type(schema: Any, spec: Schema) -> st.SearchStrategy[Any]:
    if spec.get("ls.json"):
        return st.none() | FREE_FORM if "null" in schema else FREE_FORM
    if isinstance(schema, list):
        branches = [_for_type(b, spec) for b in schema if b != "null"]
        nullable = "null" in schema
        return st.one_of(st.none(), *branches) if nullable else st.one_of(*branches)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-millis":
            return st.datetimes(
                datetime(2000, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)
            ).map(lambda d: d.isoformat(timespec="milliseconds"))
        if schema["type"] == "record":
            return record(schema)
        if schema["type"] == "array":
            return st.lists(_for_type(schema["items"], {}), max_size=4)
        if schema["type"] == "map":
            return st.dictionaries(SAFE_TEXT, _for_type(schema["values"], {}), max_size=3)
        return _for_type(schema["type"], spec)
    if "ls.enum" in spec:
        return st.sampled_from(spec["ls.enum"])
    if schema == "string":
        return st.text(
            min_size=spec.get("ls.minLength", 0), max_size=min(spec.get("ls.maxLength", 40), 40)
        )
    if schema == "boolean":
        return st.booleans()
    if schema in ("int", "long"):
        top = 2**31 - 1 if schema == "int" else 2**53
        return st.integers(spec.get("ls.minimum", -top), spec.get("ls.maximum", top))
    if schema in ("float", "double"):
        return st.floats(
            spec.get("ls.minimum", -1e12),
            spec.get("ls.maximum", 1e12),
            allow_nan=False,
            allow_infinity=False,
        )
    raise ValueError(f"no strategy for {schema!r}")


def record(schema: Schema) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f["name"]: _for_type(f["type"], f) for f in schema["fields"]})


def properties_of(event_type: EventType) -> st.SearchStrategy[dict[str, Any]]:
    (slot,) = [f for f in event_type.schema["fields"] if f["name"] == "properties"]
    return record(slot["type"])


@st.composite
def valid_events(draw: st.DrawFn, event_type: EventType, now: datetime) -> dict[str, Any]:
    moment = now - timedelta(minutes=draw(st.integers(0, 10**6)))
    return {
        "event_id": str(draw(st.uuids())),
        "event_type": event_type.name,
        "timestamp": moment.isoformat(),
        "user_id": draw(st.text(min_size=1, max_size=128)),
        "session_id": draw(st.text(min_size=1, max_size=128)),
        "organization_id": draw(
            st.text(min_size=1, max_size=128)
            if "organization_id" in event_type.requires
            else st.none() | st.text(min_size=1, max_size=128)
        ),
        "device_info": {
            "timezone": draw(
                st.none() | st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata", "Not/AZone"])
            )
        },
        "properties": draw(properties_of(event_type)),
    }
