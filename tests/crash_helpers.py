"""Shared by the tests that run processors workers over a generated log: put the log on
events.raw, compute what the fold says must be published, wait for the workers to get
there."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from devstack.services import ServiceGroup
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_RAW,
    PROJECTIONS_MODE_PROGRESS,
    PROJECTIONS_TOPIC_MASTERY,
    PROJECTIONS_USER_PROGRESS,
)
from processors import outputs
from projections.events import Event
from projections.fold import fold_log
from projections.policy import catalog_policy
from schemas.catalog import default_catalog
from schemas.codec import encode
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event
from tests.kafka_read import latest_by_key

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
POLICY = catalog_policy(CATALOG, "development")  # the processors' default environment
NOW = datetime(2026, 6, 1, tzinfo=UTC)


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
    settings: Settings,
    events: list[dict[str, Any]],
    produce_only: list[dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Put the log on events.raw (or just its new tail, ``produce_only``); return the user
    progress the fold of the whole log says must be published."""
    asyncio.run(produce(settings, events if produce_only is None else produce_only))
    folded = fold_log((Event.from_envelope(e) for e in events), POLICY).learners
    return {u: outputs.user_progress(u, s.summary) for u, s in folded.items()}


def _without_version(snapshots: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # a mastery or mode snapshot is published when its topic or mode changes, so its
    # events_applied is the learner's count at that moment, not at the end of the log
    return {k: {f: v for f, v in s.items() if f != "events_applied"} for k, s in snapshots.items()}


def expected_mastery_and_modes(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What projections.topic_mastery and projections.mode_progress must end up holding."""
    folded = fold_log((Event.from_envelope(e) for e in events), POLICY).learners
    mastery = {
        f"{u}:{t}": outputs.topic_mastery(u, t, piece, s.summary)
        for u, s in folded.items()
        for t, piece in s.topics.items()
    }
    modes = {
        f"{u}:{m}": outputs.mode_progress(u, m, s.summary)
        for u, s in folded.items()
        for m in s.summary.modes
    }
    return {"mastery": _without_version(mastery), "modes": _without_version(modes)}


def published_mastery_and_modes(settings: Settings) -> dict[str, dict[str, Any]]:
    bootstrap = settings.kafka_bootstrap
    return {
        "mastery": _without_version(
            latest_by_key(bootstrap, settings.topic(PROJECTIONS_TOPIC_MASTERY))
        ),
        "modes": _without_version(
            latest_by_key(bootstrap, settings.topic(PROJECTIONS_MODE_PROGRESS))
        ),
    }


def published_progress(settings: Settings) -> dict[str, dict[str, Any]]:
    return latest_by_key(settings.kafka_bootstrap, settings.topic(PROJECTIONS_USER_PROGRESS))


def wait_until_caught_up(
    settings: Settings, group: ServiceGroup, expected: dict[str, dict[str, Any]], timeout_s: float
) -> None:
    """Until every learner's published progress has applied all of its expected events."""
    deadline = time.monotonic() + timeout_s
    progress: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        progress = published_progress(settings)
        caught_up = [
            u
            for u, p in progress.items()
            if p["events_applied"] >= expected.get(u, {}).get("events_applied", 0)
        ]
        if len(caught_up) == len(expected):
            return
        # restarts a worker that exited on a stall, as its supervisor would
        assert not group.supervise(), "processors died on their own"
        time.sleep(2)
    lagging = {
        u: (progress.get(u, {}).get("events_applied", 0), e["events_applied"])
        for u, e in expected.items()
        if progress.get(u, {}).get("events_applied", 0) < e["events_applied"]
    }
    raise AssertionError(f"not caught up in {timeout_s} s; (applied, expected): {lagging}")
