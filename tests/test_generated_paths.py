"""The generated validator and Avro writer agree with their references, value for value.

``schemas.validation`` and ``schemas.codec`` compile each record to straight-line Python
with inline fast paths for the commonest valid values (issue 14); everything else goes
to the per-field code they had before, kept as the reference (``reference_validator``,
``reference_writer``). Here both see the same events, valid and spoiled field by field
with edge values: the same datum, the same errors in the same order, the same bytes or
the same refusal."""

from __future__ import annotations

import copy
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.enrichment import EnrichmentPolicy, Sender, enrich
from schemas.catalog import EventType, default_catalog
from schemas.codec import compiled_writer, reference_writer
from schemas.examples import example_event
from schemas.validation import (
    Accepted,
    FieldError,
    compiled_validator,
    reference_validator,
    validate_event,
)
from tests.strategies import JSON_VALUES, valid_events

CATALOG = default_catalog()
TYPES = sorted(CATALOG.values(), key=lambda t: t.name)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
REFERENCE_VALIDATORS = {t.name: reference_validator(t.schema) for t in TYPES}
REFERENCE_WRITERS = {t.name: reference_writer(t.parsed) for t in TYPES}

# values at and past the edges the fast paths test: lengths, ranges, types, formats
EDGE_VALUES: list[Any] = [
    "",
    "x",
    "x" * 63,  # the longest string whose length is one varint byte
    "x" * 64,
    "x" * 65,
    "x" * 128,
    "x" * 129,
    "x" * 4096,
    "x" * 4097,
    "é" * 40,
    0,
    1,
    -1,
    5,
    6,
    10950,
    10951,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**63 - 1,
    2**63,
    10**400,
    0.0,
    -0.0,
    0.5,
    5.0,
    1e39,
    -1e39,
    math.inf,
    -math.inf,
    math.nan,
    True,
    False,
    None,
    [],
    ["a", 1],
    {},
    {"a": 1},
    "standard",
    "pii",
    "STANDARD",
    "123e4567-e89b-12d3-a456-426614174000",
    "123E4567-E89B-12D3-A456-426614174000",
    "{123e4567-e89b-12d3-a456-426614174000}",
    "2026-11-30T11:00:00Z",
    "2026-11-30T11:00:00.123456+05:30",
    "2026-11-30T11:00:00",
    "2026-13-30T11:00:00Z",
    "0001-01-01T00:00:00-01:00",
    "1969-12-31T23:59:59Z",
]
EDGES = st.sampled_from(EDGE_VALUES)
VALUES = EDGES | JSON_VALUES


def _field_names(schema: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths to every field of a record, nested records' fields included."""
    paths: list[tuple[str, ...]] = []
    for spec in schema["fields"]:
        paths.append((spec["name"],))
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        for kind in kinds:
            if isinstance(kind, dict) and kind.get("type") == "record":
                paths += [(spec["name"], *inner) for inner in _field_names(kind)]
    return paths


@st.composite
def spoiled_events(draw: st.DrawFn) -> tuple[EventType, dict[str, Any]]:
    """A valid event of some type with a few fields set to edge values, dropped, given
    under an alias, or joined by an unknown key."""
    event_type = draw(st.sampled_from(TYPES))
    event: dict[str, Any] = draw(valid_events(event_type, NOW))
    paths = _field_names(event_type.schema)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(paths))
        holder: Any = event
        for name in path[:-1]:
            holder = holder.get(name)
            if not isinstance(holder, dict):
                break
        else:
            action = draw(st.sampled_from(["set", "set", "set", "drop", "unknown"]))
            if action == "set":
                holder[path[-1]] = draw(VALUES)
            elif action == "drop":
                holder.pop(path[-1], None)
            else:
                holder[draw(st.sampled_from(["contentId", "extra", "x" * 300]))] = draw(VALUES)
    return event_type, event


def _run(validator: Any, event: dict[str, Any]) -> tuple[Any, list[FieldError]]:
    errors: list[FieldError] = []
    try:
        datum = validator(copy.deepcopy(event), "", errors)
    except Exception as exc:  # the record itself refused (never for a dict)
        return ("raised", type(exc), str(exc)), errors
    return (list(datum), _comparable(datum)), errors


def _comparable(value: Any) -> Any:
    """NaN never equals itself; spell it out so equal data compare equal."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _with(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any] | None:
    """``event`` with the field at ``path`` set to ``value`` (dropped for the marker
    ``DROP``); None where the path's record is not in the event."""
    changed = copy.deepcopy(event)
    holder: Any = changed
    for name in path[:-1]:
        holder = holder.get(name)
        if not isinstance(holder, dict):
            return None
    if value is DROP:
        holder.pop(path[-1], None)
    else:
        holder[path[-1]] = value
    return changed


DROP = object()


def test_every_field_of_every_type_with_every_edge_value_validates_as_the_reference() -> None:
    """Exhaustive where it is cheap: each field alone set to each edge value, or dropped."""
    checked = 0
    for event_type in TYPES:
        base = example_event(event_type, NOW - timedelta(hours=1))
        base["device_info"]["browser"] = "Firefox"  # every nested record's fields present
        generated = compiled_validator(event_type.schema)
        for path in _field_names(event_type.schema):
            for value in [*EDGE_VALUES, DROP]:
                event = _with(base, path, value)
                if event is not None:
                    assert _run(generated, event) == _run(
                        REFERENCE_VALIDATORS[event_type.name], event
                    ), (event_type.name, path, value)
                    checked += 1
    assert checked > 100_000 // 2


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spoiled_events())
def test_the_generated_validator_gives_the_references_datum_and_errors(
    case: tuple[EventType, dict[str, Any]],
) -> None:
    event_type, event = case
    generated = _run(compiled_validator(event_type.schema), event)
    reference = _run(REFERENCE_VALIDATORS[event_type.name], event)
    assert generated == reference


def _written(writer: Any, datum: dict[str, Any]) -> bytes | tuple[str, type]:
    out = bytearray()
    try:
        writer(out, datum)
    except Exception as exc:  # encode hands these to fastavro; the type must agree
        return ("raised", type(exc))
    return bytes(out)


# what a datum may hold after code other than validation touched it
PYTHON_VALUES: list[Any] = [
    *EDGE_VALUES,
    datetime(2026, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    datetime(2026, 1, 1),  # naive: fastavro's to judge
    uuid.UUID(int=7),
    ("string", "x"),  # fastavro's (branch, value) notation
    b"bytes",
    2.5,
    -(2**63),
]


def test_every_field_of_every_type_with_every_python_value_is_written_as_the_reference() -> None:
    sender = Sender(ip="203.0.113.9", user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0")
    values = [*PYTHON_VALUES, DROP]
    checked = 0
    for event_type in TYPES:
        outcome = validate_event(CATALOG, example_event(event_type, NOW - timedelta(hours=1)), NOW)
        assert isinstance(outcome, Accepted), outcome
        datum = enrich(event_type, outcome.datum, NOW, sender, EnrichmentPolicy("truncate"))
        generated = compiled_writer(event_type.parsed)
        for path in _field_names(event_type.schema):
            for value in values:
                changed = _with(datum, path, value)
                if changed is not None:
                    assert _written(generated, changed) == _written(
                        REFERENCE_WRITERS[event_type.name], changed
                    ), (event_type.name, path, value)
                    checked += 1
    assert checked > 100_000 // 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(TYPES).flatmap(lambda t: st.tuples(st.just(t), valid_events(t, NOW))), st.data()
)
def test_the_generated_writer_writes_the_references_bytes(
    case: tuple[EventType, dict[str, Any]], data: st.DataObject
) -> None:
    event_type, event = case
    outcome = validate_event(CATALOG, event, NOW)
    assert isinstance(outcome, Accepted), outcome
    sender = Sender(ip="203.0.113.9", user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0")
    datum = enrich(
        event_type, outcome.datum, NOW + timedelta(seconds=1), sender, EnrichmentPolicy("truncate")
    )
    paths = _field_names(event_type.schema)
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(paths))
        holder: Any = datum
        for name in path[:-1]:
            holder = holder.get(name)
            if not isinstance(holder, dict):
                break
        else:
            if data.draw(st.booleans()):
                holder[path[-1]] = data.draw(st.sampled_from(PYTHON_VALUES))
            else:
                holder.pop(path[-1], None)
    generated = _written(compiled_writer(event_type.parsed), datum)
    assert generated == _written(REFERENCE_WRITERS[event_type.name], datum)
