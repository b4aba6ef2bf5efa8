"""Released schema versions stay readable: every event type's current schema reads
data written with each released version (backward compatibility), and the checker
itself catches the changes that would break that."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog import EventCatalog, EventType, default_catalog, load_named_schema
from schemas.codec import decode, encode
from schemas.evolution import (
    backward_incompatibilities,
    released_projections,
    released_versions,
)
from schemas.examples import example_event
from schemas.registry import FileSchemaRegistry, fingerprint_id
from schemas.validation import Accepted, validate_event
from tests.test_collector import NOW

CATALOG = default_catalog()
RELEASED = released_versions(CATALOG)
BY_SUBJECT = {t.subject: t for t in CATALOG.values()}


def test_the_released_envelope_is_on_record() -> None:
    assert load_named_schema("released/envelope.v1.avsc")["name"] == "Envelope"
    assert set(RELEASED) == set(BY_SUBJECT)  # the envelope changed, so every type has a v1


@pytest.mark.parametrize("subject", sorted(RELEASED))
def test_current_schema_reads_every_released_version(subject: str) -> None:
    current = BY_SUBJECT[subject].schema
    for old in RELEASED[subject]:
        assert backward_incompatibilities(old, current) == []


@pytest.mark.parametrize("name", sorted(released_projections()))
def test_projection_consumers_can_read_old_snapshots(name: str) -> None:
    """A compacted topic keeps old snapshots: the current schema must read them."""
    current = load_named_schema(name)
    for old in released_projections()[name]:
        assert backward_incompatibilities(old, current) == []


def _old_record(old: dict[str, Any], event_type: str) -> dict[str, Any]:
    """A record as the released version accepted it: validated against that version,
    since a type may since have widened (issue 12: free-form metadata became JSON text)."""
    kind = CATALOG[event_type]
    released = EventType(
        kind.name,
        kind.category,
        kind.sampling,
        kind.requires,
        old,
        parse_schema(copy.deepcopy(old)),
    )
    outcome = validate_event(EventCatalog({event_type: released}), example_event(released), NOW)
    assert isinstance(outcome, Accepted), outcome
    known = {f["name"] for f in old["fields"]}
    return {k: v for k, v in outcome.datum.items() if k in known}


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_records_written_before_a_change_still_decode(event_type: str) -> None:
    """Data on the topics from v1 decodes through the registry, and resolves into the
    current schema with the new fields at their defaults."""
    kind = CATALOG[event_type]
    registry = FileSchemaRegistry.from_files(CATALOG) if event_type == "quiz_completed" else None
    for old in RELEASED[kind.subject]:
        parsed_old = parse_schema(copy.deepcopy(old))
        datum = _old_record(old, event_type)
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed_old, datum)
        buffer.seek(0)
        as_current = schemaless_reader(buffer, parsed_old, kind.parsed)
        assert isinstance(as_current, dict)
        assert str(as_current["event_id"]) == str(datum["event_id"])
        assert as_current["client_ip"] is None
        if registry is not None:  # the registry knows the old id (one type suffices)
            framed = encode(fingerprint_id(old), parsed_old, datum)
            assert str(decode(registry, framed)["event_id"]) == str(datum["event_id"])


def _record(fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "record", "name": "R", "fields": fields}


BASE = _record(
    [
        {"name": "id", "type": "string"},
        {"name": "n", "type": "int"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ]
)


def _changed(name: str, **spec: Any) -> dict[str, Any]:
    changed = copy.deepcopy(BASE)
    for field in changed["fields"]:
        if field["name"] == name:
            field.clear()
            field.update({"name": name, **spec})
    return changed


@pytest.mark.parametrize(
    ("reader", "problem"),
    [
        (
            _record([*BASE["fields"], {"name": "added", "type": "string"}]),
            "added without a default",
        ),
        (_changed("n", type="string"), "int cannot be read as string"),
        (_changed("id", type="int"), "string cannot be read as int"),
        (
            _changed("kind", type={"type": "enum", "name": "Kind", "symbols": ["a"]}),
            "symbols ['b'] were removed",
        ),
        (_changed("tags", type={"type": "array", "items": "int"}), "string cannot be read as int"),
        (_changed("note", type="string"), "null cannot be read as string"),
        (_changed("n", type={"type": "map", "values": "int"}), "int cannot be read as map"),
    ],
)
def test_breaking_changes_are_caught(reader: dict[str, Any], problem: str) -> None:
    problems = backward_incompatibilities(BASE, reader)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "reader",
    [
        _record([*BASE["fields"], {"name": "added", "type": "string", "default": ""}]),
        _record(BASE["fields"][:-1]),  # a field dropped
        _changed("n", type="long"),  # promoted
        _changed("kind", type={"type": "enum", "name": "Kind", "symbols": ["a", "b", "c"]}),
        _changed("id", type=["null", "string"], default=None),  # made optional
        _changed("id", type="string", aliases=["identifier"]),
    ],
)
def test_compatible_changes_pass(reader: dict[str, Any]) -> None:
    assert backward_incompatibilities(BASE, reader) == []


RESOLVABLE = [
    _record([*BASE["fields"], {"name": "added", "type": "string", "default": ""}]),
    _changed("n", type="long"),
    _changed("id", type=["null", "string"], default=None),
]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    reader=st.sampled_from(RESOLVABLE),
    datum=st.fixed_dictionaries(
        {
            "id": st.text(),
            "n": st.integers(-(2**31), 2**31 - 1),
            "kind": st.sampled_from(["a", "b"]),
            "tags": st.lists(st.text(), max_size=3),
            "note": st.none() | st.text(),
        }
    ),
)
def test_what_the_checker_passes_fastavro_resolves(
    reader: dict[str, Any], datum: dict[str, Any]
) -> None:
    """The structural check agrees with fastavro's own schema resolution on real data."""
    assert backward_incompatibilities(BASE, reader) == []
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(copy.deepcopy(BASE)), datum)
    buffer.seek(0)
    read = schemaless_reader(
        buffer, parse_schema(copy.deepcopy(BASE)), parse_schema(copy.deepcopy(reader))
    )
    assert isinstance(read, dict)
    assert read["id"] == datum["id"] and read["n"] == datum["n"]
