"""The sink beside a raw clickhouse-connect insert of the same rows, and the time from the
collector's 202 until an event can be queried in ClickHouse.

Throughput: the same encoded events are put on events.clean; the sink streams them into
``events`` (consume, decode, dedup checks, planned inserts, commits), and the baseline
inserts the very same rows, already built, into a copy of the table in batches of the
sink's size. Both run on one chdb client in the same process, one after the other.

Latency: with collector, processors and sink running, events are posted at a steady
rate; each event's latency is its ``inserted_at`` (set by ClickHouse when the part is
written, the moment it becomes queryable) minus the moment its 202 arrived.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
from aiokafka import AIOKafkaProducer

from bench.stats import percentile
from bench.tail import follow
from bench.workload import CATALOG, REGISTRY, encoded, lesson
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN
from schemas.codec import decode
from sinks.clickhouse import migrate
from sinks.event_sink import EventSink
from sinks.routes import event_route
from sinks.rows import EVENT_COLUMNS, event_row
from sinks.writer import ClickHouseWriter

DATABASE = "learnstream"


async def _put_on_clean(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(settings.topic(EVENTS_CLEAN), value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _run_sink(settings: Settings, writer: ClickHouseWriter, count: int, batch: int) -> float:
    sink = EventSink.create(
        settings.kafka_bootstrap,
        {settings.topic(EVENTS_CLEAN): event_route(CATALOG, REGISTRY)},
        settings.topic("bench-sink"),
        writer,
        batch,
        1.0,
    )
    started = time.perf_counter()
    task = asyncio.create_task(sink.run())
    try:
        while sink.rows_inserted < count:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        return time.perf_counter() - started
    finally:
        sink.stop()
        await task


def throughput(
    settings: Settings, workload: list[dict[str, Any]], chdb_path: Path, batch: int
) -> dict[str, float]:
    records = [encoded(e) for e in workload]
    asyncio.run(_put_on_clean(settings, records))
    client = clickhouse_connect.get_client(interface="chdb", path=str(chdb_path))
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    migrate(client, DATABASE)
    client.command(f"CREATE TABLE {DATABASE}.events_baseline AS {DATABASE}.events")
    rows = [
        event_row(CATALOG, decode(REGISTRY, value), settings.topic(EVENTS_CLEAN), 0, offset)
        for offset, (_, value) in enumerate(records)
    ]
    started = time.perf_counter()
    for first in range(0, len(rows), batch):
        client.insert(
            f"{DATABASE}.events_baseline",
            rows[first : first + batch],
            column_names=list(EVENT_COLUMNS),
        )
    raw_s = time.perf_counter() - started
    writer = ClickHouseWriter(client, DATABASE)
    sink_s = asyncio.run(_run_sink(settings, writer, len(rows), batch))
    stored = client.query(f"SELECT count() FROM {DATABASE}.events").result_rows[0][0]
    writer.close()
    assert stored == len(rows), f"sink stored {stored} of {len(rows)}"
    return {
        "rows": len(rows),
        "raw_rows_per_s": len(rows) / raw_s,
        "sink_rows_per_s": len(rows) / sink_s,
    }


async def _watch_clean(settings: Settings, seen: dict[str, float], stop: asyncio.Event) -> None:
    """When each event reaches events.clean: splits the latency into processors and sink."""

    def on_record(record: Any, now: float) -> None:
        seen.setdefault(str(decode(REGISTRY, record.value)["event_id"]), now)

    await follow(settings, settings.topic(EVENTS_CLEAN), on_record, stop, time.time)


async def ack_to_queryable(
    settings: Settings, rate: int, seconds: float, drain_s: float = 60
) -> dict[str, float]:
    """Post ``rate`` events/s in ten batches a second; p50/p99 from 202 to insert, and
    the part of it until the event is on events.clean."""
    acked: dict[str, float] = {}
    on_clean: dict[str, float] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_clean(settings, on_clean, stop))
    await asyncio.sleep(2)  # the watcher is at the end of the topic before events flow
    base = datetime.now(UTC) - timedelta(hours=1)
    per_tick = max(1, rate // 10)
    async with httpx.AsyncClient(base_url=settings.collector_url, timeout=60) as client:

        async def post(batch: list[dict[str, Any]]) -> None:
            response = await client.post("/v1/events/batch", json={"events": batch})
            assert response.status_code == 202 and not response.json()["rejected"]
            now = time.time()
            for event in batch:
                acked[event["event_id"]] = now

        started = time.perf_counter()
        posts = []
        for tick in range(int(seconds * 10)):
            batch = [
                lesson(f"bench-{(tick * per_tick + i) % 200}", base + timedelta(seconds=tick))
                for i in range(per_tick)
            ]
            posts.append(asyncio.create_task(post(batch)))
            await asyncio.sleep(max(0.0, started + (tick + 1) / 10 - time.perf_counter()))
        await asyncio.gather(*posts)
        sending_s = time.perf_counter() - started

        async def inserted() -> dict[str, float]:
            response = await client.post(
                f"{settings.query_url}/v1/query",
                content="SELECT toString(event_id), toUnixTimestamp64Milli(inserted_at) "
                "FROM events WHERE event_type = 'lesson_completed'",
            )
            return {row[0]: row[1] / 1000 for row in response.json()["rows"]}

        deadline = time.perf_counter() + drain_s
        found = await inserted()
        while time.perf_counter() < deadline and len(found) < len(acked):
            await asyncio.sleep(0.5)
            found = await inserted()
    stop.set()
    await watcher
    latencies = [found[e] - acked[e] for e in acked if e in found]
    to_clean = [on_clean[e] - acked[e] for e in acked if e in on_clean]
    return {
        "to_clean_p50_ms": percentile(to_clean, 0.5) * 1e3,
        "to_clean_p99_ms": percentile(to_clean, 0.99) * 1e3,
        "offered_events_per_s": len(acked) / sending_s,
        "events": len(acked),
        "queryable": len(latencies),
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }
