"""The collector in-process with its real Kafka publisher against the real broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.publisher import KafkaPublisher
from devstack import kafka
from devstack.services import free_port
from learnstream.settings import Settings
from learnstream.topics import EVENTS_INVALID, EVENTS_RAW, ensure_topics
from schemas.catalog import default_catalog
from schemas.codec import decode
from schemas.examples import example_event
from schemas.registry import FileSchemaRegistry
from tests.conftest import REPO
from tests.kafka_read import read_all

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def client_for(settings: Settings, bootstrap: str | None = None) -> TestClient:
    publisher = KafkaPublisher(bootstrap or settings.kafka_bootstrap, settings.publish_timeout_s)
    return TestClient(create_app(settings, CATALOG, REGISTRY, publisher, clock=lambda: NOW))


def _post_until_accepted(client: TestClient, event: dict[str, Any], timeout_s: float) -> Any:
    """The client's side of an outage: retry on 503, as Retry-After asks."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.post("/v1/events", json=event)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def lesson(**overrides: Any) -> dict[str, Any]:
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": "2026-11-23T11:00:00Z",
        "user_id": "ada",
        "privacy_level": "sensitive",
        "properties": {"content_id": "lesson-7"},
    }
    event.update(overrides)
    return event


def test_accepted_event_is_in_kafka_enriched_and_keyed_by_user(settings: Settings) -> None:
    event = lesson()
    with client_for(settings) as client:
        response = client.post("/v1/events", json=event)
    assert response.status_code == 202
    (message,) = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW))
    assert message.key == b"ada"
    datum = decode(REGISTRY, message.value)
    assert str(datum["event_id"]) == event["event_id"]
    assert datum["received_at"] == NOW
    assert datum["retention_days"] == 1095  # sensitive: 3 years


def test_rejections_are_explained_and_dead_lettered(settings: Settings) -> None:
    bad = lesson(properties={"content_id": ""})
    with client_for(settings) as client:
        invalid = client.post("/v1/events", json=bad)
        not_json = client.post(
            "/v1/events", content=b"{oops", headers={"content-type": "application/json"}
        )
    assert invalid.status_code == 422
    assert invalid.json() == {
        "errors": [{"field": "properties.content_id", "message": "is shorter than 1 characters"}]
    }
    assert not_json.status_code == 400
    assert not_json.json()["errors"][0]["field"] == "(body)"

    dead = [
        json.loads(m.value)
        for m in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    ]
    # unkeyed dead letters spread over partitions: match them by content, not order
    by_raw = {d["raw"]: d for d in dead}
    assert len(dead) == 2 and "{oops" in by_raw
    (invalid_letter,) = [d for raw, d in by_raw.items() if raw != "{oops"]
    assert json.loads(invalid_letter["raw"]) == bad
    assert invalid_letter["errors"] == invalid.json()["errors"]
    assert all(d["received_at"] == NOW.isoformat() for d in dead)
    assert read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW)) == []


def test_broker_outage_gives_quick_503_then_recovers(settings: Settings, tmp_path: Path) -> None:
    """A broker of its own, stopped mid-test: 503 quickly, never a hang; 202 once it is back."""
    port, controller_port = free_port(), free_port()
    paths = kafka.KafkaPaths(home=REPO / ".devstack", data=tmp_path / "own-kafka")
    kafka.start(paths, port, controller_port)
    own = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "publish_timeout_s": 2.0}
    )
    try:
        asyncio.run(ensure_topics(own))
        publisher = KafkaPublisher(own.kafka_bootstrap, own.publish_timeout_s)
        app = create_app(own, CATALOG, REGISTRY, publisher, clock=lambda: NOW)
        with TestClient(app) as client:
            # a fresh broker elects the new topics' leaders first: wait for that, untimed
            assert _post_until_accepted(client, lesson(), timeout_s=60).status_code == 202
            kafka.stop(paths)
            started = time.monotonic()
            outage = client.post("/v1/events", json=lesson())
            elapsed = time.monotonic() - started
            assert client.get("/readyz").status_code == 503
            kafka.start(paths, port, controller_port)  # same ports: KRaft recorded them
            recovered = _post_until_accepted(client, lesson(), timeout_s=60)
    finally:
        kafka.stop(paths)
    assert outage.status_code == 503
    assert outage.headers["Retry-After"] == "5"
    assert elapsed < own.publish_timeout_s + 1.5
    assert recovered.status_code == 202


def test_one_example_of_every_event_type_lands_in_kafka(settings: Settings) -> None:
    sent = {}
    with client_for(settings) as client:
        for name, event_type in sorted(CATALOG.items()):
            event = example_event(event_type, timestamp=NOW)
            event["event_id"] = str(uuid.uuid4())
            response = client.post("/v1/events", json=event)
            assert response.status_code == 202, (name, response.text)
            sent[event["event_id"]] = name
    stored = {}
    for message in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW)):
        datum = decode(REGISTRY, message.value)
        stored[str(datum["event_id"])] = datum["event_type"]
    assert stored == sent
    assert len(set(stored.values())) == len(CATALOG)


def test_batch_accepts_what_is_valid_and_explains_each_rejection(settings: Settings) -> None:
    good = [lesson(), lesson(user_id="bob")]
    bad = lesson(properties={"content_id": "x", "extra": 1})
    body = {"sent_at": "2026-11-23T11:59:58Z", "events": [good[0], bad, good[1], "nope"]}
    with client_for(settings) as client:
        response = client.post("/v1/events/batch", json=body)
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 2,
        "rejected": [
            {
                "index": 1,
                "event_id": bad["event_id"],
                "errors": [{"field": "properties.extra", "message": "unknown field"}],
            },
            {
                "index": 3,
                "event_id": None,
                "errors": [{"field": "(event)", "message": "must be an object, got string"}],
            },
        ],
    }
    raw = [
        decode(REGISTRY, m.value)
        for m in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW))
    ]
    assert sorted(str(d["event_id"]) for d in raw) == sorted(e["event_id"] for e in good)
    assert {d["sent_at"] for d in raw} == {datetime(2026, 11, 23, 11, 59, 58, tzinfo=UTC)}
    dead = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    assert sorted(json.loads(m.value)["raw"] for m in dead) == sorted(
        [json.dumps(bad), json.dumps("nope")]
    )


def test_a_rejected_id_that_is_not_a_string_is_not_echoed(settings: Settings) -> None:
    """Found by the fuzz test: echoing [[Infinity]] back made the answer invalid JSON (500)."""
    weird = {**lesson(), "event_id": [[float("inf")]]}
    with client_for(settings) as client:
        response = client.post(
            "/v1/events/batch",
            content=json.dumps({"events": [weird]}),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 202
    assert response.json()["rejected"] == [
        {
            "index": 0,
            "event_id": None,
            "errors": [{"field": "event_id", "message": "must be a UUID string, got array"}],
        }
    ]
    dead = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    assert [json.loads(json.loads(m.value)["raw"])["event_id"] for m in dead] == [[[float("inf")]]]


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        ({"events": [lesson()] * 501}, {}, 413, "events"),
        ({"events": "x"}, {}, 422, "events"),
        ({"events": [], "extra": 1}, {}, 422, "extra"),
        ({"events": [], "sent_at": "yesterday"}, {}, 422, "sent_at"),
        ([], {}, 422, "(body)"),
        ("events=1", {"content-type": "application/x-www-form-urlencoded"}, 415, "(body)"),
    ],
)
def test_batch_shape_errors(
    settings: Settings, body: Any, headers: dict[str, str], status: int, field: str
) -> None:
    with client_for(settings) as client:
        if isinstance(body, str):
            response = client.post("/v1/events/batch", content=body, headers=headers)
        else:
            response = client.post("/v1/events/batch", json=body)
    assert response.status_code == status
    assert response.json()["errors"][0]["field"] == field
