"""Projection topics land in ClickHouse tables that hold, per key, the newest value:
later snapshots replace earlier ones and a tombstone removes the key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from fastavro import parse_schema

from learnstream.settings import Settings
from learnstream.topics import PROJECTIONS_TOPIC_MASTERY, PROJECTIONS_USER_PROGRESS
from schemas.catalog import load_named_schema
from schemas.codec import encode
from sinks.projection_rows import PROJECTION_TABLES, projection_route
from sinks.writer import ClickHouseWriter
from tests.test_sink_redelivery import REGISTRY, run_sink_until


def _encoder(schema_file: str) -> Any:
    schema = load_named_schema(schema_file)
    schema_id = REGISTRY.id_for(f"{schema['namespace']}.{schema['name']}", schema)
    parsed = parse_schema(dict(schema))
    return lambda datum: encode(schema_id, parsed, datum)


def _progress(user: str, xp: int, applied: int) -> dict[str, Any]:
    return {
        "user_id": user,
        "xp": xp,
        "level": 1 + xp // 100,
        "current_streak": 1,
        "longest_streak": 2,
        "last_active_date": None,
        "latest_event_at": datetime(2026, 3, 1, tzinfo=UTC),
        "events_applied": applied,
        "sessions_started": 0,
        "sessions_completed": 0,
        "completion_rate": None,
        "study_seconds": 0,
        "pauses": 0,
        "materials_opened": 0,
        "questions_answered": applied,
        "questions_correct": 0,
        "courses": [],
        "recent_days": [],
    }


async def _send(settings: Settings, records: list[tuple[str, str, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(settings.topic(topic), value, key=key.encode())
    finally:
        await producer.stop()


def test_latest_snapshot_wins_and_tombstones_delete(settings: Settings, clickhouse: Any) -> None:
    progress = _encoder("projections/user_progress.avsc")
    mastery = _encoder("projections/topic_mastery.avsc")
    records: list[tuple[str, str, bytes | None]] = [
        (PROJECTIONS_USER_PROGRESS, "ana", progress(_progress("ana", 10, 1))),
        (PROJECTIONS_USER_PROGRESS, "bo", progress(_progress("bo", 30, 3))),
        (PROJECTIONS_USER_PROGRESS, "ana", progress(_progress("ana", 120, 5))),
        (PROJECTIONS_USER_PROGRESS, "bo", None),  # bo was erased
        (
            PROJECTIONS_TOPIC_MASTERY,
            "ana:fractions",
            mastery(
                {
                    "user_id": "ana",
                    "topic_id": "fractions",
                    "p_mastery": 0.97,
                    "mastered": True,
                    "events_applied": 5,
                }
            ),
        ),
    ]
    routes = {
        settings.topic(topic): projection_route(PROJECTION_TABLES[topic], REGISTRY)
        for topic in (PROJECTIONS_USER_PROGRESS, PROJECTIONS_TOPIC_MASTERY)
    }
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)
    asyncio.run(_send(settings, records))
    sink = asyncio.run(run_sink_until(settings, writer, len(records), routes))
    assert sink.rows_inserted == len(records)

    rows = clickhouse.query(
        "SELECT user_id, xp, level, events_applied FROM user_progress_current ORDER BY user_id"
    ).result_rows
    assert [tuple(r) for r in rows] == [("ana", 120, 2, 5)]
    rows = clickhouse.query("SELECT key, user_id, topic_id, mastered FROM topic_mastery_current")
    assert [tuple(r) for r in rows.result_rows] == [("ana:fractions", "ana", "fractions", True)]
