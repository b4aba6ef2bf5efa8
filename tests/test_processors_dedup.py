"""The dedup window on the real broker: a repeat within the window is dropped, one
after it is a new event. Time is the records' own arrival timestamps."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.throughput import committed_total
from devstack.services import ServiceGroup
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, EVENTS_INVALID, EVENTS_RAW
from schemas.catalog import default_catalog
from schemas.codec import decode, encode
from schemas.examples import example_event
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event
from tests.kafka_read import read_all

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
T0_MS = 1_767_000_000_000


def record(event_id: str) -> bytes:
    event = example_event(CATALOG["lesson_completed"])
    event["event_id"] = event_id
    outcome = validate_event(CATALOG, event, datetime(2026, 2, 1, tzinfo=UTC))
    assert isinstance(outcome, Accepted)
    kind = outcome.event_type
    return encode(REGISTRY.id_for(kind.subject, kind.schema), kind.parsed, outcome.datum)


async def produce(settings: Settings, sends: list[tuple[bytes, int | None]]) -> None:
    """(value, record timestamp or None for now) onto events.raw, one learner's key, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for value, at_ms in sends:
            await producer.send_and_wait(
                settings.topic(EVENTS_RAW), value, key=b"usr_12345", timestamp_ms=at_ms
            )
    finally:
        await producer.stop()


def test_repeat_within_window_dropped_after_window_new(settings: Settings, tmp_path: Path) -> None:
    windowed = settings.model_copy(update={"dedup_window_hours": 1 / 3600})  # one second
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    asyncio.run(
        produce(
            windowed,
            [
                (record(a), T0_MS),
                (record(a), T0_MS + 500),
                (record(a), T0_MS + 5_000),
                (record(b), T0_MS + 5_000),
                (record(b), T0_MS + 5_400),
            ],
        )
    )
    with open(os.devnull, "w") as quiet:
        group = ServiceGroup(env=windowed.as_env(), out=quiet)
        group.start("processors")
        try:
            _wait_for_all_processed(windowed, group, 5)
            clean = _clean_ids(windowed)
        finally:
            group.stop_all()
    assert clean == [a, a, b]


def test_undecodable_record_is_dead_lettered_and_the_partition_flows_on(
    settings: Settings,
) -> None:
    good = str(uuid.uuid4())
    asyncio.run(produce(settings, [(b"\x00garbage", None), (record(good), None)]))
    with open(os.devnull, "w") as quiet:
        group = ServiceGroup(env=settings.as_env(), out=quiet)
        group.start("processors")
        try:
            deadline = time.monotonic() + 90
            clean: list[Any] = []
            while time.monotonic() < deadline and not clean:
                assert not group.supervise()
                clean = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_CLEAN))
                time.sleep(0.5)
        finally:
            group.stop_all()
    assert [str(decode(REGISTRY, m.value)["event_id"]) for m in clean] == [good]
    (letter,) = [
        json.loads(m.value)
        for m in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    ]
    assert letter["raw"] == b"\x00garbage".hex()
    assert letter["errors"][0]["field"] == "(message)"
    assert letter["source"].startswith("processors at partition")
    assert letter["received_at"]


def _clean_ids(settings: Settings) -> list[str]:
    records = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_CLEAN))
    return [str(decode(REGISTRY, m.value)["event_id"]) for m in records]


def _wait_for_clean(settings: Settings, group: ServiceGroup, count: int) -> list[str]:
    deadline = time.monotonic() + 90
    clean = _clean_ids(settings)
    while time.monotonic() < deadline and len(clean) < count:
        assert not group.supervise()
        time.sleep(0.5)
        clean = _clean_ids(settings)
    return clean


def _wait_for_all_processed(settings: Settings, group: ServiceGroup, produced: int) -> None:
    """Until the group has committed past every record of events.raw: a batch's outputs
    are all delivered before its offsets can be committed, so whatever it sent is on
    events.clean by then, and nothing more will come (no sleeping to prove absence)."""
    group_id = settings.topic("learnstream-processors")
    deadline = time.monotonic() + 90
    while asyncio.run(committed_total(settings, group_id)) < produced:
        assert not group.supervise()
        assert time.monotonic() < deadline, "events.raw never committed to its end"
        time.sleep(0.5)


def test_rocksdb_store_keeps_dedup_state_across_a_kill(settings: Settings) -> None:
    """The production store: state on disk, a SIGKILLed worker still knows what it saw."""
    rocks = settings.model_copy(update={"table_store": "rocksdb://"})
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    asyncio.run(produce(rocks, [(record(a), T0_MS), (record(b), T0_MS + 1)]))
    with open(os.devnull, "w") as quiet:
        group = ServiceGroup(env=rocks.as_env(), out=quiet)
        group.start("processors")
        try:
            assert _wait_for_clean(rocks, group, 2) == [a, b]
            group_id = rocks.topic("learnstream-processors")
            deadline = time.monotonic() + 30  # committed: the restart resumes after a and b
            while asyncio.run(committed_total(rocks, group_id)) < 2:
                assert time.monotonic() < deadline, "offsets never committed"
                time.sleep(0.5)
            group.kill("processors")
            asyncio.run(produce(rocks, [(record(a), T0_MS + 2), (record(c), T0_MS + 3)]))
            group.start("processors")
            _wait_for_all_processed(rocks, group, 4)
            clean = _clean_ids(rocks)
        finally:
            group.stop_all()
    assert clean == [a, b, c]
    assert list(rocks.faust_data_dir.rglob("*.sst")) or list(rocks.faust_data_dir.rglob("CURRENT"))


def test_a_record_whose_processing_fails_is_retried_not_skipped(
    settings: Settings, tmp_path: Path
) -> None:
    """Faust acks taken events in a ``finally`` and commits them on shutdown; a batch that
    fails halfway through (its first half's state written and outputs sent) must commit
    nothing of it, so the restart processes the whole batch again."""
    faulty = settings.model_copy(update={"fault_fail_marker": tmp_path / "failed-once"})
    ids = [str(uuid.uuid4()) for _ in range(3)]
    asyncio.run(produce(faulty, [(record(i), T0_MS + n) for n, i in enumerate(ids)]))
    log_path = tmp_path / "worker.log"
    with open(log_path, "a") as log:
        group = ServiceGroup(env=faulty.as_env(), out=log)
        group.start("processors")
        try:
            clean = _wait_for_clean(faulty, group, 3)  # restarts the worker after the failure
        finally:
            group.stop_all()
    assert "processing a batch failed; exiting so a restart retries it" in log_path.read_text()
    assert set(clean) == set(ids)  # nothing lost
    # the half carried out before the failure is redelivered and sent again (the sink
    # stores each event_id once); nothing else is doubled
    assert len(clean) - len(set(clean)) <= len(ids) // 2
