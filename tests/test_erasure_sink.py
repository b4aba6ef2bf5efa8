"""The sink erases a learner's rows once asked, records it, and keeps them erased when
copies of their older events arrive afterwards (another topic, so another order)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from learnstream.erasure import ErasureRequest
from learnstream.settings import Settings
from learnstream.topics import REQUESTS_ERASURE
from schemas.examples import example_event
from sinks.erasure import Erasures
from sinks.writer import ClickHouseWriter
from tests.test_sink_redelivery import CATALOG, produce_examples, run_sink_until

T = datetime(2026, 3, 10, tzinfo=UTC)


def lesson(user: str, minutes: int, number: int) -> dict[str, Any]:
    event = example_event(CATALOG["lesson_completed"], T + timedelta(minutes=minutes))
    event.update(event_id=f"00000000-0000-4000-8000-{number:012d}", user_id=user)
    return event


async def request(settings: Settings, erasure: ErasureRequest) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(REQUESTS_ERASURE), erasure.to_json(), key=erasure.user_id.encode()
        )
    finally:
        await producer.stop()


def test_erasure_deletes_audits_and_keeps_late_copies_out(
    settings: Settings, clickhouse: Any
) -> None:
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)
    before = [lesson("ada", i, i) for i in range(5)] + [lesson("bob", i, 100 + i) for i in range(3)]
    asyncio.run(produce_examples(settings, before, now=T + timedelta(days=1)))
    erasures = settings.topic(REQUESTS_ERASURE)
    asyncio.run(run_sink_until(settings, writer, len(before), erasure_topic=erasures))

    erasure = ErasureRequest(
        "9b2f6c1e-0000-4000-8000-000000000001",
        "ada",
        "org_54321",
        "root",
        "system_admin",
        T + timedelta(hours=1),
    )
    late_copy = lesson("ada", 3, 3) | {"event_id": "00000000-0000-4000-8000-000000000050"}
    after = lesson("ada", 120, 51)  # ada starts again after the erasure
    asyncio.run(request(settings, erasure))
    asyncio.run(produce_examples(settings, [late_copy, after], now=T + timedelta(days=1)))
    second = asyncio.run(
        run_sink_until(
            settings,
            writer,
            2,
            erasure_topic=erasures,
            settled=lambda s: s.erasures_applied == 1 and s.erased_skipped + s.rows_inserted == 2,
        )
    )
    assert (second.erased_skipped, second.rows_inserted) == (1, 1)

    rows = clickhouse.query("SELECT user_id, count() FROM events GROUP BY user_id ORDER BY user_id")
    assert [tuple(r) for r in rows.result_rows] == [("ada", 1), ("bob", 3)]
    assert clickhouse.query(
        "SELECT sum(lessons_completed) FROM daily_user_stats WHERE user_id = 'ada'"
    ).result_rows == [(1,)]
    audit = clickhouse.query(
        "SELECT toString(audit_id), subject_user_id, actor_user_id, details FROM audit_log"
    ).result_rows
    assert [(a, u, actor) for a, u, actor, _ in audit] == [(erasure.request_id, "ada", "root")]
    assert json.loads(audit[0][3])["rows_deleted"]["events"] == 5

    # applied again (a redelivery): nothing more to delete, still one audit row, and a
    # restarted sink still knows ada is erased
    restarted = Erasures(writer)
    asyncio.run(restarted.apply(erasure))
    assert clickhouse.query("SELECT count() FROM audit_log").result_rows == [(1,)]
    fresh = Erasures(writer)
    asyncio.run(fresh.load())
    assert fresh.drops("ada", T) and not fresh.drops("ada", T + timedelta(hours=2))
    assert not fresh.drops("bob", T)
