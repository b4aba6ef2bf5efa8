"""Write keys, end-user tokens, sender enrichment and metrics, through the collector
in-process with its real Kafka publisher against the real broker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.auth import key_id
from collector.publisher import KafkaPublisher
from learnstream.settings import Settings
from learnstream.topics import EVENTS_INVALID, EVENTS_RAW
from schemas.codec import decode
from tests.kafka_read import read_all
from tests.test_collector import CATALOG, NOW, REGISTRY, lesson
from tests.test_enrichment import WINDOWS_CHROME

ACME_KEY, GLOBEX_KEY = "wk_acme_secret", "wk_globex_secret"
GLOBEX_SECRET = "globex-user-token-secret-0123456789abcdef"


def secured(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "write_keys": {ACME_KEY: "acme", GLOBEX_KEY: "globex"},
            "user_token_secrets": {"globex": GLOBEX_SECRET},
        }
    )


def client(settings: Settings) -> TestClient:
    publisher = KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s)
    return TestClient(create_app(settings, CATALOG, REGISTRY, publisher, clock=lambda: NOW))


def token(sub: str, secret: str = GLOBEX_SECRET, exp_offset_s: int = 3600) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + exp_offset_s}, secret, "HS256")


def bearer(key: str, user_token: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if user_token:
        headers["X-User-Token"] = user_token
    return headers


def raw_events(settings: Settings) -> list[dict[str, Any]]:
    return [
        decode(REGISTRY, r.value)
        for r in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW))
    ]


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    records = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    return [json.loads(r.value) for r in records]


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "missing Authorization"),
        ({"Authorization": "Basic abc"}, 401, "Bearer"),
        ({"Authorization": "Bearer wk_nobody"}, 401, "unknown write key"),
        (bearer(GLOBEX_KEY), 401, "requires an end-user token"),
        (bearer(GLOBEX_KEY, token("ada", secret="x" * 40)), 401, "not valid"),
        (bearer(GLOBEX_KEY, token("ada", exp_offset_s=-60)), 401, "expired"),
    ],
)
def test_requests_without_valid_credentials_are_refused_and_kept(
    settings: Settings, headers: dict[str, str], status: int, message: str
) -> None:
    own = secured(settings)
    with client(own) as c:
        response = c.post("/v1/events", json=lesson(), headers=headers)
    assert response.status_code == status
    assert message in response.json()["errors"][0]["message"]
    assert raw_events(own) == []
    [letter] = dead_letters(own)
    assert message in letter["errors"][0]["message"]


def test_a_write_key_decides_the_organization(settings: Settings) -> None:
    own = secured(settings)
    with client(own) as c:
        unnamed = c.post("/v1/events", json=lesson(), headers=bearer(ACME_KEY))
        same = c.post("/v1/events", json=lesson(organization_id="acme"), headers=bearer(ACME_KEY))
        other = c.post(
            "/v1/events", json=lesson(organization_id="globex"), headers=bearer(ACME_KEY)
        )
        batch = c.post(
            "/v1/events/batch",
            json={"events": [lesson(), lesson(organization_id="globex")]},
            headers=bearer(ACME_KEY),
        )
    assert (unnamed.status_code, same.status_code, other.status_code) == (202, 202, 403)
    assert other.json()["errors"] == [
        {
            "field": "organization_id",
            "message": "belongs to another organization than the write key",
        }
    ]
    assert batch.json()["accepted"] == 1
    assert [r["index"] for r in batch.json()["rejected"]] == [1]
    assert {e["organization_id"] for e in raw_events(own)} == {"acme"}
    assert len(raw_events(own)) == 3
    letters = dead_letters(own)
    assert len(letters) == 2
    assert {letter["key_id"] for letter in letters} == {key_id(ACME_KEY)}
    assert all(ACME_KEY not in json.dumps(letter) for letter in letters)  # the secret is not kept


def test_an_end_user_token_decides_the_learner(settings: Settings) -> None:
    own = secured(settings)
    ada = bearer(GLOBEX_KEY, token("ada"))
    with client(own) as c:
        anonymous_payload = lesson()
        del anonymous_payload["user_id"]
        filled = c.post("/v1/events", json=anonymous_payload, headers=ada)
        matching = c.post("/v1/events", json=lesson(user_id="ada"), headers=ada)
        impersonating = c.post("/v1/events", json=lesson(user_id="grace"), headers=ada)
    assert (filled.status_code, matching.status_code, impersonating.status_code) == (202, 202, 403)
    assert impersonating.json()["errors"][0]["field"] == "user_id"
    assert [(e["user_id"], e["organization_id"]) for e in raw_events(own)] == [
        ("ada", "globex")
    ] * 2


def test_the_sender_is_recorded_without_its_full_address(settings: Settings) -> None:
    own = settings.model_copy(update={"forwarded_for_header": "X-Forwarded-For"})
    with client(own) as c:
        headers = {
            "X-Forwarded-For": "198.51.100.23, 10.0.0.1",
            "User-Agent": WINDOWS_CHROME,
        }
        response = c.post(
            "/v1/events/batch",
            json={
                "sent_at": "2026-11-23T13:00:00Z",
                "events": [lesson(timestamp="2026-11-23T12:30:00Z")],
            },
            headers=headers,
        )
    assert response.json() == {"accepted": 1, "rejected": []}
    [event] = raw_events(own)
    assert event["client_ip"] == "198.51.100.0"
    assert event["device_info"]["browser"] == "Chrome"
    assert event["device_info"]["platform"] == "Windows"
    # the device clock is an hour fast (sent 13:00 by its clock, received 12:00)
    assert event["timestamp"] == datetime(2026, 11, 23, 11, 30, tzinfo=UTC)
    assert event["original_timestamp"] == datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


def _metric(text: str, name: str) -> float:
    """One sample's value from the Prometheus text format (0 when it is absent)."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


def test_metrics_count_what_happened(settings: Settings) -> None:
    with client(settings) as c:
        c.post("/v1/events", json=lesson())
        c.post("/v1/events/batch", json={"events": [lesson(), lesson(), {"event_type": "nope"}]})
        c.post("/v1/events", content=b"{", headers={"Content-Type": "application/json"})
        c.post("/v1/events", content=b"x", headers={"Content-Type": "text/plain"})
        text = c.get("/metrics").text
    assert _metric(text, "learnstream_events_accepted_total") == 3
    assert _metric(text, 'learnstream_events_rejected_total{reason="invalid_event"}') == 1
    assert _metric(text, 'learnstream_events_rejected_total{reason="malformed_json"}') == 1
    assert _metric(text, 'learnstream_events_rejected_total{reason="unsupported_media_type"}') == 1
    assert _metric(text, "learnstream_publish_seconds_count") == 2
    assert _metric(text, "learnstream_batch_events_count") == 1
    assert _metric(text, "learnstream_batch_events_sum") == 3


def test_production_refuses_to_run_without_write_keys(settings: Settings) -> None:
    production = settings.model_copy(update={"environment": "production"})
    publisher = KafkaPublisher(settings.kafka_bootstrap, 1.0)
    with pytest.raises(ValueError, match="WRITE_KEYS"):
        create_app(production, CATALOG, REGISTRY, publisher)
