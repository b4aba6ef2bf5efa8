"""The sink's /metrics on real Kafka and real chdb: rows inserted, copies skipped and dead
letters counted; consumer lag rising while ClickHouse is away and back to 0 once the
sink has caught up; and the ``python -m sinks`` service serving it on its port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from devstack.services import ServiceGroup, free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, EVENTS_INVALID
from schemas.codec import encode
from sinks.event_sink import EventSink
from sinks.metrics import SinkMetrics, serve_metrics
from sinks.routes import event_route, invalid_route
from sinks.writer import ClickHouseWriter
from tests.test_sink_poison import SwitchableClickHouse
from tests.test_sink_redelivery import CATALOG, LESSON, REGISTRY, lesson_datum, produce

DEADLINE_S = 90.0
HOST = "127.0.0.1"


class Scrape:
    """One /metrics answer, parsed as Prometheus parses it."""

    def __init__(self, text: str) -> None:
        self.samples: list[Sample] = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """Sum of ``name``'s samples whose labels include ``labels``."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def lag(self) -> dict[tuple[str, str], float]:
        return {
            (s.labels["topic"], s.labels["partition"]): s.value
            for s in self.samples
            if s.name == "learnstream_sink_consumer_lag"
        }

    def inserted(self, table: str) -> float:
        return self.value("learnstream_sink_rows_inserted_total", table=table)


def caught_up(scrape: Scrape, partitions: int) -> bool:
    """Every owned partition reported, each read and committed to its end offset."""
    lag = scrape.lag()
    return len(lag) == partitions and all(v == 0 for v in lag.values())


async def scrape_until(
    url: str, what: str, check: Callable[[Scrape], bool], sink: asyncio.Task[None]
) -> Scrape:
    """Scrape ``url`` until ``check`` holds; fail at the deadline or if the sink stopped."""
    deadline = time.monotonic() + DEADLINE_S
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            if sink.done():
                sink.result()
                raise AssertionError(f"the sink stopped while waiting for {what}")
            scrape = Scrape((await client.get(url)).text)
            if check(scrape):
                return scrape
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {scrape.samples}"
            await asyncio.sleep(0.2)


async def _send(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(settings.topic(EVENTS_CLEAN), value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def _lessons(first: int, count: int) -> list[tuple[bytes, bytes]]:
    schema_id = REGISTRY.id_for(LESSON.subject, LESSON.schema)
    data = [lesson_datum(i) for i in range(first, first + count)]
    return [(d["user_id"].encode(), encode(schema_id, LESSON.parsed, d)) for d in data]


async def _lag_while_clickhouse_is_away(settings: Settings, clickhouse: Any) -> None:
    switch = SwitchableClickHouse(clickhouse)
    switch.away = False
    writer = ClickHouseWriter(switch, settings.clickhouse_database)
    routes = {
        settings.topic(EVENTS_CLEAN): event_route(CATALOG, REGISTRY),
        settings.topic(EVENTS_INVALID): invalid_route(),
    }
    metrics = SinkMetrics()
    sink = EventSink.create(
        settings.kafka_bootstrap, routes, settings.topic("sink"), writer, 500, 0.2, observer=metrics
    )
    port = free_port()
    server = serve_metrics(HOST, port, metrics, sink.unready_reason)
    assert server is not None
    url = f"http://{HOST}:{port}"
    owned = len(routes) * settings.topic_partitions
    task = asyncio.create_task(sink.run())
    lag = asyncio.create_task(metrics.track_lag(sink.consumer, every_s=0.3))
    try:
        # 20 lessons, a copy of the first (a re-send at a new offset), a record that
        # does not decode
        first = _lessons(0, 20)
        await _send(settings, [*first, first[0], (b"junk", b"\x00\x00\x00\x00\x07 not avro")])
        scrape = await scrape_until(
            f"{url}/metrics",
            "the first records stored",
            lambda s: s.inserted("events") == 20 and caught_up(s, owned),
            task,
        )
        assert scrape.value("learnstream_sink_rows_skipped_total", reason="copy") == 1
        assert scrape.value("learnstream_sink_dead_letters_total") == 1
        assert scrape.inserted("events_invalid") == 1  # the dead letter
        assert scrape.value("learnstream_sink_insert_seconds_count", table="events") >= 1
        assert scrape.value("learnstream_sink_retries_total") == 0

        switch.away = True
        await _send(settings, _lessons(20, 30))
        scrape = await scrape_until(
            f"{url}/metrics",
            "lag to show the 30 records not stored",
            lambda s: sum(s.lag().values()) == 30,
            task,
        )
        assert scrape.value("learnstream_sink_retries_total", operation="insert") >= 1
        assert scrape.inserted("events") == 20
        async with httpx.AsyncClient(timeout=10) as client:
            while (await client.get(f"{url}/readyz")).status_code != 503:
                assert not task.done()
                await asyncio.sleep(0.2)  # three failed attempts in a row: unready

            switch.away = False
            await scrape_until(
                f"{url}/metrics",
                "the sink to catch up",
                lambda s: s.inserted("events") == 50 and caught_up(s, owned),
                task,
            )
            assert (await client.get(f"{url}/readyz")).status_code == 200
            assert (await client.get(f"{url}/healthz")).status_code == 200
    finally:
        lag.cancel()
        sink.stop()
        await task
        server.shutdown()
        server.server_close()
    assert clickhouse.query("SELECT count() FROM events").result_rows[0][0] == 50


def test_lag_rises_while_clickhouse_is_away_and_returns_to_zero(
    settings: Settings, clickhouse: Any
) -> None:
    asyncio.run(_lag_while_clickhouse_is_away(settings, clickhouse))


def test_the_sink_service_serves_metrics_on_its_port(settings: Settings) -> None:
    url = f"http://{settings.query_host}:{settings.sink_metrics_port}"
    group = ServiceGroup(env=settings.as_env())
    group.start("sink")
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not http_ok(f"{url}/healthz"):
            assert not group.exited(), f"the sink stopped at start: {group.exited()}"
            assert time.monotonic() < deadline, "the sink's metrics endpoint never answered"
            time.sleep(0.3)
        asyncio.run(produce(settings, 10))
        clean = settings.topic(EVENTS_CLEAN)
        while True:
            assert not group.exited(), f"the sink stopped: {group.exited()}"
            scrape = Scrape(httpx.get(f"{url}/metrics", timeout=10).text)
            lag = scrape.lag()
            clean_lag = [v for (topic, _), v in lag.items() if topic == clean]
            if (
                scrape.inserted("events") == 10
                and len(clean_lag) == settings.topic_partitions
                and all(v == 0 for v in lag.values())
            ):
                break
            assert time.monotonic() < deadline, f"timed out: {scrape.samples}"
            time.sleep(0.3)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    finally:
        group.stop_all()
