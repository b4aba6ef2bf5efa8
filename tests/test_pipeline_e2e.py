"""The walking skeleton, end to end on the real broker and real chdb.

The three services run as separate processes, launched exactly as ``make run``
launches them; the test talks to them only over HTTP and Kafka.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devstack.services import ServiceGroup
from learnstream.settings import Settings
from learnstream.topics import EVENTS_INVALID, PROJECTIONS_XP
from schemas.codec import decode
from schemas.registry import FileSchemaRegistry
from tests.conftest import settings_env
from tests.kafka_read import read_all

PER_EVENT_COUNTS = "SELECT toString(event_id) AS id, count() FROM events GROUP BY id ORDER BY id"
STARTUP_TIMEOUT_S = 90
ARRIVAL_TIMEOUT_S = 90


def _wait_until(check: Any, timeout_s: float, what: str, group: ServiceGroup) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if exited := group.exited():
            raise AssertionError(f"service died while waiting for {what}: {exited}")
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[ServiceGroup]:
    group = ServiceGroup(env=settings_env(settings))
    group.start_all()
    try:
        _wait_until(
            lambda: _http_ok(f"{settings.collector_url}/readyz"),
            STARTUP_TIMEOUT_S,
            "collector",
            group,
        )
        _wait_until(
            lambda: _http_ok(f"{settings.query_url}/healthz"), STARTUP_TIMEOUT_S, "sink", group
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
    time.sleep(1.0)  # give a wrongly repeated insert the chance to show up
    rows = _query(settings, PER_EVENT_COUNTS)
    assert rows == [[event_id, 1] for event_id in accepted_ids]
    assert _query(settings, "SELECT count() FROM events") == [[3]]

    registry = FileSchemaRegistry.from_files()

    def latest_xp() -> dict[str, int]:
        latest = {}
        for message in read_all(settings.kafka_bootstrap, settings.topic(PROJECTIONS_XP)):
            value = decode(registry, message.value)
            latest[message.key.decode()] = value["xp"]
        return latest

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
