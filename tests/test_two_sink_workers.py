"""Two sink workers in one consumer group store each event once, as one worker does.

chdb locks its data folder to one process, so the workers share one ClickHouse through
devstack.chdb_http (ClickHouse's HTTP interface in front of chdb) and reach it as they
would a server, with ``LEARNSTREAM_CLICKHOUSE_URL``. The same log (with copies of some
events at later offsets, as the processors re-send after a crash) goes to two topic
sets: one is stored by a single worker, the other by two workers splitting its
partitions, one of which is SIGKILLed mid-stream and started again. Both databases must
hold every event exactly once, and the same rows.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.exceptions import DatabaseError

from devstack.services import ServiceGroup, free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN
from schemas.catalog import default_catalog
from schemas.codec import encode
from schemas.registry import FileSchemaRegistry
from sinks.clickhouse import connect, migrate
from tests.conftest import isolated_settings

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
LESSON = CATALOG["lesson_completed"]
T0 = datetime(2026, 3, 2, tzinfo=UTC)
CHUNK = 2500  # events per chunk; three chunks: before, during and after the kill
COPIES = 0.05  # share of events sent again at a later offset
SHIM = (sys.executable, "-m", "devstack.chdb_http")
STARTUP_S = 60
ARRIVAL_S = 120
# what both runs must agree on, row for row
ROWS = (
    "SELECT toString(event_id), event_type, user_id, organization_id, toString(timestamp), "
    "duration_seconds FROM {db}.events ORDER BY 1"
)
TOKEN = {"insert_deduplication_token": "test/0/0-0"}
PER_EVENT = "SELECT toString(event_id), count() FROM {db}.events GROUP BY 1"


def _datum(index: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": T0 + timedelta(minutes=index),
        "sent_at": None,
        "received_at": T0,
        "user_id": f"u{index % 97}",  # spread over every partition
        "session_id": None,
        "organization_id": "org-1",
        "device_info": None,
        "context": None,
        "properties": {"content_id": f"l{index}", "course_id": None, "duration_seconds": index},
        "privacy_level": "standard",
        "retention_days": 365,
        "schema_version": 1,
        "sample_rate": 1.0,
    }


def chunk_of_log(start: int, rng: random.Random) -> list[dict[str, Any]]:
    """CHUNK new events, then copies of some of them (same event, later offset)."""
    events = [_datum(i) for i in range(start, start + CHUNK)]
    return events + rng.sample(events, int(CHUNK * COPIES))


async def _produce(settings_list: list[Settings], events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings_list[0].kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    schema_id = REGISTRY.id_for(LESSON.subject, LESSON.schema)
    try:
        for datum in events:
            value = encode(schema_id, LESSON.parsed, datum)
            for settings in settings_list:  # the same log, in the same order, to each
                await producer.send(
                    settings.topic(EVENTS_CLEAN), value, key=datum["user_id"].encode()
                )
        await producer.flush()
    finally:
        await producer.stop()


def produce(settings_list: list[Settings], events: list[dict[str, Any]]) -> None:
    asyncio.run(_produce(settings_list, events))


@pytest.fixture
def clickhouse_url(tmp_path: Path) -> Iterator[str]:
    """One ClickHouse for every worker: chdb behind its HTTP interface, own process."""
    port = free_port()
    log = (tmp_path / "chdb-http.log").open("wb")
    server = subprocess.Popen(
        [*SHIM, "--data", str(tmp_path / "chdb"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not http_ok(f"{url}/ping"):
            assert server.poll() is None, (tmp_path / "chdb-http.log").read_text()
            assert time.monotonic() < deadline, "the chdb HTTP server did not start"
            time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def on_clickhouse(settings: Settings, url: str, database: str) -> Settings:
    return settings.model_copy(update={"clickhouse_url": url, "clickhouse_database": database})


def worker(settings: Settings, label: str, log: Any) -> tuple[ServiceGroup, Settings]:
    """A sink worker (``python -m sinks``) with ports of its own; ready when it returns."""
    own = settings.model_copy(update={"query_port": free_port(), "sink_metrics_port": free_port()})
    group = ServiceGroup(env=own.as_env(), out=log)
    group.start("sink", label)
    _wait(f"{label} to answer", lambda: http_ok(f"{own.query_url}/healthz"), STARTUP_S, [group])
    return group, own


def _wait(
    what: str, check: Callable[[], bool], timeout_s: float, groups: list[ServiceGroup]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for group in groups:
            assert not group.exited(), f"a sink worker stopped: {group.exited()}"
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def rows_inserted(settings: Settings) -> int:
    """The worker's own count of event rows it inserted (its Prometheus metrics)."""
    text = httpx.get(f"http://{settings.query_host}:{settings.sink_metrics_port}/metrics").text
    found = re.search(r'^learnstream_sink_rows_inserted_total\{table="events"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def owns_partitions(settings: Settings) -> bool:
    """Whether the worker owns events.clean partitions now (its lag metric names them)."""
    text = httpx.get(f"http://{settings.query_host}:{settings.sink_metrics_port}/metrics").text
    series = f'topic="{settings.topic(EVENTS_CLEAN)}"'
    return any(
        line.startswith("learnstream_sink_consumer_lag{") and series in line
        for line in text.splitlines()
    )


def test_two_workers_with_one_killed_store_what_one_worker_stores(
    kafka_bootstrap: str, settings: Settings, tmp_path: Path, clickhouse_url: str
) -> None:
    rng = random.Random(16)
    one = on_clickhouse(
        isolated_settings(kafka_bootstrap, tmp_path / "one"), clickhouse_url, "one_worker"
    )
    two = on_clickhouse(settings, clickhouse_url, "two_workers")
    workers: dict[str, tuple[ServiceGroup, Settings]] = {}
    groups: list[ServiceGroup] = []
    expected: set[str] = set()

    def stored(database: str) -> dict[str, int]:
        rows = reader.query(PER_EVENT.format(db=database)).result_rows
        return {str(event_id): int(n) for event_id, n in rows}

    def split_between_both() -> bool:
        return all(owns_partitions(workers[w][1]) for w in ("worker-1", "worker-2"))

    def produce_chunk(start: int) -> None:
        chunk = chunk_of_log(start, rng)
        expected.update(e["event_id"] for e in chunk)
        produce([one, two], chunk)

    with (tmp_path / "workers.log").open("w") as log, closing(connect(one)) as reader:
        try:
            for label, of in (("single", one), ("worker-1", two), ("worker-2", two)):
                # one after the other, each ready before the next: no two migrations at once
                workers[label] = worker(of, label, log)
                groups.append(workers[label][0])
            _wait("the two workers to split the partitions", split_between_both, 60, groups)

            produce_chunk(0)
            _wait("a quarter stored", lambda: len(stored("two_workers")) > CHUNK // 4, 60, groups)
            second, second_settings = workers["worker-2"]
            second.kill("worker-2")  # SIGKILL: what it inserted since its last commit is not
            produce_chunk(CHUNK)  # while one worker of two is down
            second.restart("worker-2")
            _wait(
                "worker-2 back",
                lambda: http_ok(f"{second_settings.query_url}/healthz"),
                STARTUP_S,
                groups,
            )
            _wait("the two workers to split the partitions again", split_between_both, 60, groups)
            produce_chunk(2 * CHUNK)
            for database in ("one_worker", "two_workers"):

                def holds_every_event(db: str = database) -> bool:
                    return expected <= set(stored(db))

                _wait(
                    f"every event in {database}",
                    holds_every_event,
                    ARRIVAL_S,
                    groups,
                )
            split = tuple(rows_inserted(workers[w][1]) for w in ("worker-1", "worker-2"))
        finally:
            for group in groups:
                group.stop_all()

        two_workers, one_worker = stored("two_workers"), stored("one_worker")
        rows = {
            db: reader.query(ROWS.format(db=db)).result_rows for db in ("one_worker", "two_workers")
        }
    assert set(two_workers) == expected and set(one_worker) == expected
    assert set(two_workers.values()) == {1}, "an event stored twice by two workers"
    assert set(one_worker.values()) == {1}
    assert rows["two_workers"] == rows["one_worker"]
    # both took part: worker-1 throughout, worker-2 after its restart
    assert split[0] > 0 and split[1] > 0, split
    print(f"\n{len(expected)} events; inserted by worker-1 / restarted worker-2: {split}")


def test_chdb_http_answers_clickhouse_connect_as_a_server(
    clickhouse_url: str, tmp_path: Path
) -> None:
    """What the sink needs of a ClickHouse server, through the interface the workers use:
    migrations, token-deduplicated inserts, large parameters (sent as a form), read-only
    sessions, and ClickHouse's error codes."""
    base = Settings(clickhouse_url=clickhouse_url, data_dir=tmp_path / "data")
    client = connect(base)
    readonly = connect(base)
    try:
        assert migrate(client, base.clickhouse_database)  # every migration applies
        table = f"{base.clickhouse_database}.events_invalid"
        columns = ["received_at", "source", "raw", "letter_id"]
        row = [datetime.now(UTC), "sink", "{}", "letter-1"]
        for _ in range(2):  # the same insert again, as after a crash: stored once
            client.insert(table, [row], column_names=columns, settings=TOKEN)
        ids = [f"letter-{i}" for i in range(5000)]  # too long for a URL
        found = client.query(
            f"SELECT letter_id, count() FROM {table} WHERE letter_id IN {{ids:Array(String)}} "
            "GROUP BY letter_id",
            parameters={"ids": ids},
        ).result_rows
        assert found == [("letter-1", 1)]

        readonly.set_client_setting("readonly", 1)
        assert readonly.query(f"SELECT count() FROM {table}").result_rows == [(1,)]
        with pytest.raises(DatabaseError) as refused:
            readonly.command(f"TRUNCATE TABLE {table}")
        assert refused.value.code == 164  # READONLY
        with pytest.raises(DatabaseError) as unknown:
            client.query("SELECT 1 FROM no_such_table")
        assert unknown.value.code == 60  # UNKNOWN_TABLE
    finally:
        readonly.close()
        client.close()
