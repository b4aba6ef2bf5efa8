"""The sink beside a raw clickhouse-connect insert of the same rows, and the time from the
collector's 202 until an event can be queried in ClickHouse.

Throughput: the same encoded events are put on events.clean; the sink streams them into
``events`` (consume, decode, dedup checks, planned inserts, commits). The baselines
insert the very same rows, already built, in batches of the sink's size: row by row as
most code does, and as columns (clickhouse-connect's faster form). Each of the three
writes into a database of its own with the full schema, materialized views included, so
all pay for the same views; they run on one chdb client in the same process, in
interleaved rounds. The ratio is against the faster baseline of the same round.

Latency (``python -m bench --only sink-latency``): with collector, processors and sink
running as services with their default settings, events are posted at a steady rate;
each event's latency is its ``inserted_at`` (set by ClickHouse when the part is
written, the moment it becomes queryable) minus the moment its 202 arrived.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import clickhouse_connect
import httpx
from aiokafka import AIOKafkaProducer

from bench.stats import percentile
from bench.tail import follow
from bench.workload import CATALOG, REGISTRY, encoded, events, lesson
from devstack.services import ServiceGroup, free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, ensure_topics
from schemas.codec import decode
from sinks.clickhouse import migrate
from sinks.event_sink import EventSink
from sinks.gc_tuning import settle_after_start_up
from sinks.routes import event_route
from sinks.rows import EVENT_COLUMNS, UuidsAsText, event_row
from sinks.writer import ClickHouseWriter


async def _put_on_clean(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(settings.topic(EVENTS_CLEAN), value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _run_sink(
    settings: Settings, writer: ClickHouseWriter, count: int, batch: int, group: str
) -> tuple[float, float]:
    """(wall, CPU) seconds from the moment the sink owns its partitions until every row
    is stored: joining the consumer group (a second or so, fixed) is left out, fetching
    and everything after it is counted."""
    sink = EventSink.create(
        settings.kafka_bootstrap,
        {settings.topic(EVENTS_CLEAN): event_route(CATALOG, UuidsAsText(REGISTRY))},
        settings.topic(group),
        writer,
        batch,
        1.0,
    )
    task = asyncio.create_task(sink.run())
    try:
        while not sink.consumer.assignment():
            if task.done():
                task.result()
            await asyncio.sleep(0.001)
        started, cpu = time.perf_counter(), time.process_time()
        while sink.rows_inserted < count:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        sink.stop()
        await task


def _raw_inserts(client: Any, database: str, rows: list[list[Any]], batch: int) -> float:
    """The library alone: prebuilt rows into the same tables, views included."""
    started = time.perf_counter()
    for first in range(0, len(rows), batch):
        client.insert(
            f"{database}.events", rows[first : first + batch], column_names=list(EVENT_COLUMNS)
        )
    return time.perf_counter() - started


def _raw_columns(client: Any, database: str, rows: list[list[Any]], batch: int) -> float:
    """The same, handing clickhouse-connect columns instead of rows (its faster form)."""
    started = time.perf_counter()
    for first in range(0, len(rows), batch):
        chunk = rows[first : first + batch]
        client.insert(
            f"{database}.events",
            [list(column) for column in zip(*chunk, strict=True)],
            column_names=list(EVENT_COLUMNS),
            column_oriented=True,
        )
    return time.perf_counter() - started


def _daily_totals(client: Any, database: str) -> tuple[Any, ...]:
    result = client.query(
        f"SELECT uniqExact(user_id, day), sum(events), sum(lessons_completed) "
        f"FROM {database}.daily_user_stats"
    )
    return tuple(result.result_rows[0])


def throughput(
    settings: Settings, workload: list[dict[str, Any]], chdb_path: Path, batch: int, rounds: int = 2
) -> dict[str, float]:
    """Rounds of: raw row inserts, raw column inserts, the sink; each into a database of
    its own with the full schema (``events`` and its materialized views), so all three
    pay for the same views. Interleaved, so drift on a shared machine hits all three."""
    records = [encoded(e) for e in workload]
    asyncio.run(_put_on_clean(settings, records))
    client = clickhouse_connect.get_client(interface="chdb", path=str(chdb_path))
    rows = [
        event_row(CATALOG, decode(REGISTRY, value), settings.topic(EVENTS_CLEAN), 0, offset)
        for offset, (_, value) in enumerate(records)
    ]
    # as the sink process does after start-up (sinks.__main__); the baselines gain too
    thresholds = gc.get_threshold()
    settle_after_start_up()
    # (wall seconds, CPU seconds of the whole process, ClickHouse's threads included):
    # on a shared machine the wall time moves with the neighbours, the CPU time much less
    figures: dict[str, list[tuple[float, float]]] = {"raw": [], "raw_columns": [], "sink": []}
    for round_ in range(rounds):
        databases = {name: f"bench_{name}_{round_}" for name in figures}
        for database in databases.values():
            client.command(f"CREATE DATABASE {database}")
            migrate(client, database)
        cpu = time.process_time()
        wall = _raw_inserts(client, databases["raw"], rows, batch)
        figures["raw"].append((wall, time.process_time() - cpu))
        cpu = time.process_time()
        wall = _raw_columns(client, databases["raw_columns"], rows, batch)
        figures["raw_columns"].append((wall, time.process_time() - cpu))
        writer = ClickHouseWriter(client, databases["sink"])
        figures["sink"].append(
            asyncio.run(_run_sink(settings, writer, len(rows), batch, f"bench-sink-{round_}"))
        )
        writer.release()
        stored = client.query(f"SELECT count() FROM {databases['sink']}.events").result_rows[0][0]
        assert stored == len(rows), f"sink stored {stored} of {len(rows)}"
        totals = {_daily_totals(client, database) for database in databases.values()}
        assert len(totals) == 1, f"daily_user_stats differ: {totals}"
    client.close()
    gc.set_threshold(*thresholds)  # the benchmarks after this one run as they did
    result: dict[str, float] = {"rows": len(rows), "rounds": rounds}
    for name, taken in figures.items():
        for round_, (wall, cpu) in enumerate(taken):
            result[f"{name}_rows_per_s_{round_ + 1}"] = len(rows) / wall
            result[f"{name}_rows_per_cpu_s_{round_ + 1}"] = len(rows) / cpu
        result[f"{name}_rows_per_s"] = len(rows) / min(wall for wall, _ in taken)
    return result


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
    in_sink = [found[e] - on_clean[e] for e in acked if e in found and e in on_clean]
    return {
        "to_clean_p50_ms": percentile(to_clean, 0.5) * 1e3,
        "to_clean_p99_ms": percentile(to_clean, 0.99) * 1e3,
        "in_sink_p50_ms": percentile(in_sink, 0.5) * 1e3,
        "in_sink_p99_ms": percentile(in_sink, 0.99) * 1e3,
        "offered_events_per_s": len(acked) / sending_s,
        "events": len(acked),
        "queryable": len(latencies),
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


@dataclass(frozen=True)
class Options:
    events: int = 60_000
    batch: int = 20_000
    rounds: int = 2
    rate: int = 1_000  # events/s for 202-to-queryable
    seconds: float = 60.0
    throughput: bool = True  # False: the latency run only (--only sink-latency)


@dataclass
class Results:
    options: Options
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    speed: dict[str, float] | None = None
    delay: dict[str, float] | None = None


def _wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"bench: timed out waiting for {what}")


def _latency(
    base: Settings, options: Options, tmp: Path, log: TextIO, log_path: Path
) -> dict[str, float]:
    settings = base.model_copy(
        update={
            "topic_prefix": "bq.",
            "collector_port": free_port(),
            "query_port": free_port(),
            "data_dir": tmp / "sink-latency",
        }
    )
    asyncio.run(ensure_topics(settings))
    group = ServiceGroup(env=settings.as_env(), out=log)
    for name in ("collector", "processors", "sink"):
        group.start(name)
    try:
        _wait_for(lambda: http_ok(f"{settings.collector_url}/readyz"), 60, "collector")
        _wait_for(lambda: http_ok(f"{settings.query_url}/healthz"), 90, "sink")
        _wait_for(
            lambda: "Worker]: Ready" in log_path.read_text(errors="replace"),
            90,
            "processors to start",
        )
        return asyncio.run(ack_to_queryable(settings, options.rate, options.seconds))
    finally:
        group.stop_all()


def run(base: Settings, options: Options, tmp: Path, log_path: Path) -> Results:
    """The sink beside raw inserts of the same rows; then 202-to-queryable latency."""
    results = Results(options, os.getloadavg(), os.getloadavg())
    if options.throughput:
        settings = base.model_copy(update={"topic_prefix": "bs."})
        asyncio.run(ensure_topics(settings))
        results.speed = throughput(
            settings,
            events(options.events, seed=4),
            tmp / "sink-chdb",
            options.batch,
            options.rounds,
        )
    with log_path.open("a") as log:
        results.delay = _latency(base, options, tmp, log, log_path)
    results.load_after = os.getloadavg()
    return results


def report(results: Results) -> None:
    before = " / ".join(f"{x:.2f}" for x in results.load_before)
    after = " / ".join(f"{x:.2f}" for x in results.load_after)
    print(f"\nload average (1/5/15 min): {before} before, {after} after")
    speed, delay = results.speed, results.delay
    if speed is not None:
        rounds = int(speed["rounds"])
        print(
            f"\n## Sink ({speed['rows']:.0f} events, batches of {results.options.batch}, "
            f"{rounds} interleaved rounds; every path into events and its views)\n"
        )
        print(
            "| path | "
            + " | ".join(f"round {r + 1}: rows/s | rows per CPU s" for r in range(rounds))
            + " |"
        )
        print("|---|" + "---|---|" * rounds)
        for name, label in (
            ("raw", "raw clickhouse-connect insert of built rows"),
            ("raw_columns", "raw clickhouse-connect insert of built columns"),
            ("sink", "sink: consume, decode, dedup checks, insert, commit"),
        ):
            figures = " | ".join(
                f"{speed[f'{name}_rows_per_s_{r + 1}']:.0f} | "
                f"{speed[f'{name}_rows_per_cpu_s_{r + 1}']:.0f}"
                for r in range(rounds)
            )
            print(f"| {label} | {figures} |")
        for unit in ("rows_per_s", "rows_per_cpu_s"):
            ratios = [
                speed[f"sink_{unit}_{r + 1}"]
                / max(speed[f"raw_{unit}_{r + 1}"], speed[f"raw_columns_{unit}_{r + 1}"])
                for r in range(rounds)
            ]
            print(
                f"\nsink / faster raw insert, same round, {unit.replace('_', ' ')}: "
                + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            )
    if delay is not None:
        print(
            f"\n## Collector 202 to queryable in ClickHouse "
            f"({results.options.rate} events/s for {results.options.seconds:.0f} s)\n"
        )
        print(
            "| offered events/s | events | queryable within 60 s | p50 ms | p99 ms "
            "| 202 to events.clean: p50 ms | p99 ms | events.clean to queryable: p50 ms "
            "| p99 ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {delay['offered_events_per_s']:.0f} | {delay['events']:.0f} | "
            f"{delay['queryable']:.0f} | {delay['p50_ms']:.0f} | {delay['p99_ms']:.0f} | "
            f"{delay['to_clean_p50_ms']:.0f} | {delay['to_clean_p99_ms']:.0f} | "
            f"{delay['in_sink_p50_ms']:.0f} | {delay['in_sink_p99_ms']:.0f} |"
        )
