"""Nothing lost, nothing counted twice: the processors worker is SIGKILLed at random
points while it works through a large log, restarted each time, and the projections
it finally publishes must equal the fold of the deduplicated log exactly."""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import workload
from devstack.services import ServiceGroup
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW, PROJECTIONS_USER_PROGRESS
from processors import outputs
from projections.events import Event
from projections.fold import fold_log
from schemas.catalog import default_catalog
from schemas.codec import encode
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event
from tests.kafka_read import latest_by_key

EVENT_COUNT = int(os.environ.get("LEARNSTREAM_CRASH_EVENTS", "50000"))
KILLS = 5
CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def generated(rng: random.Random) -> list[dict[str, Any]]:
    """The bench workload, 200 learners over 60 days in 3 zones, plus retried sends."""
    events = workload.events(
        EVENT_COUNT,
        users=200,
        seed=rng.randrange(2**32),
        days=60,
        zones=("UTC", "Europe/Paris", "America/Chicago"),
        drills=("d1", "d2", "d3", "d4"),
    )
    events += [dict(e) for e in rng.sample(events, EVENT_COUNT // 20)]
    rng.shuffle(events)
    return events


async def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
    )
    await producer.start()
    try:
        for event in events:
            outcome = validate_event(CATALOG, event, NOW)
            assert isinstance(outcome, Accepted)
            kind = outcome.event_type
            value = encode(REGISTRY.id_for(kind.subject, kind.schema), kind.parsed, outcome.datum)
            await producer.send(settings.topic(EVENTS_RAW), value, key=event["user_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def produce_and_expect(
    settings: Settings, events: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Put the log on events.raw; return the user progress its fold says must be published."""
    asyncio.run(produce(settings, events))
    folded = fold_log(Event.from_envelope(e) for e in events).learners
    return {u: outputs.user_progress(u, s) for u, s in folded.items()}


def published_progress(settings: Settings) -> dict[str, dict[str, Any]]:
    return latest_by_key(settings.kafka_bootstrap, settings.topic(PROJECTIONS_USER_PROGRESS))


def wait_until_caught_up(
    settings: Settings, group: ServiceGroup, expected: dict[str, dict[str, Any]], timeout_s: float
) -> None:
    """Until every learner's published progress has applied all of its expected events."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = published_progress(settings)
        caught_up = [
            u
            for u, p in progress.items()
            if p["events_applied"] >= expected.get(u, {}).get("events_applied", 0)
        ]
        if len(caught_up) == len(expected):
            return
        assert not group.exited(), "processors died on their own"
        time.sleep(2)


def run_with_kills(
    settings: Settings, worker_log: Any, expected: dict[str, dict[str, Any]], rng: random.Random
) -> int:
    """Kill the worker KILLS times mid-flight, then let it finish; returns the kill count."""
    group = ServiceGroup(env=settings.as_env(), out=worker_log)
    kills = 0
    try:
        group.start("processors")
        while kills < KILLS:
            time.sleep(rng.uniform(6, 14))  # start-up, recovery and some progress
            group.kill("processors")
            kills += 1
            group.start("processors")
        wait_until_caught_up(settings, group, expected, timeout_s=900)
    finally:
        group.stop_all()
    return kills


def test_sigkilled_worker_restarts_to_exactly_the_fold(settings: Settings) -> None:
    rng = random.Random(2026)
    events = generated(rng)
    expected = produce_and_expect(settings, events)

    log_path = os.environ.get("LEARNSTREAM_CRASH_LOG", os.devnull)
    with open(log_path, "a") as worker_log:
        kills = run_with_kills(settings, worker_log, expected, rng)
    assert kills == KILLS
    assert published_progress(settings) == expected  # no double XP, no lost day


def test_second_worker_joining_mid_run_gives_the_same_state(settings: Settings) -> None:
    """A rebalance hands partitions, with their table state, from one worker to another."""
    rng = random.Random(7)
    events = workload.events(
        EVENT_COUNT // 3,
        users=150,
        seed=11,
        days=40,
        zones=("UTC", "Asia/Tokyo"),
        drills=("d1", "d2", "d3"),
    )
    events += [dict(e) for e in rng.sample(events, len(events) // 20)]
    expected = produce_and_expect(settings, events)
    log_path = os.environ.get("LEARNSTREAM_CRASH_LOG", os.devnull)
    with open(log_path, "a") as worker_log:
        group = ServiceGroup(env=settings.as_env(), out=worker_log)
        try:
            group.start("processors", "worker-1")
            time.sleep(12)  # worker 1 owns every partition and is working through them
            group.start("processors", "worker-2")  # rebalance mid-run
            wait_until_caught_up(settings, group, expected, timeout_s=600)
        finally:
            group.stop_all()
    assert published_progress(settings) == expected
