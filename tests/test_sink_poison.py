"""The sink on real Kafka and real chdb: a record it can never store is a dead letter,
never a retry that stops everyone behind it; ClickHouse being away is retried, and
/readyz says so."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, EVENTS_INVALID, PROJECTIONS_USER_PROGRESS
from schemas.codec import encode
from sinks.event_sink import EventSink
from sinks.projection_rows import PROJECTION_TABLES, projection_route
from sinks.routes import Route, event_route, invalid_route
from sinks.writer import ClickHouseWriter
from tests.test_projection_tables import _encoder, _progress
from tests.test_sink_redelivery import CATALOG, LESSON, REGISTRY, lesson_datum, run_sink_until

PARTITION = 0  # every record on one partition: the bad ones sit between the good ones


def _routes(settings: Settings) -> dict[str, Route]:
    return {
        settings.topic(EVENTS_CLEAN): event_route(CATALOG, REGISTRY),
        settings.topic(EVENTS_INVALID): invalid_route(),
        settings.topic(PROJECTIONS_USER_PROGRESS): projection_route(
            PROJECTION_TABLES[PROJECTIONS_USER_PROGRESS], REGISTRY
        ),
    }


async def _send(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(settings.topic(topic), value, key=key, partition=PARTITION)
    finally:
        await producer.stop()


async def _rewind(settings: Settings, topics: list[str]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.topic("sink"),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic(t), PARTITION) for t in topics]
        consumer.assign(partitions)
        await consumer.commit({tp: 0 for tp in partitions})
    finally:
        await consumer.stop()


def _poisoned_records(settings: Settings) -> list[tuple[str, bytes, bytes]]:
    progress = _encoder("projections/user_progress.avsc")
    lesson_id = REGISTRY.id_for(LESSON.subject, LESSON.schema)
    before_1970 = {**_progress("bo", 30, 3), "last_active_date": date(1900, 1, 1)}
    after_2149 = {**_progress("cy", 40, 4), "last_active_date": date(2200, 1, 1)}
    lessons = [lesson_datum(i) for i in range(4)]
    return [
        (PROJECTIONS_USER_PROGRESS, b"ana", progress(_progress("ana", 10, 1))),
        # Avro takes these dates; ClickHouse's Date does not
        (PROJECTIONS_USER_PROGRESS, b"bo", progress(before_1970)),
        (PROJECTIONS_USER_PROGRESS, b"dee", progress(_progress("dee", 20, 2))),
        (PROJECTIONS_USER_PROGRESS, b"cy", progress(after_2149)),
        (PROJECTIONS_USER_PROGRESS, b"eve", progress(_progress("eve", 50, 5))),
        (EVENTS_CLEAN, b"u0", encode(lesson_id, LESSON.parsed, lessons[0])),
        (EVENTS_CLEAN, b"u1", encode(lesson_id, LESSON.parsed, lessons[1])),
        (EVENTS_CLEAN, b"junk", b"\x00\x00\x00\x00\x07 not avro at all"),
        (EVENTS_CLEAN, b"u2", encode(lesson_id, LESSON.parsed, lessons[2])),
        (EVENTS_CLEAN, b"u3", encode(lesson_id, LESSON.parsed, lessons[3])),
    ]


def _dead_letters(clickhouse: Any) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in clickhouse.query(
            "SELECT source_topic, source_offset, source, errors, raw FROM events_invalid "
            "ORDER BY source_topic, source_offset"
        ).result_rows
    ]


def test_rows_clickhouse_refuses_are_dead_letters_and_the_rest_is_stored_once(
    settings: Settings, clickhouse: Any
) -> None:
    asyncio.run(_send(settings, _poisoned_records(settings)))
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)

    def settled(sink: EventSink) -> bool:
        return sink.rows_inserted == 7 and sink.dead_lettered == 3

    sink = asyncio.run(run_sink_until(settings, writer, 0, _routes(settings), settled=settled))
    assert (sink.rows_inserted, sink.dead_lettered) == (7, 3)

    users = clickhouse.query("SELECT user_id FROM user_progress_current ORDER BY user_id")
    assert [r[0] for r in users.result_rows] == ["ana", "dee", "eve"]
    assert clickhouse.query("SELECT count() FROM events").result_rows[0][0] == 4
    dead = _dead_letters(clickhouse)
    assert [(topic.rsplit(".", 2)[-2:], offset) for topic, offset, *_ in dead] == [
        (["events", "clean"], 2),
        (["projections", "user_progress"], 1),
        (["projections", "user_progress"], 3),
    ]
    for _, _, source, errors, _ in dead:
        assert source == "sink"
        assert json.loads(errors)[0]["message"]  # ClickHouse's or the decoder's reason
    assert "last_active_date" in dead[1][3]  # the column that refused it is named
    assert json.loads(dead[1][4])["user_id"] == "bo"  # the row as it would have been

    # Kafka hands everything over again (as after a crash before the commit): nothing
    # is stored twice, not even the dead letters
    asyncio.run(_rewind(settings, [EVENTS_CLEAN, PROJECTIONS_USER_PROGRESS]))

    def again(sink: EventSink) -> bool:
        return sink.redelivered_skipped + sink.dead_lettered >= 5

    asyncio.run(run_sink_until(settings, writer, 0, _routes(settings), settled=again))
    assert _dead_letters(clickhouse) == dead
    assert clickhouse.query("SELECT count() FROM events").result_rows[0][0] == 4
    assert clickhouse.query("SELECT count() FROM user_progress").result_rows[0][0] == 3


class SwitchableClickHouse:
    """The real chdb client, whose inserts fail as if the server were away until
    ``back()`` is called."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.away = True

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:  # how the sink inserts
        if self.away:
            raise ConnectionError("injected: ClickHouse unreachable")
        return self._client.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_clickhouse_away_is_retried_and_reported_unready_not_dead_lettered(
    settings: Settings, clickhouse: Any
) -> None:
    lesson_id = REGISTRY.id_for(LESSON.subject, LESSON.schema)
    records = [
        (EVENTS_CLEAN, b"u", encode(lesson_id, LESSON.parsed, lesson_datum(i))) for i in range(3)
    ]
    asyncio.run(_send(settings, records))
    switch = SwitchableClickHouse(clickhouse)
    writer = ClickHouseWriter(switch, settings.clickhouse_database)
    reasons: list[str | None] = []

    def settled(sink: EventSink) -> bool:
        reasons.append(sink.unready_reason())
        if reasons[-1] is not None:
            switch.away = False  # seen unready: let the server come back
        return sink.rows_inserted == 3

    sink = asyncio.run(run_sink_until(settings, writer, 0, _routes(settings), settled=settled))
    unready = [r for r in reasons if r is not None]
    assert unready and "unreachable" in unready[0]
    assert sink.unready_reason() is None  # ready again once inserts land
    assert sink.dead_lettered == 0
    assert clickhouse.query("SELECT count() FROM events").result_rows[0][0] == 3
    assert clickhouse.query("SELECT count() FROM events_invalid").result_rows[0][0] == 0
