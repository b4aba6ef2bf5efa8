"""``learnstream redrive`` on the real stack: dead letters written by the release before a
schema fix go through today's validation and collector, each event stored once.

The fix is the one issue 12 made: seed 002's apps send ``timeSpent`` on quiz_completed,
and a release whose schema lacked the field refused those events ("properties.timeSpent:
unknown field"). That release is today's collector code with the field taken out of a
copy of the schemas, running in-process with a clock three days back, publishing its
dead letters to the test's real Kafka; the live stack (today's schemas) stores them and
takes the redriven events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.publisher import KafkaPublisher
from devstack.services import http_ok
from learnstream.cli import main as cli
from learnstream.redrive import Letter, events_of
from learnstream.settings import Settings
from schemas.catalog import AVRO_DIR, EventCatalog
from schemas.registry import registry_for
from tests.conftest import isolated_settings
from tests.live_stack import LiveStack, live_stack

USER = f"redrive-{uuid.uuid4().hex[:8]}"
# when the release before the fix received the events: old enough that a redrive which
# let today's collector take their age for clock skew would move them by days
THEN = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
FILTERS = [
    "--type",
    "quiz_completed",
    "--error-contains",
    "unknown field",
    "--since",
    (THEN - timedelta(minutes=1)).isoformat(),
]
CLEAN = "source_topic LIKE '%events.clean'"  # derived events share the table


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    settings = isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("redrive"))
    with live_stack(settings) as running:
        yield running


def _catalog_before_fix(folder: Path) -> EventCatalog:
    """Today's schemas without quiz_completed's time_spent (alias timeSpent)."""
    shutil.copytree(AVRO_DIR, folder / "avro")
    path = folder / "avro" / "properties" / "quiz_completed.avsc"
    schema = json.loads(path.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "time_spent"]
    path.write_text(json.dumps(schema))
    return EventCatalog.load(folder / "avro")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def quiz(score: float, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "quiz_completed",
        "timestamp": _iso(at),
        "user_id": USER,
        "properties": {"contentId": "quiz-7", "score": score, "timeSpent": 42.5},
        **extra,
    }


def _accepted_total(stack: LiveStack) -> float:
    text = stack.collector.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("learnstream_events_accepted_total"))
    return float(line.split()[-1])


def _redrive(capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    assert cli(["redrive", *FILTERS, "--json", *flags]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def _redrive_process(settings: Settings) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "learnstream.cli", "redrive", *FILTERS, "--json"],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _by_event(report: dict[str, Any]) -> dict[str, str]:
    return {item["event_id"]: item["verdict"] for item in report["items"]}


def test_redrive_after_a_schema_fix_stores_each_event_once(
    stack: LiveStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = stack.settings
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)

    # the device's clock is an hour behind: live, the event time is corrected by the
    # receipt (THEN) minus sent_at
    skewed = quiz(80, THEN - timedelta(hours=1, minutes=5), sent_at=_iso(THEN - timedelta(hours=1)))
    plain = quiz(90, THEN - timedelta(minutes=10))
    hopeless = quiz(150, THEN - timedelta(minutes=9))  # a score no fix makes valid
    resent = quiz(70, THEN - timedelta(minutes=8))  # the app later resent it, fixed
    lesson = {  # refused too, but not of the type redriven
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": _iso(THEN - timedelta(minutes=7)),
        "user_id": USER,
        "properties": {"content_id": "l-1", "mood": "fine"},
    }
    old = create_app(
        settings,
        _catalog_before_fix(tmp_path),
        registry_for(None),
        KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s),
        clock=lambda: THEN,
    )
    with TestClient(old) as before_fix:
        assert before_fix.post("/v1/events", json=skewed).status_code == 422
        answer = before_fix.post(
            "/v1/events/batch", json={"events": [plain, hopeless, resent, lesson]}
        )
        assert answer.status_code == 202 and answer.json()["accepted"] == 0, answer.text
    fixed = {**resent, "properties": {"contentId": "quiz-7", "score": 70}}
    assert stack.collector.post("/v1/events", json=fixed).status_code == 202

    def arrived() -> list[int]:
        rows = stack.sql(
            "SELECT (SELECT count() FROM events_invalid"
            " WHERE JSONExtractString(raw, 'user_id') = {u}),"
            f" (SELECT count() FROM events WHERE user_id = {{u}} AND {CLEAN})",
            u=USER,
        )
        return [int(n) for n in rows[0]]

    stack.wait_for("the dead letters and the resent event", lambda: min(arrived()) >= 1)
    stack.wait_for("the five dead letters", lambda: arrived()[0] >= 5)
    assert arrived() == [5, 1]

    # dry run: judged, nothing sent (the collector accepts nothing meanwhile)
    accepted_before = _accepted_total(stack)
    dry = _redrive(capsys, "--dry-run")
    assert _by_event(dry) == {
        skewed["event_id"]: "would_send",
        plain["event_id"]: "would_send",
        hopeless["event_id"]: "still_invalid",
        resent["event_id"]: "already_stored",
    }
    why = next(i["errors"] for i in dry["items"] if i["event_id"] == hopeless["event_id"])
    assert why == ["properties.score: must be <= 100, got 150.0"]
    assert dry["dry_run"] and dry["letters"] == 4
    assert _accepted_total(stack) == accepted_before

    # twice with the sink stopped, so that the second run cannot see the first one's
    # events stored and sends them again; with embedded chdb the CLI (a process of its
    # own, as an operator runs it) then reads the dead letters from the data folder itself
    stack.group.stop("sink")
    try:
        runs = [_redrive_process(settings) for _ in range(2)]
    finally:
        stack.group.start("sink")
    for run in runs:
        assert _by_event(run) == {
            skewed["event_id"]: "sent",
            plain["event_id"]: "sent",
            hopeless["event_id"]: "still_invalid",
            resent["event_id"]: "already_stored",
        }
    stack.wait_for("the sink again", lambda: http_ok(f"{settings.query_url}/healthz"))

    # a later event of the same learner (same partition, same order through every stage)
    # is stored only after everything sent before it
    barrier = {**quiz(10, datetime.now(UTC)), "properties": {"contentId": "q-last", "score": 10}}
    assert stack.collector.post("/v1/events", json=barrier).status_code == 202
    stack.wait_for(
        "the barrier event",
        lambda: (
            stack.sql(
                "SELECT count() FROM events WHERE event_id = toUUID({e})", e=barrier["event_id"]
            )
            == [[1]]
        ),
    )
    rows = stack.sql(
        "SELECT toString(event_id), count(), toString(min(timestamp)), any(properties) FROM events "
        f"WHERE user_id = {{u}} AND {CLEAN} GROUP BY event_id",
        u=USER,
    )
    stored = {r[0]: r for r in rows}
    assert sorted(stored) == sorted(
        [skewed["event_id"], plain["event_id"], resent["event_id"], barrier["event_id"]]
    )
    assert all(r[1] == 1 for r in rows), rows  # each event once
    # event time as it was live: corrected by the skew at its receipt, not by its age
    assert stored[skewed["event_id"]][2] == (THEN - timedelta(minutes=5)).strftime(
        "%Y-%m-%d %H:%M:%S.000"
    )
    assert stored[plain["event_id"]][2] == (THEN - timedelta(minutes=10)).strftime(
        "%Y-%m-%d %H:%M:%S.000"
    )
    assert json.loads(stored[plain["event_id"]][3])["time_spent"] == 42.5

    # folded once: XP is 70 + 80 + 90 + 10; a redriven event folded twice would pass
    # 250 only on its way to more
    def xp() -> int:
        state = stack.reads.get(f"/v1/learners/{USER}/state")
        return int(state.json()["progress"]["xp"]) if state.status_code == 200 else 0

    stack.wait_for("the learner's XP", lambda: xp() >= 250)
    assert xp() == 250

    # once stored, a third run sends nothing
    third = _redrive(capsys)
    assert _by_event(third)[skewed["event_id"]] == "already_stored"
    assert _by_event(third)[plain["event_id"]] == "already_stored"
    assert "sent" not in third["counts"]


def _letter(raw: str) -> Letter:
    return Letter("l-1", THEN, "", raw, "[]")


def test_a_letter_of_a_whole_batch_body_gives_each_event_with_the_batch_sent_at() -> None:
    # a batch refused as a whole (an unknown write key) is one letter holding the body
    body = {"sent_at": "2026-01-01T10:00:00Z", "events": [{"event_id": "a"}, {"sent_at": "x"}]}
    assert events_of(_letter(json.dumps(body))) == [
        {"event_id": "a", "sent_at": "2026-01-01T10:00:00Z"},
        {"sent_at": "x"},  # the event's own wins, as at the collector
    ]


def test_a_raw_input_cut_at_512_kib_or_not_an_object_is_no_event() -> None:
    assert events_of(_letter('{"event_type": "quiz_completed", "properties": {"x": "aaa')) is None
    assert events_of(_letter("[1, 2]")) is None
