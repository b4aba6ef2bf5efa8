"""The committed OpenAPI document is the one the collector serves."""

from __future__ import annotations

import json

from collector.__main__ import openapi_document
from tests.conftest import REPO


def test_committed_openapi_matches_the_served_one() -> None:
    committed = (REPO / "collector" / "openapi.json").read_text()
    assert committed == openapi_document(), "run `make openapi` and commit collector/openapi.json"


def test_the_document_describes_both_endpoints_and_their_errors() -> None:
    paths = json.loads(openapi_document())["paths"]
    for path in ("/v1/events", "/v1/events/batch"):
        post = paths[path]["post"]
        assert {"202", "401", "413", "415", "503"} <= set(post["responses"])
        assert "application/json" in post["requestBody"]["content"]
    event = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "question_submit" in event["properties"]["event_type"]["enum"]
    assert "received_at" not in event["properties"]  # the server's, not the client's
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
