"""Fuzzing both endpoints against the real broker: never a 5xx, every rejection
explained, and every rejection kept in events.invalid."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from learnstream.settings import Settings
from learnstream.topics import EVENTS_INVALID
from schemas.catalog import default_catalog
from tests.kafka_read import read_all
from tests.strategies import JSON_VALUES, valid_events
from tests.test_collector import NOW, client_for

CATALOG = default_catalog()
# what JSON escapes can carry that UTF-8 cannot: lone surrogates, and control characters
ODD_TEXT = st.text(
    st.characters(min_codepoint=0, max_codepoint=0x1F) | st.characters(categories=["Cs"]),
    min_size=1,
    max_size=4,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid event of any type, sometimes with one field replaced by junk."""
    event = draw(st.sampled_from(sorted(CATALOG)).flatmap(lambda n: valid_events(CATALOG[n], NOW)))
    if draw(st.booleans()):
        where = draw(st.sampled_from(["envelope", "properties"]))
        target = event if where == "envelope" else event["properties"]
        if target:
            target[draw(st.sampled_from(sorted(target)))] = draw(JSON_VALUES | ODD_TEXT)
    return event


payloads = mutated_events() | JSON_VALUES


def test_fuzzed_posts_are_never_5xx_and_every_rejection_is_kept(settings: Settings) -> None:
    rejections = 0

    with client_for(settings) as client:

        @settings_for_fuzz
        @given(single=payloads, batch=st.lists(payloads, max_size=5))
        def fuzz(single: Any, batch: list[Any]) -> None:
            nonlocal rejections
            response = client.post(
                "/v1/events",
                content=json.dumps(single),
                headers={"content-type": "application/json"},
            )
            assert response.status_code in (202, 400, 413, 422), response.text
            if response.status_code != 202:
                errors = response.json()["errors"]
                assert errors and all(e["field"] and e["message"] for e in errors)
                rejections += 1
            # json.dumps, not httpx's json=: clients do send Infinity and NaN (Python's
            # json module writes them), and httpx would refuse to encode them
            response = client.post(
                "/v1/events/batch",
                content=json.dumps({"events": batch}),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["accepted"] + len(body["rejected"]) == len(batch)
            for item in body["rejected"]:
                assert item["errors"] and all(e["field"] and e["message"] for e in item["errors"])
            rejections += len(body["rejected"])

        fuzz()

    dead = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    assert rejections > 0
    assert len(dead) == rejections


settings_for_fuzz = hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
