"""Retention: a row leaves ClickHouse once its event is older than its retention_days
(the per-row TTL), and not before."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from learnstream.settings import Settings
from schemas.examples import example_event
from sinks.writer import ClickHouseWriter
from tests.test_sink_redelivery import CATALOG, produce_examples, run_sink_until


def test_rows_expire_by_their_own_retention(settings: Settings, clickhouse: Any) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    kept_by_policy = []
    for days_old, retention, expected_kept in ((10, 1, False), (10, 30, True), (400, 365, False)):
        event = example_event(CATALOG["lesson_completed"], now - timedelta(days=days_old))
        event["event_id"] = f"00000000-0000-4000-8000-{days_old:06d}{retention:06d}"
        event["retention_days"] = retention
        kept_by_policy.append((event, expected_kept))
    events = [e for e, _ in kept_by_policy]
    asyncio.run(produce_examples(settings, events, now=now))
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)
    asyncio.run(run_sink_until(settings, writer, len(events)))
    clickhouse.command("OPTIMIZE TABLE events FINAL")  # TTL is applied when parts merge
    left = {r[0] for r in clickhouse.query("SELECT toString(event_id) FROM events").result_rows}
    assert left == {e["event_id"] for e, kept in kept_by_policy if kept}
