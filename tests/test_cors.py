"""CORS on the collector: what a browser on another origin asks, and what it is told.

The browser SDK's sends are preflighted (JSON with Authorization and X-User-Token), so
the preflight answer decides whether a page can deliver events at all; the real
Chromium run of the SDK is tests/test_browser_sdk.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.middleware.cors import CORSMiddleware

from collector.app import create_app
from collector.cors import install_cors
from collector.publisher import KafkaPublisher
from learnstream.settings import Settings
from tests.test_collector import CATALOG, REGISTRY

APP_ORIGIN = "https://app.example.com"
SDK_HEADERS = "authorization,content-type,x-user-token"


def cors_app(settings: Settings) -> FastAPI:
    """The collector as ``python -m collector`` builds it, with CORS installed once:
    by create_app when it is wired there, else here."""
    publisher = KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s)
    app = create_app(settings, CATALOG, REGISTRY, publisher)
    if not any(m.cls is cast(Any, CORSMiddleware) for m in app.user_middleware):
        install_cors(app, settings)
    return app


def preflight(
    client: TestClient, origin: str, headers: str = SDK_HEADERS, path: str = "/v1/events/batch"
) -> dict[str, str]:
    response = client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )
    return {"status": str(response.status_code), **response.headers}


def unstarted(origins: list[str]) -> TestClient:
    """A client whose app never starts its publisher: preflights need no broker."""
    settings = Settings(cors_allowed_origins=origins, kafka_bootstrap="unused:9092")
    return TestClient(cors_app(settings))


def test_a_listed_origin_may_send_the_sdks_headers() -> None:
    answer = preflight(unstarted([APP_ORIGIN, "http://localhost:3000"]), APP_ORIGIN)
    assert answer["status"] == "200"
    assert answer["access-control-allow-origin"] == APP_ORIGIN
    assert answer["access-control-allow-credentials"] == "true"
    assert "POST" in answer["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in answer["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-user-token"} <= allowed
    assert answer["access-control-max-age"] == "600"
    assert "origin" in answer["vary"].lower()


def test_an_unlisted_origin_or_header_is_refused() -> None:
    client = unstarted([APP_ORIGIN])
    other = preflight(client, "https://evil.example.com")
    assert other["status"] == "400"
    assert "access-control-allow-origin" not in other
    # the same host on another scheme or port is another origin
    assert preflight(client, "http://app.example.com")["status"] == "400"
    assert preflight(client, APP_ORIGIN + ":8443")["status"] == "400"
    assert preflight(client, APP_ORIGIN, headers="authorization,x-admin")["status"] == "400"


def test_any_origin_is_allowed_only_without_credentials() -> None:
    answer = preflight(unstarted(["*"]), "https://anyone.example.org")
    assert answer["status"] == "200"
    assert answer["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer
    # "*" beside listed origins still means any origin, still without credentials
    mixed = preflight(unstarted([APP_ORIGIN, "*"]), APP_ORIGIN)
    assert mixed["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in mixed


def test_without_origins_the_collector_stays_same_origin() -> None:
    answer = preflight(unstarted([]), APP_ORIGIN)
    assert answer["status"] == "405"  # no CORS layer: OPTIONS is not a route
    assert "access-control-allow-origin" not in answer


@pytest.mark.parametrize(
    "origin", ["https://app.example.com/", "app.example.com", "https://app.example.com/x", ""]
)
def test_an_origin_that_could_never_match_is_refused_at_start(origin: str) -> None:
    with pytest.raises(ValidationError, match="cors_allowed_origins"):
        Settings(cors_allowed_origins=[origin])


def test_origins_reach_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The services read their settings from the environment (Settings.as_env)."""
    origins = [APP_ORIGIN, "http://localhost:5173"]
    name = "LEARNSTREAM_CORS_ALLOWED_ORIGINS"
    monkeypatch.setenv(name, Settings(cors_allowed_origins=origins).as_env()[name])
    assert Settings().cors_allowed_origins == origins


def test_a_cross_origin_batch_is_stored_and_its_answer_readable(settings: Settings) -> None:
    """The request after the preflight: stored (202), and the answer carries what the
    page's script needs to read it, Retry-After included."""
    own = settings.model_copy(update={"cors_allowed_origins": [APP_ORIGIN]})
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": datetime.now(UTC).isoformat(),
        "user_id": "ada",
        "properties": {"content_id": "lesson-1"},
    }
    with TestClient(cors_app(own)) as client:
        response = client.post(
            "/v1/events/batch", json={"events": [event]}, headers={"Origin": APP_ORIGIN}
        )
        foreign = client.post(
            "/v1/events/batch", json={"events": []}, headers={"Origin": "https://evil.example"}
        )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "rejected": []}
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert response.headers["access-control-expose-headers"] == "Retry-After"
    # not an authentication layer: the server answers, the browser hides it from the page
    assert foreign.status_code == 202
    assert "access-control-allow-origin" not in foreign.headers
