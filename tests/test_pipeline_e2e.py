"""The walking skeleton, end to end on the real broker and real chdb.

The three services run as separate processes, launched exactly as ``make run``
launches them; the test talks to them only over HTTP and Kafka.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devstack.services import ServiceGroup, http_ok
from learnstream.cli import main as cli
from learnstream.groups import pipeline_lag
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_DERIVED,
    EVENTS_INVALID,
    PROJECTIONS_BLIND_SPOTS,
    PROJECTIONS_MODE_PROGRESS,
    PROJECTIONS_TOPIC_MASTERY,
    PROJECTIONS_USER_PROGRESS,
    PROJECTIONS_XP,
)
from processors import outputs
from projections.blind_spots import blind_spots
from projections.events import Event
from projections.fold import fold_log
from projections.sampling import keeps, sample_rate
from schemas.catalog import default_catalog
from schemas.codec import decode
from schemas.registry import FileSchemaRegistry
from tests.kafka_read import latest_by_key, read_all

ACCEPTED = "source_topic LIKE '%events.clean'"  # derived events share the table
PER_EVENT_COUNTS = (
    f"SELECT toString(event_id) AS id, count() FROM events WHERE {ACCEPTED} GROUP BY id ORDER BY id"
)
STARTUP_TIMEOUT_S = 90
ARRIVAL_TIMEOUT_S = 90


def _wait_until(check: Any, timeout_s: float, what: str, group: ServiceGroup) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if exited := group.supervise():
            raise AssertionError(f"service died while waiting for {what}: {exited}")
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_drained(settings: Settings, group: ServiceGroup) -> None:
    """Every record on the pipeline's topics is processed and stored: shown by the
    consumer groups' commits reaching the end offsets, not by sleeping."""

    def drained() -> bool:
        return asyncio.run(pipeline_lag(settings)) == {"processors": 0, "sink": 0}

    _wait_until(drained, ARRIVAL_TIMEOUT_S, "the pipeline to drain", group)


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[ServiceGroup]:
    group = ServiceGroup(env=settings.as_env())
    group.start_all()
    try:
        _wait_until(
            lambda: http_ok(f"{settings.collector_url}/readyz"),
            STARTUP_TIMEOUT_S,
            "collector",
            group,
        )
        _wait_until(
            lambda: http_ok(f"{settings.query_url}/healthz"), STARTUP_TIMEOUT_S, "sink", group
        )
        yield group
    finally:
        group.stop_all()


def _event(
    event_type: str, user_id: str, properties: dict[str, Any], minutes_ago: int
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "user_id": user_id,
        "device_info": {"timezone": "Europe/Berlin"},
        "properties": properties,
    }


def _query(settings: Settings, sql: str) -> list[list[Any]]:
    response = httpx.post(f"{settings.query_url}/v1/query", content=sql, timeout=30)
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()["rows"]
    return rows


def test_events_flow_from_http_to_clickhouse_and_xp_projection(
    settings: Settings, pipeline: ServiceGroup
) -> None:
    lesson = _event("lesson_completed", "ada", {"content_id": "lesson-1"}, 30)
    quiz = _event("quiz_completed", "ada", {"content_id": "quiz-1", "score": 84.5}, 20)
    other = _event("quiz_completed", "bob", {"content_id": "quiz-1", "score": 61.0}, 10)
    invalid = _event("quiz_completed", "bob", {"content_id": "quiz-2", "score": 150}, 5)

    with httpx.Client(base_url=settings.collector_url, timeout=10) as client:
        for event in (lesson, quiz, other):
            response = client.post("/v1/events", json=event)
            assert response.status_code == 202, response.text
            assert response.json()["event_id"] == event["event_id"]
        # the app retried the lesson: same event_id, sent again
        assert client.post("/v1/events", json=lesson).status_code == 202
        rejected = client.post("/v1/events", json=invalid)

    assert rejected.status_code == 422
    assert rejected.json()["errors"] == [
        {"field": "properties.score", "message": "must be <= 100, got 150.0"}
    ]

    accepted_ids = sorted(e["event_id"] for e in (lesson, quiz, other))
    _wait_until(
        lambda: len(_query(settings, PER_EVENT_COUNTS)) >= 3,
        ARRIVAL_TIMEOUT_S,
        "events in ClickHouse",
        pipeline,
    )
    _wait_drained(settings, pipeline)  # a wrongly repeated insert would be stored by now
    rows = _query(settings, PER_EVENT_COUNTS)
    assert rows == [[event_id, 1] for event_id in accepted_ids]
    assert _query(settings, f"SELECT count() FROM events WHERE {ACCEPTED}") == [[3]]
    derived = _wait_until(
        lambda: _query(
            settings,
            "SELECT event_type, user_id, JSONExtractInt(properties, "
            "'xp_amount') FROM events WHERE source_topic LIKE "
            "'%events.derived' AND event_type = 'xp_earned' ORDER BY 3",
        ),
        ARRIVAL_TIMEOUT_S,
        "derived events in ClickHouse",
        pipeline,
    )
    assert sorted(row[2] for row in derived) == [50, 61, 85]

    def latest_xp() -> dict[str, int]:
        return {user: v["xp"] for user, v in _latest_by_key(settings, PROJECTIONS_XP).items()}

    xp = _wait_until(
        lambda: (v := latest_xp()) and len(v) == 2 and v,
        ARRIVAL_TIMEOUT_S,
        "projections.xp",
        pipeline,
    )
    assert xp == {"ada": 50 + 85, "bob": 61}  # 84.5 rounds half up to 85

    dead = [
        json.loads(m.value)
        for m in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    ]
    assert len(dead) == 1
    assert json.loads(dead[0]["raw"])["event_id"] == invalid["event_id"]
    assert dead[0]["errors"] == [
        {"field": "properties.score", "message": "must be <= 100, got 150.0"}
    ]


def _generated_log(rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    """Several learners, every folded event type, out-of-order times, zones and duplicates."""
    events: list[dict[str, Any]] = []
    for i in range(160):
        user = f"learner-{i % 4}"
        kind = rng.choice(
            [
                "lesson_completed",
                "quiz_completed",
                "quiz_complete",
                "question_submit",
                "question_submit",
                "material_complete",
                "session_completed",
                "page_view",
            ]
        )
        by_kind: dict[str, dict[str, Any]] = {
            "lesson_completed": {"content_id": "l"},
            "quiz_completed": {"content_id": "q", "score": round(rng.uniform(0, 100), 1)},
            "quiz_complete": {
                "quiz_id": "q",
                "total_questions": 8,
                "correct_answers": rng.randint(0, 8),
            },
            "question_submit": {
                "question_id": "x",
                "topic_id": rng.choice(["alg", "geo"]),
                "is_correct": rng.random() < 0.7,
            },
            "material_complete": {"material_id": "m"},
            "session_completed": {
                "practice_mode_id": rng.choice(["m1", "m2"]),
                "drills_completed": rng.randint(0, 4),
                "total_duration": 60,
                "scores": [
                    {
                        "drill_id": rng.choice(["d1", "d2", "d3", "d4"]),
                        "drill_name": "Drill",
                        "score": rng.randint(0, 100),
                    }
                ],
            },
            "page_view": {},
        }
        props = by_kind[kind]
        moment = now - timedelta(hours=rng.randint(0, 24 * 20))
        events.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "event_type": kind,
                "timestamp": moment.isoformat(),
                "user_id": user,
                "device_info": {"timezone": rng.choice(["UTC", "America/New_York", "Asia/Tokyo"])},
                "properties": props,
            }
        )
    events += [dict(e) for e in rng.sample(events, 25)]  # apps retrying
    return events


def _latest_by_key(settings: Settings, topic: str) -> dict[str, dict[str, Any]]:
    return latest_by_key(settings.kafka_bootstrap, settings.topic(topic))


def test_live_projections_equal_the_fold_of_the_same_log(
    settings: Settings, pipeline: ServiceGroup
) -> None:
    log = _generated_log(random.Random(7), datetime.now(UTC))
    with httpx.Client(base_url=settings.collector_url, timeout=10) as client:
        for event in log:
            assert client.post("/v1/events", json=event).status_code == 202

    # page_view is sampled at 1 % (seed 004): fold what the sampler keeps, as live does
    catalog = default_catalog()
    kept = [
        e
        for e in log
        if keeps(e["event_id"], sample_rate(catalog[e["event_type"]], "development", {}))
    ]
    assert len(kept) < len(log)
    folded = fold_log(Event.from_envelope(e) for e in kept).learners
    expected_progress = {u: outputs.user_progress(u, s.summary) for u, s in folded.items()}

    def progress_caught_up() -> dict[str, dict[str, Any]] | None:
        latest = _latest_by_key(settings, PROJECTIONS_USER_PROGRESS)
        done = all(
            latest.get(u, {}).get("events_applied") == s.summary.events_applied
            for u, s in folded.items()
        )
        return latest if done else None

    progress = _wait_until(progress_caught_up, ARRIVAL_TIMEOUT_S, "user progress", pipeline)
    assert progress == expected_progress

    mastery = _latest_by_key(settings, PROJECTIONS_TOPIC_MASTERY)
    assert {k: (v["p_mastery"], v["mastered"]) for k, v in mastery.items()} == {
        f"{u}:{t}": (p, t in s.mastered) for u, s in folded.items() for t, p in s.mastery.items()
    }
    modes = _latest_by_key(settings, PROJECTIONS_MODE_PROGRESS)
    assert {
        k: {f: v[f] for f in v if f not in ("user_id", "practice_mode_id", "events_applied")}
        for k, v in modes.items()
    } == {
        f"{u}:{m}": {
            "current_level": p.current_level,
            "total_sessions": p.total_sessions,
            "total_drills_completed": p.total_drills_completed,
            "sessions_at_current_level": p.sessions_at_current_level,
        }
        for u, s in folded.items()
        for m, p in s.summary.modes.items()
    }
    for user, published in _latest_by_key(settings, PROJECTIONS_BLIND_SPOTS).items():
        assert published["blind_spots"] == [
            {**spot, "drill_name": spot["drill_name"]}
            for spot in blind_spots(folded[user].drills, published["as_of"])
        ]

    derived = [
        decode(FileSchemaRegistry.from_files(), m.value)
        for m in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_DERIVED))
    ]
    xp_awards: dict[str, int] = {}
    for d in derived:
        if d["event_type"] == "xp_earned":
            xp_awards[d["user_id"]] = xp_awards.get(d["user_id"], 0) + d["properties"]["xp_amount"]
    assert xp_awards == {u: s.xp for u, s in folded.items() if s.xp}
    assert len({str(d["event_id"]) for d in derived}) == len(derived)

    # the sink keeps the same projections as tables: the latest snapshot per key
    want_progress = sorted(
        [u, p["xp"], p["level"], p["current_streak"], p["events_applied"]]
        for u, p in expected_progress.items()
    )

    def progress_table_caught_up() -> list[list[Any]] | None:
        rows = _query(
            settings,
            "SELECT user_id, xp, level, current_streak, events_applied "
            "FROM user_progress_current ORDER BY user_id",
        )
        return rows if rows == want_progress else None

    _wait_until(progress_table_caught_up, ARRIVAL_TIMEOUT_S, "user_progress table", pipeline)
    mastery_rows = _query(settings, "SELECT key, p_mastery, mastered FROM topic_mastery_current")
    assert {k: (p, bool(m)) for k, p, m in mastery_rows} == {
        k: (v["p_mastery"], v["mastered"]) for k, v in mastery.items()
    }
    mode_rows = _query(
        settings, "SELECT key, current_level, total_sessions FROM mode_progress_current"
    )
    assert {k: (lvl, n) for k, lvl, n in mode_rows} == {
        k: (v["current_level"], v["total_sessions"]) for k, v in modes.items()
    }


def test_an_erased_learner_is_gone_everywhere_and_stays_gone(
    settings: Settings,
    pipeline: ServiceGroup,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the real processors and sink: state, projection topics and tables,
    ClickHouse rows, with an audit row; a late copy of an old event stays out."""
    answer = _event(
        "question_submit",
        "ada",
        {"question_id": "q1", "topic_id": "fractions", "is_correct": True},
        30,
    )
    lesson = _event("lesson_completed", "ada", {"content_id": "lesson-1"}, 20)
    other = _event("lesson_completed", "bob", {"content_id": "lesson-1"}, 10)
    with httpx.Client(base_url=settings.collector_url, timeout=10) as client:
        for event in (answer, lesson, other):
            assert client.post("/v1/events", json=event).status_code == 202

    def both_in_tables() -> bool:
        rows = _query(settings, "SELECT user_id FROM user_progress_current ORDER BY user_id")
        return rows == [["ada"], ["bob"]]

    _wait_until(both_in_tables, ARRIVAL_TIMEOUT_S, "user_progress for both", pipeline)
    assert "ada:fractions" in _latest_by_key(settings, PROJECTIONS_TOPIC_MASTERY)

    # as an operator would: the learnstream CLI, through the sink's read API
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert cli(["export-user", "ada"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert {e["event_id"] for e in exported["events"]} >= {answer["event_id"], lesson["event_id"]}
    assert cli(["erase-user", "ada"]) == 0
    request_id = json.loads(capsys.readouterr().out)["request_id"]

    def ada_gone() -> bool:
        audited = _query(
            settings,
            "SELECT count() FROM audit_log WHERE action = 'erase' AND subject_user_id = 'ada'",
        )
        return audited == [[1]] and "ada" not in _latest_by_key(settings, PROJECTIONS_USER_PROGRESS)

    _wait_until(ada_gone, ARRIVAL_TIMEOUT_S, "ada erased", pipeline)
    assert _query(settings, "SELECT count() FROM events WHERE user_id = 'ada'") == [[0]]
    assert _query(settings, "SELECT user_id FROM user_progress_current") == [["bob"]]
    assert _query(settings, "SELECT count() FROM daily_user_stats WHERE user_id = 'ada'") == [[0]]
    assert not any(k.startswith("ada") for k in _latest_by_key(settings, PROJECTIONS_TOPIC_MASTERY))
    assert "ada" not in _latest_by_key(settings, PROJECTIONS_XP)
    assert _query(settings, "SELECT toString(audit_id) FROM audit_log WHERE action = 'erase'") == [
        [request_id]
    ]

    # the app's outbox retries the old lesson (a new copy), then ada starts again
    fresh = _event("lesson_completed", "ada", {"content_id": "lesson-2"}, 0)
    with httpx.Client(base_url=settings.collector_url, timeout=10) as client:
        late = {**lesson, "event_id": str(uuid.uuid4())}
        assert client.post("/v1/events", json=late).status_code == 202
        assert client.post("/v1/events", json=fresh).status_code == 202

    def ada_again() -> dict[str, Any] | None:
        return _latest_by_key(settings, PROJECTIONS_USER_PROGRESS).get("ada")

    progress = _wait_until(ada_again, ARRIVAL_TIMEOUT_S, "ada's fresh progress", pipeline)
    assert progress["events_applied"] == 1  # only the fresh lesson: nothing came back
    _wait_drained(settings, pipeline)  # the late copy was decided and anything it made stored
    ids = _query(
        settings,
        "SELECT toString(event_id) FROM events "
        "WHERE user_id = 'ada' AND source_topic LIKE '%events.clean'",
    )
    assert ids == [[fresh["event_id"]]]
