"""The sink on real Kafka and real chdb: each event stored once, even when Kafka redelivers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, EVENTS_INVALID
from schemas.catalog import default_catalog
from schemas.codec import encode
from schemas.examples import example_event
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event
from sinks.clickhouse import migrate
from sinks.event_sink import EventSink
from sinks.routes import Route, event_route, invalid_route
from sinks.writer import ClickHouseWriter
from tests.conftest import REPO

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
LESSON = CATALOG["lesson_completed"]
T0 = datetime(2026, 1, 20, tzinfo=UTC)


def lesson_datum(index: int) -> dict[str, Any]:
    # spread over three months so inserts split into several single-month parts
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": T0 + timedelta(days=index % 70, minutes=index),
        "sent_at": None,
        "received_at": T0,
        "user_id": f"u{index % 7}",
        "session_id": None,
        "organization_id": "org-1",
        "device_info": None,
        "context": None,
        "properties": {"content_id": f"l{index}", "course_id": None, "duration_seconds": index},
        "privacy_level": "standard",
        "retention_days": 10950,  # the longest the schema allows
        "schema_version": 1,
        "sample_rate": 1.0,
    }


async def produce(settings: Settings, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    schema_id = REGISTRY.id_for(LESSON.subject, LESSON.schema)
    try:
        for i in range(count):
            datum = lesson_datum(i)
            await producer.send(
                settings.topic(EVENTS_CLEAN),
                encode(schema_id, LESSON.parsed, datum),
                key=datum["user_id"].encode(),
            )
        await producer.flush()
    finally:
        await producer.stop()


async def run_sink_until(
    settings: Settings,
    writer: ClickHouseWriter,
    rows: int,
    routes: dict[str, Route] | None = None,
    erasure_topic: str | None = None,
    settled: Callable[[EventSink], bool] | None = None,
) -> EventSink:
    """Run a sink until it has handled ``rows`` records (or ``settled`` says so), then a
    second more, so anything it would wrongly insert as well has arrived."""
    routes = routes or {
        settings.topic(EVENTS_CLEAN): event_route(CATALOG, REGISTRY),
        settings.topic(EVENTS_INVALID): invalid_route(),
    }
    sink = EventSink.create(
        settings.kafka_bootstrap,
        routes,
        settings.topic("sink"),
        writer,
        500,
        0.2,
        erasure_topic=erasure_topic,
    )

    def handled(s: EventSink) -> bool:
        return s.rows_inserted + s.redelivered_skipped + s.copies_skipped >= rows

    done = settled or handled
    task = asyncio.create_task(sink.run())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not done(sink):
            if task.done():
                task.result()
            assert asyncio.get_running_loop().time() < deadline, (
                f"sink reached {sink.rows_inserted} inserted + {sink.redelivered_skipped} "
                f"redelivered + {sink.copies_skipped} copies skipped, "
                f"{sink.erasures_applied} erasures, of {rows}"
            )
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let anything extra it would wrongly insert arrive
    finally:
        sink.stop()
        await task
    return sink


async def rewind_group(settings: Settings) -> None:
    """Commit offset 0 everywhere: Kafka will hand every message to the sink again."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.topic("sink"),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.topic(topic), p)
            for topic in (EVENTS_CLEAN, EVENTS_INVALID)
            for p in range(settings.topic_partitions)
        ]
        consumer.assign(partitions)
        await consumer.commit({tp: 0 for tp in partitions})
    finally:
        await consumer.stop()


def test_redelivered_batches_are_not_stored_twice(settings: Settings, clickhouse: Any) -> None:
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)
    count = 1200

    async def scenario() -> tuple[EventSink, EventSink]:
        await produce(settings, count)
        first = await run_sink_until(settings, writer, count)
        await rewind_group(settings)
        # everything is redelivered; the sink must skip what ClickHouse holds
        second = await run_sink_until(settings, writer, count)
        return first, second

    try:
        first, second = asyncio.run(scenario())
        assert (first.rows_inserted, first.redelivered_skipped) == (count, 0)
        assert (second.rows_inserted, second.redelivered_skipped) == (0, count)
        _, rows = asyncio.run(
            writer.query(
                "SELECT count(), uniqExact(event_id), uniqExact(source_partition, source_offset) "
                "FROM events"
            )
        )
        assert rows == [[count, count, count]]  # plain count(), no FINAL
        _, months = asyncio.run(
            writer.query(
                "SELECT toYYYYMM(timestamp) AS m, count() FROM events GROUP BY m ORDER BY m"
            )
        )
        assert [m for m, _ in months] == [202601, 202602, 202603]
    finally:
        writer.release()  # the clickhouse fixture closes the client


def test_longest_retention_does_not_expire_rows_early(clickhouse: Any) -> None:
    """Regression: a TTL past DateTime's 2106 limit wrapped around and expired rows."""
    client = clickhouse
    columns = [
        "event_id",
        "event_type",
        "timestamp",
        "received_at",
        "retention_days",
        "source_topic",
        "source_partition",
        "source_offset",
    ]
    late = datetime(2099, 12, 31, tzinfo=UTC)
    rows = [[uuid.uuid4(), "lesson_completed", late, late, 10950, "t", 0, i] for i in range(3)]
    for row in rows:  # separate parts, then a forced merge that applies TTL
        client.insert("events", [row], column_names=columns)
    client.command("OPTIMIZE TABLE events FINAL")
    assert client.query("SELECT count() FROM events").result_rows == [(3,)]


def test_migrations_apply_once(settings: Settings, clickhouse: Any) -> None:
    applied = clickhouse.query("SELECT version FROM schema_migrations ORDER BY version")
    files = sorted(f.stem for f in (REPO / "sinks" / "migrations").glob("*.sql"))
    assert [v for (v,) in applied.result_rows] == files
    assert "0003_sender_columns" in files
    assert migrate(clickhouse, settings.clickhouse_database) == []
    # 0003's columns are there, after 0001's tables were created without them
    clickhouse.query("SELECT client_ip, original_timestamp FROM events LIMIT 0")
    clickhouse.query("SELECT key_id FROM events_invalid LIMIT 0")


async def produce_dead_letters(settings: Settings, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(count):
            letter = {
                "raw": f"{{bad {i}",
                "source": "collector",
                "received_at": "2026-02-01T10:00:00+00:00",
                "errors": [{"field": "(body)", "message": "is not valid JSON"}],
            }
            await producer.send(settings.topic(EVENTS_INVALID), json.dumps(letter).encode())
        await producer.send(settings.topic(EVENTS_INVALID), b"\xff not json at all")
        await producer.flush()
    finally:
        await producer.stop()


def test_dead_letters_are_stored_once_and_unreadable_ones_kept(
    settings: Settings, clickhouse: Any
) -> None:
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)

    async def scenario() -> EventSink:
        await produce_dead_letters(settings, 40)
        first = await run_sink_until(settings, writer, 41)
        assert (first.rows_inserted, first.redelivered_skipped) == (41, 0)
        await rewind_group(settings)
        return await run_sink_until(settings, writer, 41)

    try:
        again = asyncio.run(scenario())
        assert (again.rows_inserted, again.redelivered_skipped) == (0, 41)
        _, rows = asyncio.run(
            writer.query(
                "SELECT count(), countIf(has(error_fields, '(body)')), "
                "countIf(has(error_fields, '(dead letter)')) FROM events_invalid"
            )
        )
        assert rows == [[41, 40, 1]]
    finally:
        writer.release()  # the clickhouse fixture closes the client


async def produce_examples(
    settings: Settings, events: list[dict[str, Any]], now: datetime | None = None
) -> None:
    """Validate each event as the collector would at ``now`` and put it on events.clean."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            rate = event.get("sample_rate")  # set by the processors, never by senders
            event = {k: v for k, v in event.items() if k != "sample_rate"}
            outcome = validate_event(CATALOG, event, now or T0 + timedelta(days=30))
            assert isinstance(outcome, Accepted), outcome
            if rate is not None:
                outcome.datum["sample_rate"] = rate
            kind = outcome.event_type
            value = encode(REGISTRY.id_for(kind.subject, kind.schema), kind.parsed, outcome.datum)
            await producer.send(settings.topic(EVENTS_CLEAN), value, key=b"usr_12345")
        await producer.flush()
    finally:
        await producer.stop()


def test_frequently_queried_properties_are_typed_columns(
    settings: Settings, clickhouse: Any
) -> None:
    answer = example_event(CATALOG["question_submit"], T0)
    answer["properties"].update(topic_id="fractions", is_correct=True)
    session = example_event(CATALOG["session_completed"], T0)
    session["properties"].update(
        practice_mode_id="listening",
        scores=[
            {"drill_id": "d1", "drill_name": "One", "score": 50.0},
            {"drill_id": "d2", "drill_name": "Two", "score": 70.0},
        ],
    )
    session["event_id"] = str(uuid.uuid4())
    session["context"] = {"course_id": "course-9"}
    asyncio.run(produce_examples(settings, [answer, session]))
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)
    asyncio.run(run_sink_until(settings, writer, 2))
    rows = clickhouse.query(
        "SELECT event_type, is_correct, topic_id, practice_mode_id, drill_ids, course_id "
        "FROM events ORDER BY event_type"
    ).result_rows
    assert rows == [
        ("question_submit", True, "fractions", "", [], ""),
        ("session_completed", None, "", "listening", ["d1", "d2"], "course-9"),
    ]


def test_an_event_resent_at_a_new_offset_is_stored_once(
    settings: Settings, clickhouse: Any
) -> None:
    """The processors re-send an event after a crash; count() stays exact without FINAL,
    whether the copy arrives in the same batch or long after the first was stored."""
    first, other = lesson_datum(1), lesson_datum(2)
    schema_id = REGISTRY.id_for(LESSON.subject, LESSON.schema)

    async def send(data: list[dict[str, Any]]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for datum in data:
                value = encode(schema_id, LESSON.parsed, datum)
                await producer.send(settings.topic(EVENTS_CLEAN), value, key=b"same-learner")
            await producer.flush()
        finally:
            await producer.stop()

    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)
    asyncio.run(send([first, other, first]))  # a copy inside one batch
    in_batch = asyncio.run(run_sink_until(settings, writer, 3))
    asyncio.run(send([first]))  # a copy after the first was stored
    later = asyncio.run(run_sink_until(settings, writer, 1))
    count = clickhouse.query("SELECT count() FROM events").result_rows[0][0]
    assert count == 2
    assert (in_batch.copies_skipped, later.copies_skipped) == (1, 1)


class FlakyClickHouse:
    """The real chdb client, with faults injected into its first inserts: one refused
    outright, one that lands but whose answer is lost (the ambiguous case)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.inserts = 0

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:  # how the sink inserts
        self.inserts += 1
        if self.inserts == 1:
            raise ConnectionError("injected: ClickHouse unreachable")
        if self.inserts == 2:
            self._client.raw_insert(*args, **kwargs)
            raise TimeoutError("injected: insert landed, answer lost")
        return self._client.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_clickhouse_errors_mid_batch_lose_and_double_nothing(
    settings: Settings, clickhouse: Any
) -> None:
    asyncio.run(produce(settings, 120))
    flaky = FlakyClickHouse(clickhouse)
    writer = ClickHouseWriter(flaky, settings.clickhouse_database)
    asyncio.run(run_sink_until(settings, writer, 120))
    assert flaky.inserts > 2  # both faults were hit and retried
    assert clickhouse.query("SELECT count() FROM events").result_rows[0][0] == 120
    distinct = clickhouse.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0]
    assert distinct == 120
