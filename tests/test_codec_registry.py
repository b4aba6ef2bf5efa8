"""Confluent framing and the file-backed registry's deterministic ids."""

from __future__ import annotations

import copy
import json

import pytest

from schemas.catalog import EventCatalog, default_catalog
from schemas.codec import FramingError, decode, schema_id_of
from schemas.registry import FileSchemaRegistry, UnknownSchemaError, fingerprint_id

CATALOG = default_catalog()


def test_ids_are_deterministic_and_distinct_per_event_type() -> None:
    first = FileSchemaRegistry.from_files(CATALOG)
    second = FileSchemaRegistry.from_files(EventCatalog.load())
    ids = {t.name: first.id_for(t.subject, t.schema) for t in CATALOG.values()}
    assert ids == {t.name: second.id_for(t.subject, t.schema) for t in CATALOG.values()}
    assert len(set(ids.values())) == len(ids)
    assert all(0 < i < 2**31 for i in ids.values())


def test_docs_and_rule_attributes_do_not_change_the_id() -> None:
    schema = copy.deepcopy(CATALOG["quiz_completed"].schema)
    changed = json.loads(json.dumps(schema).replace('"ls.maximum": 100', '"ls.maximum": 99'))
    changed["doc"] = "reworded"
    assert fingerprint_id(changed) == fingerprint_id(schema)


def test_unknown_schema_is_refused() -> None:
    registry = FileSchemaRegistry.from_files(CATALOG)
    schema = copy.deepcopy(CATALOG["quiz_completed"].schema)
    schema["fields"].append({"name": "new_field", "type": "string"})
    with pytest.raises(UnknownSchemaError):
        registry.id_for("x", schema)
    with pytest.raises(UnknownSchemaError):
        registry.parsed_by_id(1)


@pytest.mark.parametrize(
    ("data", "reason"), [(b"\x00\x01", "shorter"), (b"\x01" + bytes(8), "magic")]
)
def test_bad_framing_is_named(data: bytes, reason: str) -> None:
    with pytest.raises(FramingError, match=reason):
        schema_id_of(data)
    with pytest.raises(FramingError):
        decode(FileSchemaRegistry.from_files(CATALOG), data)


def test_memoised_ids_follow_the_schema_object_not_just_the_subject() -> None:
    registry = FileSchemaRegistry.from_files(CATALOG)
    quiz = CATALOG["quiz_completed"]
    first = registry.id_for(quiz.subject, quiz.schema)
    assert registry.id_for(quiz.subject, quiz.schema) == first
    changed = copy.deepcopy(quiz.schema)
    changed["fields"].append({"name": "extra", "type": "string"})
    with pytest.raises(UnknownSchemaError):  # same subject, other content: not the memo's id
        registry.id_for(quiz.subject, changed)
