"""The read API and the roles of seed 004 on real chdb, against answers computed here.

A generated cohort of language-practice sessions (two organizations, classes with
their teachers, a teacher's own activity) goes through the real sink. Each role's
visible rows are computed in plain Python from the rules and compared with what the
SQL conditions select; the API's session reads are compared with plain sums."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from statistics import mean
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from learnstream.cli import main as cli
from learnstream.erasure import ErasureRequest
from learnstream.settings import Settings
from schemas.examples import example_event
from sinks.access import Principal, Role, event_condition, row_policies, table_conditions
from sinks.projection_rows import PROJECTION_TABLES, projection_row
from sinks.query_api import create_query_app
from sinks.read_sessions import ReadSessions
from sinks.writer import ClickHouseWriter
from tests.conftest import isolated_settings, migrated_clickhouse
from tests.test_sink_redelivery import CATALOG, produce_examples, run_sink_until

AS_OF = date(2026, 3, 31)
SECRET = "reader-secret-for-the-tests-0123456789"
# learner -> (organization, [(class, teacher)]) they practise in
ENROLMENT = {
    "s1": ("org-a", [("c1", "t1")]),
    "s2": ("org-a", [("c1", "t1")]),
    "s3": ("org-a", [("c2", "t2")]),
    "s4": ("org-a", [("c1", "t1"), ("c2", "t2")]),
    "s5": ("org-b", [("c1", "t9")]),  # same class name, another organization
}
TYPES = ("conversation", "pronunciation", "roleplay")
TOPICS = ("travel", "hotels", "food", "work", "family")
AREAS = ("past tense", "prepositions", "articles", "vowels")
WORDS = ("reservation", "available", "receipt", "delay", "menu", "invoice")


def _session(rng: random.Random, user: str, org: str, klass: str, teacher: str) -> dict[str, Any]:
    moment = datetime.combine(AS_OF, datetime.min.time(), UTC) - timedelta(
        minutes=rng.randrange(-60 * 23, 60 * 24 * 40)
    )
    event = example_event(CATALOG["session_result"], moment)
    event.update(
        event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        user_id=user,
        organization_id=org,
        context={"class_id": klass, "teacher_id": teacher},
    )
    event["properties"] = {
        "session_type": rng.choice(TYPES),
        "duration_seconds": rng.randrange(60, 1800),
        "words_spoken": rng.choice([None, rng.randrange(0, 400)]),
        "pronunciation_score": rng.choice([None, float(rng.randrange(40, 100))]),
        "fluency_score": float(rng.randrange(40, 100)),
        "grammar_score": float(rng.randrange(40, 100)),
        "topics": rng.sample(TOPICS, rng.randrange(0, 3)),
        "vocabulary_learned": rng.sample(WORDS, rng.randrange(0, 3)),
        "areas_to_improve": rng.sample(AREAS, rng.randrange(0, 3)),
    }
    return event


def cohort(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for user, (org, places) in ENROLMENT.items():
        for _ in range(rng.randrange(15, 30)):
            klass, teacher = rng.choice(places)
            events.append(_session(rng, user, org, klass, teacher))
    # a teacher's own activity, outside any class
    lesson = example_event(CATALOG["material_open"], datetime(2026, 3, 20, tzinfo=UTC))
    lesson.update(event_id=str(uuid.uuid4()), user_id="t2", organization_id="org-a", context=None)
    events.append(lesson)
    return events


def sees(who: Principal, event: dict[str, Any]) -> bool:
    """Seed 004's rules, written out independently of the SQL."""
    context = event.get("context") or {}
    klass, teacher = context.get("class_id"), context.get("teacher_id")
    same_org: bool = event["organization_id"] == who.organization_id
    mine: bool = event["user_id"] == who.user_id
    if who.role is Role.SYSTEM_ADMIN:
        return True
    if who.role is Role.STUDENT:
        return mine
    if who.role is Role.SUBSCRIBER_ADMIN:
        return same_org
    if who.role is Role.TEACHER:
        return same_org and (mine or teacher == who.user_id or klass in who.class_ids)
    managed = {who.user_id, *who.teacher_ids}
    return same_org and (
        mine or teacher in managed or event["user_id"] in who.teacher_ids or klass in who.class_ids
    )


PRINCIPALS = {
    "student": Principal(Role.STUDENT, "s1"),
    "teacher": Principal(Role.TEACHER, "t1", "org-a", class_ids=("c1",)),
    "teacher_admin": Principal(Role.TEACHER_ADMIN, "ta", "org-a", teacher_ids=("t2",)),
    "subscriber_admin": Principal(Role.SUBSCRIBER_ADMIN, "sa", "org-a"),
    "system_admin": Principal(Role.SYSTEM_ADMIN, "root"),
}


def token(who: Principal, **overrides: Any) -> str:
    claims = {
        "sub": who.user_id,
        "role": str(who.role),
        "org": who.organization_id,
        "classes": list(who.class_ids),
        "teachers": list(who.teacher_ids),
        "exp": datetime.now(UTC) + timedelta(hours=1),
        **overrides,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(who: Principal) -> dict[str, str]:
    return {"authorization": f"Bearer {token(who)}"}


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return cohort(11)


@pytest.fixture(scope="module")
def module_settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("learner-api"))


@pytest.fixture(scope="module")
def clickhouse(module_settings: Settings) -> Iterator[Any]:
    """One cohort through the sink for the whole module: the reads do not change it."""
    with migrated_clickhouse(module_settings) as client:
        yield client


@pytest.fixture(scope="module")
def stored(
    module_settings: Settings, clickhouse: Any, events: list[dict[str, Any]]
) -> ClickHouseWriter:
    writer = ClickHouseWriter(clickhouse, module_settings.clickhouse_database)
    asyncio.run(produce_examples(module_settings, events, now=datetime(2026, 4, 1, tzinfo=UTC)))
    asyncio.run(run_sink_until(module_settings, writer, len(events)))
    return writer


@pytest.fixture(scope="module")
def sessions(module_settings: Settings, stored: ClickHouseWriter) -> Iterator[ReadSessions]:
    opened = ReadSessions.open(module_settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def api(stored: ClickHouseWriter, sessions: ReadSessions) -> TestClient:
    return TestClient(create_query_app(stored, sessions, SECRET))


def test_each_role_sees_exactly_its_rows(
    stored: ClickHouseWriter, clickhouse: Any, events: list[dict[str, Any]]
) -> None:
    for name, who in PRINCIPALS.items():
        rows = clickhouse.query(
            f"SELECT toString(event_id) FROM events WHERE {event_condition(who)}"
        ).result_rows
        expected = {e["event_id"] for e in events if sees(who, e)}
        assert {r[0] for r in rows} == expected, name
        assert expected, f"the cohort gives {name} something to see"
    # the cohort separates the roles: no two see the same rows
    seen = [frozenset(e["event_id"] for e in events if sees(w, e)) for w in PRINCIPALS.values()]
    assert len(set(seen)) == len(seen)


def test_row_policies_are_valid_clickhouse_with_the_same_conditions(clickhouse: Any) -> None:
    for who in PRINCIPALS.values():
        statements = row_policies(who, f"analyst_{who.user_id}", "learnstream")
        conditions = table_conditions(who, "learnstream")
        assert len(statements) == len(conditions)
        for statement, (table, condition) in zip(statements, conditions.items(), strict=True):
            formatted = clickhouse.query(
                "SELECT formatQuery({q:String})", parameters={"q": statement}
            ).result_rows[0][0]
            assert f"ON learnstream.{table}" in formatted
            assert f"USING {condition} TO" in statement


def test_projection_conditions_follow_the_learners_a_reader_sees(
    stored: ClickHouseWriter, clickhouse: Any, events: list[dict[str, Any]]
) -> None:
    spec = PROJECTION_TABLES["projections.user_progress"]
    rows = [
        projection_row(spec, user, {"user_id": user, "xp": 10}, ("projections", 0, i))
        for i, user in enumerate(ENROLMENT)
    ]
    clickhouse.insert("user_progress", rows, column_names=list(spec.columns))
    for name, who in PRINCIPALS.items():
        condition = table_conditions(who, clickhouse.database)["user_progress"]
        found = clickhouse.query(f"SELECT user_id FROM user_progress WHERE {condition}")
        expected = {e["user_id"] for e in events if sees(who, e)} & set(ENROLMENT)
        assert {r[0] for r in found.result_rows} == expected, name


def _sessions(events: list[dict[str, Any]], who: Principal, user: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["event_type"] == "session_result" and e["user_id"] == user and sees(who, e)
    ]


def _in_days(event: dict[str, Any], days: int) -> bool:
    moment = datetime.fromisoformat(event["timestamp"]).date()
    return AS_OF - timedelta(days=days - 1) <= moment <= AS_OF


def test_history_is_paginated_newest_first_and_scoped(
    api: TestClient, events: list[dict[str, Any]]
) -> None:
    teacher = PRINCIPALS["teacher"]
    mine = sorted(
        _sessions(events, teacher, "s4"),
        key=lambda e: (datetime.fromisoformat(e["timestamp"]), e["event_id"]),
        reverse=True,
    )
    assert 0 < len(mine) < len(_sessions(events, PRINCIPALS["system_admin"], "s4"))
    pages: list[str] = []
    for offset in range(0, len(mine) + 5, 5):
        body = api.get(
            "/v1/learners/s4/sessions/history",
            params={"limit": 5, "offset": offset},
            headers=bearer(teacher),
        ).json()
        assert body.get("total") == len(mine), body
        pages.extend(s["session_id"] for s in body["sessions"])
    assert len(pages) == len(mine)
    assert {p for p in pages} == {e["event_id"] for e in mine}
    first = api.get(
        "/v1/learners/s4/sessions/history", params={"limit": 100}, headers=bearer(teacher)
    ).json()["sessions"]
    assert [s["session_id"] for s in first] == pages  # stable order across pages

    only = api.get(
        "/v1/learners/s4/sessions/history",
        params={"session_type": "roleplay", "limit": 100},
        headers=bearer(teacher),
    ).json()
    assert only["total"] == sum(e["properties"]["session_type"] == "roleplay" for e in mine)
    assert {s["session_type"] for s in only["sessions"]} <= {"roleplay"}
    too_many = api.get(
        "/v1/learners/s4/sessions/history", params={"limit": 101}, headers=bearer(teacher)
    )
    assert too_many.status_code == 422


def test_access_is_refused_with_reasons(api: TestClient) -> None:
    student = PRINCIPALS["student"]
    assert api.get("/v1/learners/me/sessions/history", headers=bearer(student)).status_code == 200
    assert api.get("/v1/learners/s2/sessions/history", headers=bearer(student)).status_code == 403
    teacher = PRINCIPALS["teacher"]
    for outside in ("s3", "s5"):  # another class; another organization's class "c1"
        reply = api.get(f"/v1/learners/{outside}/sessions/stats", headers=bearer(teacher))
        assert reply.status_code == 404, outside
    admin = PRINCIPALS["subscriber_admin"]
    assert api.get("/v1/learners/s3/sessions/warmup", headers=bearer(admin)).status_code == 200
    assert api.get("/v1/learners/s5/sessions/warmup", headers=bearer(admin)).status_code == 404
    root = PRINCIPALS["system_admin"]
    assert api.get("/v1/learners/s5/sessions/warmup", headers=bearer(root)).status_code == 200

    assert api.get("/v1/learners/me/state").status_code == 401
    expired = token(student, exp=datetime.now(UTC) - timedelta(minutes=1))
    reply = api.get("/v1/learners/me/state", headers={"authorization": f"Bearer {expired}"})
    assert (reply.status_code, reply.json()["detail"]) == (401, "reader token has expired")
    forged = jwt.encode(
        {"sub": "s1", "role": "system_admin", "exp": 2**31},
        "a-wrong-guess-at-the-reader-secret-0123",
        "HS256",
    )
    reply = api.get(
        "/v1/query", params={"sql": "SELECT 1"}, headers={"authorization": f"Bearer {forged}"}
    )
    assert reply.status_code == 401
    reply = api.get("/v1/query", params={"sql": "SELECT 1"}, headers=bearer(admin))
    assert reply.status_code == 403
    reply = api.get("/v1/query", params={"sql": "SELECT 1 AS one"}, headers=bearer(root))
    assert reply.json() == {"columns": ["one"], "rows": [[1]]}


def _top(values: list[str], n: int) -> list[tuple[str, int]]:
    return sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@pytest.mark.parametrize("period,days", [("week", 7), ("month", 30)])
def test_stats_for_a_period(
    api: TestClient, events: list[dict[str, Any]], period: str, days: int
) -> None:
    who = PRINCIPALS["subscriber_admin"]
    window = [e for e in _sessions(events, who, "s4") if _in_days(e, days)]
    assert window
    body = api.get(
        "/v1/learners/s4/sessions/stats",
        params={"period": period, "as_of": AS_OF.isoformat()},
        headers=bearer(who),
    ).json()
    props = [e["properties"] for e in window]

    def avg(field: str, sample: list[dict[str, Any]]) -> float | None:
        values = [p[field] for p in sample if p[field] is not None]
        return round(mean(values), 1) if values else None

    assert body["total_sessions"] == len(window)
    assert body["total_duration_seconds"] == sum(p["duration_seconds"] for p in props)
    assert body["total_words_spoken"] == sum(p["words_spoken"] or 0 for p in props)
    for field in ("pronunciation_score", "fluency_score", "grammar_score"):
        assert body[f"avg_{field}"] == pytest.approx(avg(field, props), abs=0.051)
    assert {
        t["session_type"]: (t["sessions"], t["duration_seconds"]) for t in body["sessions_by_type"]
    } == {
        kind: (
            sum(p["session_type"] == kind for p in props),
            sum(p["duration_seconds"] for p in props if p["session_type"] == kind),
        )
        for kind in {p["session_type"] for p in props}
    }
    by_day: dict[str, list[dict[str, Any]]] = {}
    for e in window:
        by_day.setdefault(e["timestamp"][:10], []).append(e["properties"])
    assert [(d["date"], d["sessions"]) for d in body["daily_trend"]] == sorted(
        (day, len(v)) for day, v in by_day.items()
    )
    for d in body["daily_trend"]:
        expected = avg("fluency_score", by_day[d["date"]])
        assert d["avg_fluency_score"] == pytest.approx(expected, abs=0.051)
    assert [(t["topic"], t["count"]) for t in body["common_topics"]] == _top(
        [t for p in props for t in p["topics"]], 5
    )
    assert [(a["area"], a["count"]) for a in body["weak_areas"]] == _top(
        [a for p in props for a in p["areas_to_improve"]], 5
    )


def test_warmup_from_the_last_seven_days(api: TestClient, events: list[dict[str, Any]]) -> None:
    who = PRINCIPALS["student"]
    body = api.get(
        "/v1/learners/me/sessions/warmup", params={"as_of": AS_OF.isoformat()}, headers=bearer(who)
    ).json()
    mine = _sessions(events, who, "s1")
    week = [e for e in mine if _in_days(e, 7)]
    areas = [a for e in week for a in e["properties"]["areas_to_improve"]]
    assert body["focus_areas"] == [a for a, _ in _top(areas, 3)]
    last_seen: dict[str, datetime] = {}
    for e in week:
        for word in e["properties"]["vocabulary_learned"]:
            moment = datetime.fromisoformat(e["timestamp"])
            last_seen[word] = max(moment, last_seen.get(word, moment))
    assert (
        body["vocabulary_to_review"]
        == sorted(last_seen, key=lambda w: (-last_seen[w].timestamp(), w))[:10]
    )
    until = datetime.combine(AS_OF + timedelta(days=1), datetime.min.time(), UTC)
    latest = max(
        (e for e in mine if datetime.fromisoformat(e["timestamp"]) < until),
        key=lambda e: (datetime.fromisoformat(e["timestamp"]), e["event_id"]),
    )
    assert body["last_session"]["session_id"] == latest["event_id"]


def test_state_and_blind_spots_from_projection_tables(api: TestClient, clickhouse: Any) -> None:
    spec = PROJECTION_TABLES["projections.user_progress"]
    spots = PROJECTION_TABLES["projections.blind_spots"]
    s1 = {"user_id": "s1", "xp": 150, "level": 2, "events_applied": 9}
    clickhouse.insert(
        "user_progress",
        [
            # offsets above the other test's rows, so these are the newest
            projection_row(spec, "s1", {**s1, "xp": 100}, ("p", 0, 101)),
            projection_row(spec, "s1", s1, ("p", 0, 102)),
            projection_row(spec, "s5", {"user_id": "s5", "xp": 5}, ("p", 0, 103)),
        ],
        column_names=list(spec.columns),
    )
    weak = {"user_id": "s1", "blind_spots": [{"drill_id": "d1", "avg_score": 40.0, "attempts": 3}]}
    clickhouse.insert(
        "blind_spots",
        [projection_row(spots, "s1", weak, ("b", 0, 1))],
        column_names=list(spots.columns),
    )
    teacher = PRINCIPALS["teacher"]
    state = api.get("/v1/learners/s1/state", headers=bearer(teacher)).json()
    assert state["progress"] == s1
    assert (state["topic_mastery"], state["mode_progress"]) == ([], [])
    assert api.get("/v1/learners/s1/blind-spots", headers=bearer(teacher)).json() == weak
    assert api.get("/v1/learners/s5/state", headers=bearer(teacher)).status_code == 404
    root = PRINCIPALS["system_admin"]
    assert api.get("/v1/learners/s5/state", headers=bearer(root)).json()["progress"]["xp"] == 5


def test_row_policies_command(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["row-policies", "--clickhouse-user", "t1_analyst", "--role", "teacher"]
    assert cli([*args, "--user-id", "t1", "--organization", "org-a", "--class-id", "c1"]) == 0
    printed = capsys.readouterr().out
    teacher = PRINCIPALS["teacher"]
    assert f"USING {event_condition(teacher)} TO `t1_analyst`" in printed
    assert printed.count("CREATE ROW POLICY") == len(table_conditions(teacher, "learnstream"))
    with pytest.raises(SystemExit, match="must belong to an organization"):
        cli([*args, "--user-id", "t1"])


def test_export_gives_the_readers_view_of_a_learner_and_is_audited(
    api: TestClient, clickhouse: Any, events: list[dict[str, Any]]
) -> None:
    teacher = PRINCIPALS["teacher"]
    body = api.get("/v1/learners/s4/export", headers=bearer(teacher)).json()
    expected = {e["event_id"] for e in events if e["user_id"] == "s4" and sees(teacher, e)}
    assert {e["event_id"] for e in body["events"]} == expected
    assert {e["class_id"] for e in body["events"]} == {"c1"}
    student = PRINCIPALS["student"]
    reply = api.get("/v1/learners/me/export", params={"format": "csv"}, headers=bearer(student))
    lines = reply.text.strip().splitlines()
    assert reply.headers["content-type"].startswith("text/csv")
    assert lines[0].startswith("event_id,")
    assert len(lines) - 1 == sum(e["user_id"] == "s1" for e in events)
    audited = clickhouse.query(
        "SELECT subject_user_id, actor_user_id, actor_role FROM audit_log "
        "WHERE action = 'export' ORDER BY actor_user_id"
    ).result_rows
    assert [tuple(r) for r in audited] == [("s1", "s1", "student"), ("s4", "t1", "teacher")]


def test_erasure_is_for_administrators(stored: ClickHouseWriter, sessions: ReadSessions) -> None:
    requested: list[ErasureRequest] = []

    async def capture(request: ErasureRequest) -> None:
        requested.append(request)

    api = TestClient(create_query_app(stored, sessions, SECRET, capture))
    for role in ("student", "teacher", "teacher_admin"):
        who = PRINCIPALS[role]
        reply = api.post("/v1/learners/s1/erase", headers=bearer(who))
        assert reply.status_code == 403, role
    admin = PRINCIPALS["subscriber_admin"]
    assert api.post("/v1/learners/s5/erase", headers=bearer(admin)).status_code == 404
    reply = api.post("/v1/learners/s1/erase", headers=bearer(admin))
    assert reply.status_code == 202
    assert [(r.user_id, r.requested_by, r.requester_role) for r in requested] == [
        ("s1", "sa", "subscriber_admin")
    ]
    assert reply.json()["request_id"] == requested[0].request_id
