"""The hostile-input suite: every input that once stopped a stage, against the real stack.

Collector, processors and sink run as processes, as ``make run`` starts them, on the
real broker and real chdb. Each case sends what a careless client, a broken device
clock or a hostile caller sent, and asserts the three things the product promises:
a 4xx whose message names the problem, a dead letter in ClickHouse, and that a normal
event of another learner on the same partition still reaches ClickHouse and the
projections afterwards, so nothing stopped behind it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from learnstream.topics import EVENTS_INVALID, EVENTS_RAW, PROJECTIONS_USER_PROGRESS
from learnstream_sdk.client import Tracker
from processors.offsets import OffsetProbe
from schemas.catalog import default_catalog
from schemas.codec import encode
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event
from tests.conftest import isolated_settings
from tests.live_stack import LiveStack, live_stack
from tests.test_projection_tables import _encoder, _progress

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
READER_SECRET = "hostile-suite-reader-secret-0123456789"
ADMIN = {"sub": "ops", "role": "system_admin", "org": None}


def reader_token(claims: dict[str, Any]) -> str:
    expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    return jwt.encode({**claims, "exp": expires}, READER_SECRET, algorithm="HS256")


ARRIVAL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    settings = isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("hostile")).model_copy(
        update={"reader_token_secret": READER_SECRET, "analyst_max_execution_s": 3.0}
    )
    with live_stack(settings, reader_token(ADMIN)) as running:
        running.arrival_timeout_s = ARRIVAL_TIMEOUT_S
        yield running


def _now_iso(minutes_ago: int = 5) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def lesson(user_id: str, **overrides: Any) -> dict[str, Any]:
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": _now_iso(),
        "user_id": user_id,
        "device_info": {"timezone": "Europe/Berlin"},
        "properties": {"content_id": "lesson-1"},
    }
    event.update(overrides)
    return event


def partition_of(key: str, partitions: int) -> int:
    """Kafka's default partitioner, as the collector's producer uses it."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def neighbour_of(key: str, partitions: int) -> str:
    """Another learner whose events share ``key``'s partition."""
    wanted = partition_of(key, partitions)
    for i in range(10_000):
        candidate = f"neighbour-{uuid.uuid4().hex[:8]}-{i}"
        if partition_of(candidate, partitions) == wanted:
            return candidate
    raise AssertionError("no neighbour found")


def assert_neighbour_still_flows(stack: LiveStack, bad_key: str) -> None:
    """A normal event of another learner on the same partition reaches ClickHouse's
    events table and the learner's projection row."""
    neighbour = neighbour_of(bad_key, stack.settings.topic_partitions)
    event = lesson(neighbour)
    response = stack.collector.post("/v1/events", json=event)
    assert response.status_code == 202, response.text
    stack.wait_for(
        f"{neighbour}'s event and projection",
        lambda: (
            stack.sql(
                "SELECT (SELECT count() FROM events WHERE toString(event_id) = {e}), "
                "(SELECT count() FROM user_progress_current WHERE user_id = {u})",
                e=event["event_id"],
                u=neighbour,
            )
            == [[1, 1]]
        ),
    )


def assert_dead_letter(stack: LiveStack, marker: str, field_name: str) -> None:
    """The refused input is in events_invalid, with an error naming the field."""

    def stored() -> bool:
        rows = stack.sql("SELECT errors FROM events_invalid WHERE position(raw, {m}) > 0", m=marker)
        return any(field_name in row[0] for row in rows)

    stack.wait_for(f"the dead letter of {marker} naming {field_name}", stored)


def post_json(stack: LiveStack, path: str, body: bytes, **headers: str) -> httpx.Response:
    return stack.collector.post(
        path, content=body, headers={"content-type": "application/json", **headers}
    )


@dataclass(frozen=True)
class Refusal:
    """One hostile event: what is sent, and what the answer must say."""

    name: str
    make: Callable[[str], dict[str, Any]]  # user_id -> the event
    field: str
    says: str
    status: int = 422


REFUSED_EVENTS = [
    Refusal(
        ".NET DateTime.MinValue timestamp",
        lambda u: lesson(u, timestamp="0001-01-01T00:00:00Z"),
        "timestamp",
        "not a plausible device clock value",
    ),
    Refusal(
        "epoch in New York: a local date before 1970",
        lambda u: lesson(
            u, timestamp="1970-01-01T00:00:00Z", device_info={"timezone": "America/New_York"}
        ),
        "timestamp",
        "before 2000-01-01",
    ),
    Refusal(
        "1900",
        lambda u: lesson(u, timestamp="1900-01-01T00:00:00Z"),
        "timestamp",
        "not a plausible device clock value",
    ),
    Refusal(
        "sent_at year 1: skew correction would move it to 4052",
        lambda u: lesson(u, sent_at="0001-01-01T00:00:00Z"),
        "sent_at",
        "not a plausible device clock value",
    ),
    Refusal(
        "sent_at 9999",
        lambda u: lesson(u, sent_at="9999-12-31T23:59:59Z"),
        "sent_at",
        "not a plausible device clock value",
    ),
    Refusal(
        "offset pushing year 1 before datetime.min",
        lambda u: lesson(u, timestamp="0001-01-01T00:00:00+01:00"),
        "timestamp",
        "outside the representable range",
    ),
    Refusal(
        "400-digit number in a double field",
        lambda u: {
            **lesson(u, event_type="quiz_completed"),
            "properties": {"content_id": "q", "score": int("9" * 400)},
        },
        "properties.score",
        "finite",
    ),
    Refusal(
        "40k unknown keys",
        lambda u: {**lesson(u), "properties": {f"k{i}": i for i in range(40_000)}},
        "properties.k",
        "unknown field",
    ),
    Refusal(
        "300k CJK characters",
        lambda u: lesson(u, properties={"content_id": "字" * 300_000}),
        "properties.content_id",
        "longer than",
    ),
    Refusal(
        "100k-character map key",
        lambda u: {
            **lesson(u, event_type="search_performed"),
            "properties": {"query": "x", "filters_applied": {"k" * 100_000: "v"}},
        },
        "properties.filters_applied",
        "longer than 256",
    ),
    Refusal(
        "30k-entry map",
        lambda u: {
            **lesson(u, event_type="search_performed"),
            "properties": {"query": "x", "filters_applied": {f"k{i}": "v" for i in range(30_000)}},
        },
        "properties.filters_applied",
        "more than 1000 entries",
    ),
    Refusal("empty user_id", lambda u: lesson(""), "user_id", "shorter than 1"),
]


@pytest.mark.parametrize("case", REFUSED_EVENTS, ids=[c.name for c in REFUSED_EVENTS])
def test_a_refused_event_is_explained_kept_and_blocks_nobody(
    stack: LiveStack, case: Refusal
) -> None:
    user = f"hostile-{uuid.uuid4().hex[:8]}"
    event = case.make(user)
    response = stack.collector.post(
        "/v1/events",
        content=json.dumps(event, ensure_ascii=False).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == case.status, response.text[:500]
    errors = response.json()["errors"]
    assert any(e["field"].startswith(case.field) and case.says in e["message"] for e in errors), (
        errors[:5]
    )
    assert len(errors) <= 101  # a long list is cut, and says how much was left out
    assert_dead_letter(stack, event["event_id"], case.field)
    assert_neighbour_still_flows(stack, event["user_id"] or user)


def test_a_batch_with_a_huge_invalid_event_still_takes_the_good_one(stack: LiveStack) -> None:
    good = lesson(f"hostile-{uuid.uuid4().hex[:8]}")
    bad = lesson(good["user_id"], properties={"content_id": "x" * 2_000_000})
    odd = lesson(good["user_id"], properties={"content_id": "\ud800"})  # refused alone too
    response = post_json(
        stack, "/v1/events/batch", json.dumps({"events": [good, bad, odd]}).encode()
    )
    assert response.status_code == 202, response.text[:500]
    body = response.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    stack.wait_for(
        "the good event",
        lambda: (
            stack.sql(
                "SELECT count() FROM events WHERE toString(event_id) = {e}", e=good["event_id"]
            )
            == [[1]]
        ),
    )
    assert_dead_letter(stack, bad["event_id"], "properties.content_id")


@dataclass(frozen=True)
class BadBody:
    name: str
    body: bytes
    headers: dict[str, str]
    status: int
    says: str
    field: str = "(body)"  # "(event)": the event's own shape, refused alone in a batch


def _deep(marker: str, depth: int) -> bytes:
    return ('{"marker": "' + marker + '", "x": ' + "[" * depth + "]" * depth + "}").encode()


BAD_BODIES = [
    BadBody("10,000-deep JSON", _deep("{m}", 10_000), {}, 400, "nested more than"),
    BadBody("40-deep JSON", _deep("{m}", 40), {}, 400, "nested more than", "(event)"),
    BadBody(
        "duplicate keys",
        b'{"marker": "{m}", "event_type": "lesson_completed", "event_type": "quiz_completed"}',
        {},
        400,
        "more than once",
        "(event)",
    ),
    BadBody(
        "a lone surrogate escape",
        b'{"marker": "{m}", "user_id": "\\ud800"}',
        {},
        400,
        "not valid Unicode",
        "(event)",
    ),
    BadBody("not UTF-8", b'{"marker": "{m}", "x": "\xff\xfe"}', {}, 400, "not UTF-8"),
    BadBody("no content type", b'{"marker": "{m}"}', {"content-type": ""}, 415, "application/json"),
    BadBody(
        "text/notjson", b'{"marker": "{m}"}', {"content-type": "text/notjson"}, 415, "text/notjson"
    ),
    BadBody(
        "gzip without Content-Encoding",
        gzip.compress(b'{"marker": "{m}"}'),
        {},
        400,
        "not UTF-8",
    ),
    BadBody(
        "unsupported Content-Encoding",
        b'{"marker": "{m}"}',
        {"content-encoding": "br"},
        415,
        "gzip",
    ),
]


@pytest.mark.parametrize("case", BAD_BODIES, ids=[c.name for c in BAD_BODIES])
def test_a_bad_body_is_a_4xx_and_a_dead_letter(stack: LiveStack, case: BadBody) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    body = case.body.replace(b"{m}", marker.encode())
    if case.name.startswith("gzip"):
        body = gzip.compress(gzip.decompress(case.body).replace(b"{m}", marker.encode()))
    headers = {"content-type": "application/json", **case.headers}
    if headers["content-type"] == "":
        del headers["content-type"]
    response = stack.collector.post("/v1/events", content=body, headers=headers)
    assert response.status_code == case.status, response.text[:500]
    (error,) = response.json()["errors"]
    assert error["field"] == case.field and case.says in error["message"], error
    if not case.name.startswith("gzip"):  # the dead letter keeps what was sent, as text
        assert_dead_letter(stack, marker, case.field)
    assert_neighbour_still_flows(stack, marker)


def test_gzip_bodies_are_taken_and_a_gzip_bomb_is_413(stack: LiveStack) -> None:
    event = lesson(f"gz-{uuid.uuid4().hex[:8]}")
    response = post_json(
        stack,
        "/v1/events",
        gzip.compress(json.dumps(event).encode()),
        **{"content-encoding": "gzip"},
    )
    assert response.status_code == 202, response.text
    marker = f"bomb-{uuid.uuid4().hex}"
    spaces = b" " * 50_000_000  # 50 MB inflated, 50 kB sent
    bomb = gzip.compress(b'{"marker": "' + marker.encode() + b'", "events": [' + spaces + b"]}")
    response = post_json(stack, "/v1/events/batch", bomb, **{"content-encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert "decompressed body is larger than" in response.json()["errors"][0]["message"]
    assert_dead_letter(stack, marker, "(body)")  # the head of what it inflated to


def _raw_http(port: int, head: bytes, body_chunks: Iterator[bytes]) -> tuple[int, float]:
    """Send a request over a bare socket; the status line and how long the answer took.
    The server may answer and close before the client finished sending: that's the point."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


def test_a_300_mb_body_is_refused_without_being_read(stack: LiveStack) -> None:
    port = stack.settings.collector_port
    unread = "SELECT count() FROM events_invalid WHERE position(errors, 'larger than 1000000')"
    before = stack.sql(unread)[0][0]
    declared = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 300000000\r\n\r\n"
    )
    status, seconds = _raw_http(port, declared, iter([b"{" * 1000]))
    assert status == 413
    assert seconds < 5
    chunked = (
        b"POST /v1/events/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    marker = f"chunked-{uuid.uuid4().hex}"
    head = ('{"marker": "' + marker + '", "events": [').encode()
    megabyte = b"100000\r\n" + (head + b" " * 0x100000)[:0x100000] + b"\r\n"
    status, seconds = _raw_http(port, chunked, (megabyte for _ in range(300)))
    assert status == 413  # cut at the 5 MB batch limit, not read to the end
    # the unread one is kept with its reason (nothing of it was read); the cut one with
    # the head of what was read
    stack.wait_for("the unread body's dead letter", lambda: stack.sql(unread)[0][0] > before)
    assert_dead_letter(stack, marker, "(body)")
    assert_neighbour_still_flows(stack, "any-learner")


def test_records_already_in_the_log_that_the_rules_cannot_take_are_dead_letters(
    stack: LiveStack,
) -> None:
    """Older collectors, or other writers, may have put a year-1 event into events.raw:
    the processors dead-letter it and carry on with the partition."""
    user = f"legacy-{uuid.uuid4().hex[:8]}"
    outcome = validate_event(CATALOG, lesson(user), datetime.now(UTC))
    assert isinstance(outcome, Accepted)
    datum = {**outcome.datum, "timestamp": datetime(1, 1, 1, tzinfo=UTC), "received_at": None}
    event_type = outcome.event_type
    value = encode(REGISTRY.id_for(event_type.subject, event_type.schema), event_type.parsed, datum)

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(stack.settings.topic(EVENTS_RAW), value, key=user.encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    stack.wait_for(
        "the processors' dead letter",
        lambda: (
            stack.sql(
                "SELECT count() FROM events_invalid WHERE source LIKE 'processors%' "
                "AND position(raw, {e}) > 0",
                e=outcome.datum["event_id"],
            )
            == [[1]]
        ),
    )
    assert_neighbour_still_flows(stack, user)


def test_a_snapshot_clickhouse_refuses_is_a_dead_letter_and_the_sink_goes_on(
    stack: LiveStack,
) -> None:
    """A local date ClickHouse's Date cannot hold stopped the whole sink before."""
    bad, good = f"old-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"
    progress = _encoder("projections/user_progress.avsc")
    records = [
        (bad, progress({**_progress(bad, 10, 1), "last_active_date": date(1900, 1, 1)})),
        (good, progress(_progress(good, 20, 2))),
    ]

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in records:  # one partition: the good one waits behind the bad
                await producer.send_and_wait(
                    stack.settings.topic(PROJECTIONS_USER_PROGRESS),
                    value,
                    key=key.encode(),
                    partition=0,
                )
        finally:
            await producer.stop()

    asyncio.run(produce())
    stack.wait_for(
        "the good snapshot",
        lambda: (
            stack.sql("SELECT count() FROM user_progress_current WHERE user_id = {u}", u=good)
            == [[1]]
        ),
    )
    assert_dead_letter(stack, bad, "(record)")
    assert_neighbour_still_flows(stack, bad)


def test_no_invalid_event_can_wedge_the_sdk_outbox(stack: LiveStack, tmp_path: Path) -> None:
    """The SDK takes a per-event 4xx as final: every hostile event is reported and
    dropped, the good ones are delivered, and nothing is left queued."""
    user = f"sdk-{uuid.uuid4().hex[:8]}"
    tracker = Tracker(stack.settings.collector_url, tmp_path / "outbox.db", background=False)
    try:
        good = [tracker.track("lesson_completed", {"content_id": "l"}, user_id=user)]
        hostile = [
            tracker.track(
                "lesson_completed",
                {"content_id": "l"},
                user_id=user,
                timestamp=datetime(1, 1, 1, tzinfo=UTC),
            ),
            tracker.track("lesson_completed", {"content_id": "l"}, user_id=""),
            tracker.track(
                "quiz_completed", {"content_id": "q", "score": int("9" * 400)}, user_id=user
            ),
            tracker.track("lesson_completed", {"content_id": "字" * 300_000}, user_id=user),
            tracker.track("lesson_completed", {f"k{i}": i for i in range(40_000)}, user_id=user),
        ]
        good.append(tracker.track("lesson_completed", {"content_id": "l2"}, user_id=user))
        result = tracker.flush()
        assert (result.accepted, result.rejected, result.pending) == (len(good), len(hostile), 0)
        assert tracker.pending == 0
    finally:
        tracker.close()
    stack.wait_for(
        "the SDK's good events",
        lambda: (
            stack.sql(
                "SELECT count() FROM events WHERE user_id = {u} AND source_topic LIKE '%clean'",
                u=user,
            )
            == [[len(good)]]
        ),
    )


# --- the analysts' door and the read API, on the sink process itself ----------------


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO events (event_id) VALUES (generateUUIDv4())",
        "DROP TABLE events",
        "TRUNCATE TABLE events",
        "SET readonly = 0",
        "SYSTEM STOP MERGES",
        "SELECT 1 SETTINGS readonly = 0",
    ],
)
def test_an_analyst_cannot_write_and_ingestion_goes_on(stack: LiveStack, statement: str) -> None:
    response = stack.analyst(statement)
    assert response.status_code == 403, response.text
    assert "refused" in response.json()["error"]
    assert_neighbour_still_flows(stack, statement)  # the ingest session is untouched


@pytest.mark.parametrize("how", ["", " APPEND", " TRUNCATE"])
def test_into_outfile_and_file_functions_are_refused_and_write_nothing(
    stack: LiveStack, tmp_path: Path, how: str
) -> None:
    target = tmp_path / "stolen.txt"
    response = stack.analyst(f"SELECT 'x' INTO OUTFILE '{target}'{how}")
    assert response.status_code == 403, response.text
    assert "INTO OUTFILE" in response.json()["error"]
    response = stack.analyst(f"SELECT * FROM file('{target}', 'LineAsString')")
    assert response.status_code == 403, response.text
    assert "file()" in response.json()["error"]
    assert not target.exists()


def test_a_runaway_query_is_stopped_and_blocks_no_learner_read(stack: LiveStack) -> None:
    """It runs on an analysts' session with a time limit; learner reads and ingestion
    have sessions of their own and answer meanwhile."""
    heavy: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: heavy.append(
            stack.analyst("SELECT sum(sipHash64(number)) FROM numbers(400000000000)")
        )
    )
    started = time.monotonic()
    thread.start()
    time.sleep(0.5)  # the query is running
    read = stack.reads.get("/v1/learners/nobody/blind-spots")
    read_done = time.monotonic()
    thread.join()
    assert read.status_code in (200, 404), read.text
    assert read_done - started < 2.5, "the learner read waited behind the analyst's query"
    (answer,) = heavy
    assert answer.status_code == 422, answer.text
    assert "LEARNSTREAM_ANALYST_MAX_EXECUTION_S" in answer.json()["error"]
    assert_neighbour_still_flows(stack, "after-a-heavy-query")


def test_a_huge_result_is_refused_not_sent(stack: LiveStack) -> None:
    response = stack.analyst("SELECT number FROM numbers(5000000)")
    assert response.status_code == 413, response.text[:300]
    assert "LEARNSTREAM_ANALYST_MAX_RESULT_ROWS" in response.json()["error"]


def test_nan_and_infinity_come_back_as_null_and_the_readme_example_runs(stack: LiveStack) -> None:
    response = stack.analyst("SELECT 0/0 AS nan, 1/0 AS inf, -1/0 AS minus_inf, 1.5 AS fine")
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [[None, None, None, 1.5]]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r"```sql\n(.*?)```", readme, re.S)
    assert any("sum(questions_correct) / sum(questions_answered)" in e for e in examples)
    for example in examples:  # every SQL example in the README runs as written
        response = stack.analyst(example)
        assert response.status_code == 200, (example, response.text)


def test_a_bad_sql_body_is_400_and_the_cli_prints_the_reason_not_a_traceback(
    stack: LiveStack,
) -> None:
    response = stack.analyst(b"SELECT '\xff\xfe'")
    assert response.status_code == 400, response.text
    env = {
        **os.environ,
        **stack.settings.as_env(),
        "LEARNSTREAM_READER_TOKEN": reader_token(ADMIN),
    }
    cli = subprocess.run(
        [sys.executable, "-m", "learnstream.cli", "query", "DROP TABLE events"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0
    assert "403" in cli.stderr + cli.stdout and "refused" in cli.stderr + cli.stdout
    assert "Traceback" not in cli.stderr


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/learners/ana/sessions/stats?as_of=0001-01-01", 422),
        ("/v1/learners/ana/sessions/warmup?as_of=9999-12-31", 422),
        ("/v1/learners/ana/sessions/history?offset=4294967296", 422),
    ],
)
def test_read_parameters_out_of_range_are_422(stack: LiveStack, path: str, status: int) -> None:
    response = stack.reads.get(path)
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"sub": "t", "role": "teacher", "org": 42, "classes": ["c1"]}, "org"),
        ({"sub": "t", "role": "teacher", "org": "o", "classes": "c1"}, "classes"),
        ({"sub": "", "role": "student", "org": "o"}, "sub"),
    ],
)
def test_a_reader_token_with_a_claim_of_the_wrong_type_is_401(
    stack: LiveStack, claims: dict[str, Any], named: str
) -> None:
    response = httpx.get(
        f"{stack.settings.query_url}/v1/learners/me/state",
        headers={"authorization": f"Bearer {reader_token(claims)}"},
        timeout=30,
    )
    assert response.status_code == 401, response.text
    assert named in response.json()["detail"]


def test_readiness_reports_the_sink_ready(stack: LiveStack) -> None:
    assert stack.reads.get("/readyz").status_code == 200
    port = stack.settings.processors_health_port
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200


def test_a_refusal_sent_again_is_one_dead_letter(stack: LiveStack) -> None:
    """A batch re-posted after a 503 (or a single post retried) refuses its invalid
    events again; ClickHouse keeps one dead letter per refused event and stage."""
    user = f"retry-{uuid.uuid4().hex[:8]}"
    bad = [lesson(user, timestamp="0001-01-01T00:00:00Z") for _ in range(2)]
    good = lesson(user)
    batch = json.dumps({"events": [bad[0], good, bad[1]]}).encode()
    single = json.dumps(lesson(user, sent_at="9999-12-31T23:59:59Z")).encode()
    for _ in range(3):
        assert post_json(stack, "/v1/events/batch", batch).json()["accepted"] == 1
        assert post_json(stack, "/v1/events", single).status_code == 422
    marker = json.loads(single)["event_id"]
    ids = [bad[0]["event_id"], bad[1]["event_id"], marker]
    count_sql = "SELECT count() FROM events_invalid WHERE position(raw, {e}) > 0"
    for event_id in ids:
        assert_dead_letter(stack, event_id, "timestamp" if event_id != marker else "sent_at")
    stack.wait_for("the sink to consume every copy", lambda: sink_consumed(stack, EVENTS_INVALID))
    for event_id in ids:
        assert stack.sql(count_sql, e=event_id) == [[1]], event_id


def sink_consumed(stack: LiveStack, topic: str) -> bool:
    """The sink's group has committed everything on ``topic`` (all copies were seen)."""
    probe = OffsetProbe(
        stack.settings.kafka_bootstrap,
        stack.settings.topic(topic),
        stack.settings.topic("learnstream-sink"),
    )

    async def snapshot() -> tuple[dict[int, int], dict[int, int | None]]:
        try:
            return await probe.snapshot(set(range(stack.settings.topic_partitions)))
        finally:
            await probe.stop()

    ends, committed = asyncio.run(snapshot())
    return all(committed.get(p) == end for p, end in ends.items() if end > 0)
