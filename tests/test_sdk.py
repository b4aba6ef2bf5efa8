"""The Python SDK against the real collector and broker: batches, retries, the
offline queue, and delivery of every event across an outage and a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from collector.app import create_app
from collector.publisher import KafkaPublisher
from devstack import kafka
from devstack.services import ServiceGroup, free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW, ensure_topics
from learnstream_sdk import Tracker, uuid7
from schemas.codec import decode
from tests.conftest import REPO
from tests.kafka_read import read_all
from tests.test_collector import CATALOG, REGISTRY
from tests.test_collector_auth import _metric


def raw_ids(settings: Settings) -> list[str]:
    records = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW))
    return [str(decode(REGISTRY, r.value)["event_id"]) for r in records]


def collector(settings: Settings) -> httpx.Client:
    """The collector in process, as the HTTP client the SDK takes (Starlette's test
    client is one, typed against its own copy of httpx)."""
    publisher = KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s)
    return cast(httpx.Client, TestClient(create_app(settings, CATALOG, REGISTRY, publisher)))


def answer(i: int) -> dict[str, object]:
    return {"question_id": f"q{i}", "topic_id": "fractions", "is_correct": True}


@given(st.integers(min_value=0, max_value=2**48 - 1), st.binary(min_size=10, max_size=10))
def test_uuid7_carries_its_millisecond_and_version(millis: int, noise: bytes) -> None:
    made = uuid7(millis, random_bytes=lambda n: noise[:n])
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert made.int >> 80 == millis


def test_uuid7_ids_sort_by_time() -> None:
    ids = [uuid7(ms) for ms in (1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000)]
    assert sorted(ids, key=str) == ids


def test_a_hundred_events_are_sent_as_one_batch(settings: Settings, tmp_path: Path) -> None:
    with collector(settings) as http:
        tracker = Tracker("", tmp_path / "outbox.db", http=http, flush_interval_s=3600)
        ids = [tracker.track("question_submit", answer(i), user_id="ada") for i in range(100)]
        deadline = time.monotonic() + 20
        while tracker.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tracker.pending == 0  # the 100th event woke the flusher, not the 1 h timer
        metrics = http.get("/metrics").text
        tracker.close()
    assert sorted(raw_ids(settings)) == sorted(ids)
    assert _metric(metrics, "learnstream_batch_events_count") == 1


def test_a_refusal_is_logged_and_never_retried(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keyed = settings.model_copy(update={"write_keys": {"wk_right": "acme"}})
    with collector(keyed) as http:
        tracker = Tracker(
            "", tmp_path / "outbox.db", http=http, write_key="wk_wrong", background=False
        )
        for i in range(3):
            tracker.track("question_submit", answer(i), user_id="ada")
        with caplog.at_level(logging.ERROR, logger="learnstream_sdk"):
            result = tracker.close()
        metrics = http.get("/metrics").text
    assert (result.accepted, result.rejected, result.pending) == (0, 3, 0)
    assert _metric(metrics, 'learnstream_events_rejected_total{reason="unauthenticated"}') == 1
    assert "401" in caplog.text and "unknown write key" in caplog.text
    assert raw_ids(keyed) == []


def test_invalid_events_in_a_batch_are_dropped_with_their_reasons(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with collector(settings) as http:
        tracker = Tracker("", tmp_path / "outbox.db", http=http, background=False)
        good = tracker.track("question_submit", answer(1), user_id="ada")
        # seeds require no question_id (issue 12); a wrongly typed field is still refused
        tracker.track("question_submit", {"topic_id": "t", "is_correct": "yes"}, user_id="ada")
        with caplog.at_level(logging.ERROR, logger="learnstream_sdk"):
            result = tracker.close()
    assert (result.accepted, result.rejected, result.pending) == (1, 1, 0)
    assert "properties.is_correct" in caplog.text
    assert raw_ids(settings) == [good]


def test_an_unreachable_collector_is_retried_with_backoff_then_kept(tmp_path: Path) -> None:
    pauses: list[float] = []
    tracker = Tracker(
        f"http://127.0.0.1:{free_port()}",  # nobody listens
        tmp_path / "outbox.db",
        background=False,
        backoff_base_s=0.5,
        sleep=pauses.append,
    )
    tracker.track("question_submit", answer(1), user_id="ada")
    result = tracker.flush()
    assert (result.accepted, result.pending) == (0, 1)
    assert len(pauses) == 3  # three retries after the first attempt
    assert all(0 <= p <= 0.5 * 2**i for i, p in enumerate(pauses))  # full jitter under the cap
    tracker.close()
    reopened = Tracker("http://127.0.0.1:1", tmp_path / "outbox.db", background=False)
    assert reopened.pending == 1  # the offline queue is on disk
    reopened._outbox.close()


def test_events_survive_an_outage_and_an_app_restart_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    """Broker down, the app tracks 250 events and is SIGKILLed; the broker returns and the
    restarted app delivers every event, each once by event_id."""
    port, controller_port = free_port(), free_port()
    paths = kafka.KafkaPaths(home=REPO / ".devstack", data=tmp_path / "own-kafka")
    kafka.start(paths, port, controller_port)
    own = settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{port}",
            "publish_timeout_s": 1.0,
            "collector_port": free_port(),
        }
    )
    outbox, ids_file = tmp_path / "app-outbox.db", tmp_path / "ids.json"
    sdk = [sys.executable, "-m", "tests.sdk_process"]
    group = ServiceGroup(env=own.as_env(), out=open(os.devnull, "w"))  # noqa: SIM115
    try:
        asyncio.run(ensure_topics(own))
        group.start("collector")
        deadline = time.monotonic() + 60
        while not http_ok(f"{own.collector_url}/readyz") and time.monotonic() < deadline:
            time.sleep(0.3)
        kafka.stop(paths)
        app = subprocess.Popen(
            [*sdk, "track", own.collector_url, str(outbox), "250", str(ids_file)]
        )
        deadline = time.monotonic() + 60
        while not ids_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(4)  # a few flushes meet 503s
        app.send_signal(signal.SIGKILL)
        app.wait()
        kafka.start(paths, port, controller_port)
        deadline = time.monotonic() + 60
        while not http_ok(f"{own.collector_url}/readyz") and time.monotonic() < deadline:
            time.sleep(0.3)
        drained = subprocess.run(
            [*sdk, "drain", own.collector_url, str(outbox)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REPO,
        )
        delivered = raw_ids(own)
    finally:
        group.stop_all()
        kafka.stop(paths)
    tracked = json.loads(ids_file.read_text())
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert len(tracked) == 250
    # Every event arrived. A batch cut off mid-publish may be sent again; the copies
    # share event_ids, which the processors' dedup drops (tests/test_processors_dedup).
    assert set(delivered) == set(tracked)
