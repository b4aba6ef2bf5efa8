"""Every payload the seeds show is accepted, stored, queryable and folded (issue 12).

The fixtures in ``tests/seeds/*.json`` are every example payload of the five seeds, as
``tests/seeds/extract.py`` extracts them (and every type seed 004 only names, with the
properties it gives them: none). Each is sent verbatim inside the collector's envelope to
the real stack (collector, processors and sink as processes, real broker, real chdb),
and must come back as: 202, a row in ClickHouse whose properties ClickHouse's JSON
functions read as the seed sent them (under each field's stored name), and the learner
state the rules give. One stack for the module keeps CI time small.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from projections.rounding import round_half_up
from projections.sampling import keeps, sample_rate
from schemas.catalog import EventType, Schema, default_catalog
from schemas.validation import parse_timestamp
from tests.conftest import REPO, isolated_settings
from tests.live_stack import LiveStack, live_stack
from tests.seeds import catalogue
from tests.seeds.extract import DEFAULT_SEEDS, extract, render

CATALOG = default_catalog()
FIXTURES = catalogue.fixtures()
ARRIVAL_TIMEOUT_S = 90

# The rules, written out plainly here (not imported from projections/) so the suite
# checks the pipeline against the README, not against itself.
ACTIVITY = {
    "lesson_completed",
    "quiz_completed",
    "quiz_complete",
    "question_submit",
    "material_complete",
    "session_completed",
    "session_end",
    "session_ended",
    "session_result",
    "game_stage_complete",
    "assignment_completed",
    "challenge_completed",
}
SESSION_ENDS = {"session_end", "session_ended", "session_completed", "session_result"}


# ---- the committed fixtures are the seeds, and the README lists them ---------------


def test_fixtures_are_what_the_extraction_script_makes() -> None:
    if not DEFAULT_SEEDS.is_dir():
        pytest.skip(f"no seeds at {DEFAULT_SEEDS}: the committed fixtures are used as they are")
    for number, fixtures in extract(DEFAULT_SEEDS).items():
        committed = (REPO / "tests" / "seeds" / f"{number}.json").read_text(encoding="utf-8")
        assert render(fixtures) == committed, f"run python -m tests.seeds.extract ({number})"


def test_every_type_seed_004_names_is_a_fixture_with_no_properties() -> None:
    name_only = {f["event_type"] for f in FIXTURES if f["id"].endswith("-name-only")}
    assert len(name_only) == 46
    assert all(f["properties"] == {} for f in FIXTURES if f["id"].endswith("-name-only"))


def test_every_seed_fixture_names_a_known_event_type() -> None:
    assert all(CATALOG.resolve(f["event_type"]) is not None for f in FIXTURES)


def test_the_readme_catalogue_is_current() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert catalogue.render() in readme, "run python -m tests.seeds.catalogue, paste into README"


# ---- the real stack ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    settings = isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("seeds"))
    with live_stack(settings) as running:
        running.arrival_timeout_s = ARRIVAL_TIMEOUT_S
        yield running


RUN = random.Random().randrange(10**6, 10**7)  # learners of this run only


def kept_event_id(event_type: str) -> str:
    """A fresh UUID that sampling keeps: seed 004 samples page views at 1 % even in
    development, and a sampled-out event is correctly never stored."""
    kind = CATALOG.resolve(event_type)
    rate = 1.0 if kind is None else sample_rate(kind, "development", {})
    while not keeps(event_id := str(uuid.uuid4()), rate):
        pass
    return event_id


def envelope(fixture: dict[str, Any], index: int) -> dict[str, Any]:
    """The seed's payload in the collector's envelope. Each fixture is a learner of its
    own (so state checks stay apart) whose id keeps the seed's JSON type: Laravel's
    integer stays an integer. event_id is always a fresh UUID: seed 004's example id is
    not one, and a repeated id would be dropped as a duplicate."""
    sent = dict(fixture["envelope"])
    seed_user = sent.get("user_id")
    if isinstance(seed_user, int):
        user: int | str = RUN * 1000 + index
    else:
        user = f"{seed_user or 'learner'}-{RUN}-{index}"
    return {
        "timestamp": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "organization_id": "org-conformance",
        **sent,
        "event_id": kept_event_id(fixture["event_type"]),
        "event_type": fixture["event_type"],
        "user_id": user,
        "properties": fixture["properties"],
    }


def _field(kind: EventType, name: str) -> Schema:
    (spec,) = [f for f in catalogue.properties_schema(kind)["fields"] if f["name"] == name]
    return cast(Schema, spec)


def stored(spec: Schema, value: Any) -> Any:
    """What the seed's value is stored as: ids as text, free-form JSON as canonical text,
    times as instants, numbers as numbers."""
    if spec.get("ls.json"):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if spec.get("ls.coerce") == "string":
        if isinstance(value, list):
            return [str(v) for v in value]
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    branches = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if any(isinstance(b, dict) and b.get("logicalType") == "timestamp-millis" for b in branches):
        return parse_timestamp(value)
    records = [b for b in branches if isinstance(b, dict) and b.get("type") == "array"]
    if records and isinstance(records[0]["items"], dict) and isinstance(value, list):
        fields = {f["name"]: f for f in records[0]["items"]["fields"]}  # scores[] entries
        return [{k: stored(fields[k], v) for k, v in item.items()} for item in value]
    return value


def same(expected: Any, found: Any) -> bool:
    if isinstance(expected, datetime):
        return isinstance(found, str) and datetime.fromisoformat(found) == expected
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        return isinstance(found, float | int) and math.isclose(expected, found)
    if isinstance(expected, list):
        return (
            isinstance(found, list)
            and len(found) == len(expected)
            and all(same(e, f) for e, f in zip(expected, found, strict=True))
        )
    if isinstance(expected, dict):
        return isinstance(found, dict) and all(same(v, found.get(k)) for k, v in expected.items())
    return bool(expected == found)


def expected_state(event_type: str, props: dict[str, Any]) -> dict[str, int]:
    """user_progress as the README's rules give it for one event of a new learner."""
    xp = 0
    if event_type == "lesson_completed":
        xp = 50
    elif event_type == "quiz_completed" and isinstance(props.get("score"), int | float):
        xp = round_half_up(props["score"])
    elif event_type == "quiz_complete" and props.get("total_questions"):
        xp = round_half_up(100 * props.get("correct_answers", 0) / props["total_questions"])
    elif event_type == "question_submit" and props.get("is_correct") is True:
        xp = 10
    elif event_type == "material_complete":
        xp = 20
    seconds_key = "total_duration" if event_type == "session_completed" else "duration_seconds"
    ended = event_type in SESSION_ENDS
    return {
        "xp": xp,
        "current_streak": int(event_type in ACTIVITY),
        "sessions_completed": int(ended),
        "study_seconds": int(props.get(seconds_key) or 0) if ended else 0,
    }


@dataclass
class Case:
    """One payload as sent, and the learner it belongs to."""

    name: str
    kind: EventType
    event: dict[str, Any]
    properties: dict[str, Any]  # by stored name, as stored


def make_case(name: str, event: dict[str, Any]) -> Case:
    kind = CATALOG.resolve(event["event_type"])
    assert kind is not None, name
    properties = {}
    for key, value in event["properties"].items():
        field = catalogue.stored_name(kind, key)
        properties[field] = stored(_field(kind, field), value)
    return Case(name, kind, event, properties)


# payloads beyond the extracted ones: the same seeds' apps, spelled as they also do
EXTRA: list[tuple[str, str, dict[str, Any]]] = [
    ("lesson in snake case", "lesson_completed", {"content_id": "lesson-9", "time_spent": 15}),
    ("lesson as camelCase type", "lessonCompleted", {"contentId": "lesson-10"}),
    ("quiz without a score", "quiz_completed", {"contentId": "quiz-4", "timeSpent": 3}),
    (
        "session_result with JSONB metadata",
        "session_result",
        {
            "session_type": "roleplay",
            "duration_seconds": 420,
            "metadata": {
                "attempts": 3,
                "accent": {"score": 0.8, "flags": ["th", "r"]},
                "offline": True,
                "note": None,
            },
        },
    ),
    (
        "session_completed with string ids",
        "session_completed",
        {"practice_mode_id": "negotiation", "drills_completed": 2, "total_duration": 600},
    ),
]


@pytest.fixture(scope="module")
def sent(stack: LiveStack) -> list[Case]:
    """Every fixture and extra payload, each posted alone; all of them stored."""
    cases = [make_case(f["id"], envelope(f, i)) for i, f in enumerate(FIXTURES)]
    for i, (name, event_type, properties) in enumerate(EXTRA, start=len(cases)):
        fixture = {"event_type": event_type, "envelope": {}, "properties": properties}
        cases.append(make_case(name, envelope(fixture, i)))
    for case in cases:
        response = stack.collector.post("/v1/events", json=case.event)
        assert response.status_code == 202, (case.name, response.text)
    ids = ", ".join(f"'{c.event['event_id']}'" for c in cases)
    stack.wait_for(
        f"{len(cases)} events in ClickHouse",
        lambda: (
            stack.sql(
                f"SELECT count() FROM events WHERE toString(event_id) IN ({ids}) "
                "AND source_topic LIKE '%events.clean'"
            )
            == [[len(cases)]]
        ),
    )
    return cases


def test_every_payload_is_stored_with_its_fields_queryable(
    stack: LiveStack, sent: list[Case]
) -> None:
    ids = ", ".join(f"'{c.event['event_id']}'" for c in sent)
    rows = stack.sql(
        "SELECT toString(event_id), event_type, user_id, JSONExtractKeysAndValuesRaw(properties) "
        f"FROM events WHERE toString(event_id) IN ({ids}) AND source_topic LIKE '%events.clean'"
    )
    by_id = {row[0]: row for row in rows}
    problems: list[tuple[Any, ...]] = []
    for case in sent:
        _, event_type, user_id, pairs = by_id[case.event["event_id"]]
        found = {key: json.loads(raw) for key, raw in pairs}
        if event_type != case.kind.name or user_id != str(case.event["user_id"]):
            problems.append((case.name, event_type, user_id))
        for field, expected in case.properties.items():
            if not same(expected, found.get(field)):
                problems.append((case.name, field, expected, found.get(field)))
    assert problems == []


def test_free_form_json_keeps_non_string_values_for_clickhouse(
    stack: LiveStack, sent: list[Case]
) -> None:
    (session,) = [c for c in sent if c.name == "session_result with JSONB metadata"]
    (search,) = [c for c in sent if c.kind.name == "search_performed"]
    rows = stack.sql(
        "SELECT JSONExtractInt(JSONExtractString(properties, 'metadata'), 'attempts'), "
        "JSONExtractFloat(JSONExtractString(properties, 'metadata'), 'accent', 'score'), "
        "JSONExtract(JSONExtractString(properties, 'metadata'), 'accent', 'flags', "
        "'Array(String)'), "
        "JSONExtractBool(JSONExtractString(properties, 'metadata'), 'offline') "
        f"FROM events WHERE toString(event_id) = '{session.event['event_id']}'"
    )
    assert rows == [[3, 0.8, ["th", "r"], True]]
    rows = stack.sql(
        "SELECT JSONExtractInt(JSONExtractString(properties, 'filters_applied'), 'year'), "
        "JSONExtractBool(JSONExtractString(properties, 'filters_applied'), 'include_archived') "
        f"FROM events WHERE toString(event_id) = '{search.event['event_id']}'"
    )
    assert rows == [[2, False]]


def test_each_learner_state_follows_the_rules(stack: LiveStack, sent: list[Case]) -> None:
    learners = {str(c.event["user_id"]): c for c in sent}
    users = ", ".join(f"'{u}'" for u in learners)
    query = (
        "SELECT user_id, xp, current_streak, sessions_completed, study_seconds "
        f"FROM user_progress_current WHERE user_id IN ({users})"
    )
    stack.wait_for("every learner's progress", lambda: len(stack.sql(query)) == len(learners))
    problems = []
    for user, xp, streak, sessions, seconds in stack.sql(query):
        case = learners[user]
        expected = expected_state(case.kind.name, case.properties)
        found = {
            "xp": xp,
            "current_streak": streak,
            "sessions_completed": sessions,
            "study_seconds": seconds,
        }
        if found != expected:
            problems.append((case.name, expected, found))
    assert problems == []
    # the seed-003 language session is study activity, as issue 12 asks
    (language,) = [c for c in sent if c.name == "003-save-session"]
    assert expected_state("session_result", language.properties)["study_seconds"] == 300


def test_practice_sessions_move_practice_mode_progress(stack: LiveStack, sent: list[Case]) -> None:
    sessions = [c for c in sent if c.kind.name == "session_completed"]
    users = ", ".join(f"'{c.event['user_id']}'" for c in sessions)
    query = (
        "SELECT user_id, practice_mode_id, total_sessions, total_drills_completed "
        f"FROM mode_progress_current WHERE user_id IN ({users}) ORDER BY user_id"
    )
    stack.wait_for("practice-mode progress", lambda: len(stack.sql(query)) == len(sessions))
    expected = sorted(
        [
            str(c.event["user_id"]),
            c.properties["practice_mode_id"],
            1,
            c.properties["drills_completed"],
        ]
        for c in sessions
    )
    assert sorted(stack.sql(query)) == expected


def test_both_spellings_of_one_field_are_refused_naming_it(stack: LiveStack) -> None:
    fixture = {
        "event_type": "lesson_completed",
        "envelope": {},
        "properties": {"contentId": "lesson-1", "content_id": "lesson-1"},
    }
    response = stack.collector.post("/v1/events", json=envelope(fixture, 10**5))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["properties.content_id"]


def test_the_fixture_files_exist() -> None:
    assert sorted(p.name for p in Path(catalogue.HERE).glob("*.json")) == [
        "000.json",
        "001.json",
        "002.json",
        "003.json",
        "004.json",
    ]
