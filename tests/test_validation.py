"""Validation: every rule rejects with the field named; valid events always pass."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.catalog import default_catalog
from schemas.codec import decode, encode
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, Rejected, validate_event
from tests.strategies import JSON_VALUES, valid_events

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)


def quiz(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "0190f3a0-5b1c-7cc3-9a4f-3b0e5d9a0c11",
        "event_type": "quiz_completed",
        "timestamp": "2026-11-23T10:00:00.123+01:00",
        "user_id": "usr_1",
        "properties": {"content_id": "quiz-1", "score": 87},
    }
    event.update(overrides)
    return event


def errors_of(payload: object) -> list[tuple[str, str]]:
    outcome = validate_event(CATALOG, payload, NOW)
    assert isinstance(outcome, Rejected), outcome
    return [(e.field, e.message) for e in outcome.errors]


def test_valid_event_is_normalised() -> None:
    outcome = validate_event(CATALOG, quiz(), NOW)
    assert isinstance(outcome, Accepted)
    assert outcome.datum["timestamp"] == datetime(2026, 11, 23, 9, 0, 0, 123000, tzinfo=UTC)
    assert outcome.datum["properties"]["score"] == 87.0
    assert outcome.datum["privacy_level"] == "standard"
    assert outcome.datum["sample_rate"] == 1.0


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ([], "(event)", "must be an object, got array"),
        (quiz(event_type=None), "event_type", "is required and must be a string"),
        (quiz(event_type="nope"), "event_type", "unknown event type 'nope'"),
        (quiz(event_id="evt_123"), "event_id", "must be a UUID, got 'evt_123'"),
        (quiz(timestamp="2026-11-23T10:00:00"), "timestamp", "needs a UTC offset"),
        (quiz(timestamp="yesterday"), "timestamp", "is not a valid ISO 8601 timestamp"),
        (quiz(timestamp="2026-11-25T12:00:01Z"), "timestamp", "more than 24 h in the future"),
        (quiz(user_id=None), "user_id", "is required for quiz_completed events"),
        (quiz(user_id="u" * 129), "user_id", "is longer than 128 characters"),
        (
            quiz(properties={"content_id": "q", "score": 100.5}),
            "properties.score",
            "must be <= 100",
        ),
        (quiz(properties={"content_id": "q", "score": -1}), "properties.score", "must be >= 0"),
        (
            quiz(properties={"content_id": "q", "score": "90"}),
            "properties.score",
            "must be a number, got string",
        ),
        (
            quiz(properties={"content_id": "q", "score": True}),
            "properties.score",
            "must be a number, got boolean",
        ),
        (quiz(properties={"score": 5}), "properties.content_id", "is required"),
        (
            quiz(properties={"content_id": "", "score": 5}),
            "properties.content_id",
            "is shorter than 1 characters",
        ),
        (
            quiz(properties={"content_id": "q", "score": 5, "extra": 1}),
            "properties.extra",
            "unknown field",
        ),
        (
            quiz(properties={"content_id": "q", "score": 5, "duration_seconds": -3}),
            "properties.duration_seconds",
            "must be >= 0",
        ),
        (quiz(privacy_level="secret"), "privacy_level", "must be one of"),
        (quiz(device_info={"timezone": 5}), "device_info.timezone", "must be a string"),
        (quiz(received_at="2026-11-23T10:00:00Z"), "received_at", "is set by the server"),
        (quiz(sample_rate=0.5), "sample_rate", "is set by the server"),
        (quiz(retention_days=0), "retention_days", "must be >= 1"),
    ],
)
def test_each_rule_rejects_naming_the_field(payload: object, field: str, message: str) -> None:
    found = errors_of(payload)
    assert any(f == field and message in m for f, m in found), found


def test_all_errors_are_reported_at_once() -> None:
    found = errors_of(quiz(event_id="x", properties={"score": 500}))
    assert {f for f, _ in found} == {"event_id", "properties.content_id", "properties.score"}


@given(JSON_VALUES)
def test_arbitrary_json_never_raises_and_rejections_explain(payload: object) -> None:
    outcome = validate_event(CATALOG, payload, NOW)
    if isinstance(outcome, Rejected):
        assert outcome.errors
        assert all(e.field and e.message for e in outcome.errors)


@given(
    overrides=st.fixed_dictionaries(
        {"content_id": st.text(min_size=1, max_size=128)},
        optional={"score": st.floats(0, 100), "duration_seconds": st.integers(0, 2**31 - 1)},
    ),
    mutate=st.sampled_from(["content_id", "score", "duration_seconds"]),
    junk=JSON_VALUES,
)
def test_mutating_a_property_is_accepted_or_names_that_field(
    overrides: dict[str, Any], mutate: str, junk: object
) -> None:
    properties = {"score": 50.0, **overrides}
    event = quiz(properties={**properties, mutate: junk})
    outcome = validate_event(CATALOG, event, NOW)
    if isinstance(outcome, Rejected):
        assert [e.field for e in outcome.errors] == [f"properties.{mutate}"]


@given(st.sampled_from(sorted(CATALOG)).flatmap(lambda name: valid_events(CATALOG[name], NOW)))
def test_any_schema_valid_event_is_accepted_and_round_trips(event: dict[str, Any]) -> None:
    outcome = validate_event(CATALOG, json.loads(json.dumps(event)), NOW)
    assert isinstance(outcome, Accepted), outcome
    schema_id = REGISTRY.id_for(outcome.event_type.subject, outcome.event_type.schema)
    wire = encode(schema_id, outcome.event_type.parsed, copy.deepcopy(outcome.datum))
    decoded = decode(REGISTRY, wire)
    decoded["event_id"] = str(decoded["event_id"])
    assert decoded == outcome.datum
