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
from tests.strategies import FREE_FORM, JSON_VALUES, valid_events

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


# ---- issue 12: other spellings, integer ids and free-form JSON, as the seeds send them --

ALIASED = sorted(
    (name, spec["name"], alias)
    for name, kind in CATALOG.items()
    for spec in next(f for f in kind.schema["fields"] if f["name"] == "properties")["type"][
        "fields"
    ]
    for alias in spec.get("aliases", ())
)


def _event(event_type: str, properties: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {
        "event_id": "0190f3a0-5b1c-7cc3-9a4f-3b0e5d9a0c11",
        "event_type": event_type,
        "timestamp": "2026-11-23T10:00:00Z",
        "user_id": "usr_1",
        "session_id": "s1",
        "organization_id": "org-1",
        "properties": properties,
        **envelope,
    }


def _required(event_type: str) -> dict[str, Any]:
    """The event type's example properties (every field valid)."""
    from schemas.examples import example_event

    return dict(example_event(CATALOG[event_type])["properties"])


def test_aliases_exist_for_the_seed_spellings() -> None:
    assert ("lesson_completed", "content_id", "contentId") in ALIASED
    assert ("lesson_completed", "time_spent", "timeSpent") in ALIASED
    assert ("session_completed", "total_duration", "total_duration_seconds") in ALIASED


@given(case=st.sampled_from(ALIASED), data=st.data())
def test_an_alias_is_stored_as_the_field_itself(case: tuple[str, str, str], data: Any) -> None:
    event_type, field, alias = case
    properties = _required(event_type)
    value = properties.pop(field)
    value = data.draw(st.just(value))
    by_name = validate_event(CATALOG, _event(event_type, {**properties, field: value}), NOW)
    by_alias = validate_event(CATALOG, _event(event_type, {**properties, alias: value}), NOW)
    assert isinstance(by_name, Accepted) and isinstance(by_alias, Accepted)
    assert by_alias.datum == by_name.datum
    both = validate_event(
        CATALOG, _event(event_type, {**properties, field: value, alias: value}), NOW
    )
    assert isinstance(both, Rejected)
    assert [e.field for e in both.errors] == [f"properties.{field}"]
    assert "given twice" in both.errors[0].message


@given(user=st.integers(-(2**63), 2**63 - 1), mode=st.integers(-(2**63), 2**63 - 1))
def test_integer_ids_are_stored_as_their_decimal_text(user: int, mode: int) -> None:
    properties = {"practice_mode_id": mode, "drills_completed": 1, "total_duration": 60}
    outcome = validate_event(CATALOG, _event("session_completed", properties, user_id=user), NOW)
    assert isinstance(outcome, Accepted), outcome
    assert outcome.datum["user_id"] == str(user)
    assert outcome.datum["properties"]["practice_mode_id"] == str(mode)


@given(user=st.integers(2**63, 2**200) | st.integers(-(2**200), -(2**63) - 1))
def test_an_integer_id_beyond_64_bits_is_refused_naming_it(user: int) -> None:
    assert errors_of(_event("lesson_completed", {"content_id": "l"}, user_id=user)) == [
        ("user_id", "an integer id must fit in 64 bits")
    ]


@given(metadata=FREE_FORM)
def test_free_form_json_is_kept_losslessly_as_canonical_text(metadata: dict[str, Any]) -> None:
    properties = {"session_type": "conversation", "metadata": metadata}
    outcome = validate_event(CATALOG, _event("session_result", properties), NOW)
    assert isinstance(outcome, Accepted), outcome
    text = outcome.datum["properties"]["metadata"]
    assert json.loads(text) == json.loads(json.dumps(metadata))  # lossless
    reordered = dict(reversed(list(metadata.items())))
    again = validate_event(
        CATALOG, _event("session_result", {**properties, "metadata": reordered}), NOW
    )
    assert isinstance(again, Accepted) and again.datum["properties"]["metadata"] == text


@pytest.mark.parametrize(
    ("metadata", "field", "message"),
    [
        ({"n": float("nan")}, "properties.metadata.n", "must be a finite number"),
        ({"n": 2**64}, "properties.metadata.n", "integer out of range"),
        ({"s": "x" * 4097}, "properties.metadata.s", "is longer than 4096"),
        ({"k" * 257: 1}, "properties.metadata", "longer than 256"),
        ({"a": list(range(1001))}, "properties.metadata.a", "more than 1000 items"),
        ([1, 2], "properties.metadata", "must be an object, got array"),
    ],
)
def test_free_form_json_keeps_the_door_limits(metadata: Any, field: str, message: str) -> None:
    found = errors_of(_event("session_result", {"session_type": "roleplay", "metadata": metadata}))
    assert any(f == field and message in m for f, m in found), found


def test_an_event_type_is_taken_in_camel_case_and_by_its_other_names() -> None:
    for sent, stored_as in (
        ("lessonCompleted", "lesson_completed"),
        ("question_attempt", "question_submit"),
    ):
        properties = _required(stored_as)
        outcome = validate_event(CATALOG, _event(sent, properties), NOW)
        assert isinstance(outcome, Accepted), outcome
        assert outcome.datum["event_type"] == stored_as
