"""The analysts' door and the read API's edges, on real chdb.

Analysts' SQL runs on read-only sessions of its own, through ClickHouse's parser and
within limits; whatever it tries, the sink's inserts go on. Every request the API cannot
serve is a 4xx that says why, never a 500."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

from devstack.services import free_port
from learnstream.cli import main as cli
from learnstream.settings import Settings
from sinks.learner_reads import jsonable
from sinks.query_api import create_query_app
from sinks.read_sessions import ReadSessions
from sinks.writer import ClickHouseWriter
from tests.conftest import REPO, migrated_clickhouse

SECRET = "reader-secret-for-the-door-tests-0123456789"
TIME_LIMIT_S = 2.0
ROW_LIMIT = 1000
# a minute and more of hashing on two threads: only the time limit ends it early
HEAVY = "SELECT sum(sipHash64(number)) FROM numbers(4000000000)"
EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "category",
    "timestamp",
    "received_at",
    "user_id",
    "session_id",
    "organization_id",
    "is_correct",
    "properties",
    "device_info",
    "context",
    "privacy_level",
    "retention_days",
    "sample_rate",
    "schema_version",
    "source_topic",
    "source_partition",
    "source_offset",
)
README = (REPO / "README.md").read_text(encoding="utf-8")
# the README's example over daily_user_stats, as written there
README_EXAMPLE = next(
    block.strip()
    for block in re.findall(r"```sql\n(.*?)```", README, re.S)
    if "FROM daily_user_stats" in block
)


def event(kind: str, day: int, offset: int, correct: bool | None = None) -> list[Any]:
    moment = datetime(2026, 3, day, 10, tzinfo=UTC)
    return [
        str(uuid.uuid4()),
        kind,
        "learning",
        moment,
        moment,
        "u1",
        "s1",
        "org-a",
        correct,
        "{}",
        "{}",
        "{}",
        "standard",
        3650,
        1.0,
        1,
        "events.clean",
        0,
        offset,
    ]


@dataclass
class Door:
    settings: Settings
    client: Any  # the test's own client, as the sink's migrations left it
    writer: ClickHouseWriter  # the sink's ingest path
    sessions: ReadSessions
    app: FastAPI
    api: TestClient

    def ingest(self, rows: list[list[Any]], token: str) -> None:
        """An insert exactly as the sink makes it: with a deduplication token."""
        asyncio.run(self.writer.insert("events", rows, EVENT_COLUMNS, token))

    def count(self, table: str = "events") -> int:
        return int(self.client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def bearer(role: str = "system_admin", **claims: Any) -> dict[str, str]:
    body = {"sub": "root", "role": role, "exp": datetime.now(UTC) + timedelta(hours=1), **claims}
    return {"authorization": f"Bearer {jwt.encode(body, SECRET, algorithm='HS256')}"}


ADMIN = bearer()


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("door") / "data",
        devstack_home=REPO / ".devstack",
        query_port=free_port(),
        reader_token_secret=SECRET,
        analyst_max_execution_s=TIME_LIMIT_S,
        analyst_max_result_rows=ROW_LIMIT,
        analyst_max_result_bytes=200_000,
        analyst_max_memory_bytes=300_000_000,
        analyst_max_concurrent_queries=1,
    )
    with migrated_clickhouse(settings) as client:
        writer = ClickHouseWriter(client, settings.clickhouse_database)
        sessions = ReadSessions.open(settings)
        try:
            app = create_query_app(writer, sessions, SECRET)
            opened = Door(settings, client, writer, sessions, app, TestClient(app))
            # one day with a question answered, one with none: 0/0 in the README example
            opened.ingest(
                [event("question_submit", 2, 0, correct=True), event("page_view", 3, 1)],
                "seed",
            )
            yield opened
        finally:
            sessions.close()
            writer.release()


def sql(door: Door, statement: str) -> httpx.Response:
    # Starlette's test client answers with its own copy of httpx's Response
    return cast(
        httpx.Response, door.api.post("/v1/query", content=statement.encode(), headers=ADMIN)
    )


@pytest.mark.parametrize("statement", ["SELECT 'x'", "DESCRIBE TABLE events"])
@pytest.mark.parametrize("ending", ["", " APPEND", " TRUNCATE", " FORMAT JSON"])
def test_into_outfile_is_refused_and_writes_nothing(
    door: Door, tmp_path: Path, statement: str, ending: str
) -> None:
    fresh, kept = tmp_path / "fresh.txt", tmp_path / "kept.txt"
    kept.write_text("the analyst's own file\n")
    for target in (fresh, kept):
        reply = sql(door, f"{statement} INTO OUTFILE '{target}'{ending}")
        assert reply.status_code == 403, reply.text
        assert "refused INTO OUTFILE" in reply.json()["error"]
    assert not fresh.exists()
    assert kept.read_text() == "the analyst's own file\n"


def test_output_clauses_in_an_order_explain_would_take_for_its_own_are_refused(
    door: Door, tmp_path: Path
) -> None:
    """EXPLAIN AST of this raw text writes the file (the EXPLAIN takes the INTO OUTFILE);
    the door parses it as one statement first, which it is not."""
    target = tmp_path / "explained.txt"
    reply = sql(door, f"SELECT 1 FORMAT JSON INTO OUTFILE '{target}'")
    assert reply.status_code == 400, reply.text
    assert "not one valid SQL statement" in reply.json()["error"]
    reply = sql(door, f"SELECT 1 INTO OUTFILE '{target}' FORMAT JSON SETTINGS max_threads = 1")
    assert reply.status_code == 403, reply.text
    assert not target.exists()


@pytest.mark.parametrize(
    "statement,function",
    [
        ("SELECT * FROM file('/etc/hostname')", "file"),
        ("SELECT * FROM FILE('/etc/hostname', 'LineAsString')", "FILE"),
        ("SELECT file('/etc/hostname')", "file"),  # the scalar one reads files too
        ("SELECT 1 WHERE 'x' IN file('/etc/hostname', 'LineAsString')", "file"),
        ("DESCRIBE TABLE file('/etc/hostname')", "file"),
        ("SELECT * FROM url('http://127.0.0.1:9/x', CSV)", "url"),
        (
            "SELECT * FROM numbers(2) WHERE number IN (SELECT * FROM s3('http://127.0.0.1:9/x'))",
            "s3",
        ),
        ("SELECT * FROM remote('127.0.0.1', system.one)", "remote"),
        ("SELECT * FROM executable('id', TSV, 'who String')", "executable"),
        ("WITH t AS (SELECT * FROM url('http://127.0.0.1:9/x', CSV)) SELECT * FROM t", "url"),
    ],
)
def test_table_functions_outside_the_allow_list_are_refused(
    door: Door, statement: str, function: str
) -> None:
    reply = sql(door, statement)
    assert reply.status_code == 403, reply.text
    assert f"table function {function}()" in reply.json()["error"]


def test_selects_and_describe_run(door: Door) -> None:
    answers = {
        "SELECT count() AS n FROM numbers(10)": [[10]],
        "SELECT * FROM values('x UInt8', 1, 2) ORDER BY x": [[1], [2]],
        "SELECT format('{} {}', 'a', 'b')": [["a b"]],
        "SELECT * FROM (WITH t AS (SELECT number FROM numbers(3)) SELECT sum(number) FROM t "
        "UNION ALL SELECT 7) ORDER BY 1": [[3], [7]],
        "SELECT count() FROM events WHERE user_id IN (SELECT 'u1')": [[2]],
        "SELECT * FROM view(SELECT 5)": [[5]],
    }
    for statement, rows in answers.items():
        reply = sql(door, statement)
        assert reply.status_code == 200, (statement, reply.text)
        assert reply.json()["rows"] == rows, statement
    described = sql(door, "DESCRIBE TABLE daily_user_stats").json()
    assert ["questions_answered", "UInt32"] in [row[:2] for row in described["rows"]]
    # a GET works the same way
    got = door.api.get("/v1/query", params={"sql": "SELECT 1 AS one"}, headers=ADMIN)
    assert got.json() == {"columns": ["one"], "rows": [[1]]}


REFUSED = {
    "INSERT INTO events (user_id) VALUES ('intruder')": "INSERT",
    "INSERT INTO events (user_id) SELECT 'intruder'": "INSERT",
    "DROP TABLE events": "DROP",
    "TRUNCATE TABLE events": "TRUNCATE",
    "ALTER TABLE events DELETE WHERE 1": "ALTER",
    "CREATE TABLE stolen (a String) ENGINE = Memory": "CREATE",
    "OPTIMIZE TABLE events FINAL": "OPTIMIZE",
    "KILL QUERY WHERE 1": "KILL",
    "SYSTEM DROP MARK CACHE": "SYSTEM",
    "SET readonly = 0": "SET",
    "SET max_execution_time = 0": "SET",
    "SELECT 1 SETTINGS max_execution_time = 0": "SETTINGS",
    "SELECT * FROM (SELECT 1 SETTINGS max_result_rows = 0)": "SETTINGS",
    "SELECT 1 FORMAT JSON": "FORMAT",
    "SHOW TABLES": "SHOW",
    "EXPLAIN SELECT 1": "EXPLAIN",
}


def test_writes_and_setting_changes_are_refused_and_ingestion_goes_on(door: Door) -> None:
    before = door.count()
    for statement, named in REFUSED.items():
        reply = sql(door, statement)
        assert reply.status_code == 403, (statement, reply.text)
        assert f"refused {named}" in reply.json()["error"], statement
    several = sql(door, "SELECT 1; DROP TABLE events")
    assert several.status_code == 400
    assert "Multi-statements are not allowed" in several.json()["error"]
    empty = sql(door, "  -- nothing\n")
    assert empty.status_code == 400

    door.ingest([event("page_view", 4, 100)], "after-refusals")  # a sink insert still works
    assert door.count() == before + 1
    door.ingest([event("page_view", 4, 100)], "after-refusals")  # and is still deduplicated
    assert door.count() == before + 1
    reply = sql(
        door,
        "SELECT getSetting('readonly'), getSetting('max_execution_time'), "
        "getSetting('max_result_rows'), count() FROM events",
    )
    assert reply.json()["rows"] == [[1, TIME_LIMIT_S, ROW_LIMIT, before + 1]]


def test_a_session_refuses_writes_itself_and_nothing_reaches_ingestion(door: Door) -> None:
    """Past the parser too: the sessions are read-only and apart from the ingest client,
    so even a write that reached one (as before, on the ingest client) fails alone."""

    def attempt(statement: str) -> str:
        async def run() -> str:
            try:
                await door.sessions.analyst.run(lambda client: client.command(statement))
            except Exception as exc:  # the refusal is what this shows
                return str(exc)
            return "ran"

        return asyncio.run(run())

    before = door.count()
    for statement in ("INSERT INTO events (user_id) VALUES ('x')", "SET readonly = 0"):
        assert "readonly mode" in attempt(statement)
    door.ingest([event("page_view", 5, 200)], "after-direct-attempts")
    assert door.count() == before + 1
    assert sql(door, "SELECT getSetting('readonly')").json()["rows"] == [[1]]


def test_a_query_over_the_time_limit_stops_early_while_inserts_and_reads_go_on(
    door: Door,
) -> None:
    """Also the concurrency limit: one analyst query at a time here, the next one is 429."""

    async def running(fragment: str) -> None:
        def seen(client: Any) -> bool:
            found = client.query(
                "SELECT count() FROM system.processes WHERE query LIKE {q:String} "
                "AND query NOT LIKE '%system.processes%'",
                parameters={"q": f"%{fragment}%"},
            )
            return bool(found.result_rows[0][0])

        deadline = time.monotonic() + 10
        while not await door.sessions.learner.run(seen):
            assert time.monotonic() < deadline, "the heavy query never started"
            await asyncio.sleep(0.02)

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=door.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            started = time.monotonic()
            heavy = asyncio.create_task(http.post("/v1/query", content=HEAVY, headers=ADMIN))
            await running("sipHash64")
            insert_started = time.monotonic()
            await door.writer.insert(
                "events", [event("page_view", 6, 300)], EVENT_COLUMNS, "during-heavy"
            )
            inserted_s = time.monotonic() - insert_started
            insert_during_heavy = not heavy.done()
            busy = await http.post("/v1/query", content="SELECT 1", headers=ADMIN)
            learner = await http.get("/v1/learners/u1/sessions/history", headers=ADMIN)
            reads_during_heavy = not heavy.done()
            stopped = await heavy
            return {
                "inserted_s": inserted_s,
                "insert_during_heavy": insert_during_heavy,
                "busy": busy,
                "learner": learner,
                "reads_during_heavy": reads_during_heavy,
                "stopped": stopped,
                "heavy_s": time.monotonic() - started,
                "after": await http.post("/v1/query", content="SELECT 2", headers=ADMIN),
            }

    seen = asyncio.run(scenario())
    assert seen["insert_during_heavy"] and seen["inserted_s"] < TIME_LIMIT_S / 4
    assert seen["busy"].status_code == 429
    assert "too many analysts' queries at once" in seen["busy"].json()["error"]
    assert seen["busy"].headers["retry-after"] == "1"
    assert seen["learner"].status_code == 200 and seen["reads_during_heavy"]
    stopped = seen["stopped"]
    assert stopped.status_code == 422, stopped.text
    assert "LEARNSTREAM_ANALYST_MAX_EXECUTION_S=2" in stopped.json()["error"]
    assert TIME_LIMIT_S <= seen["heavy_s"] < TIME_LIMIT_S + 3
    assert seen["after"].json()["rows"] == [[2]]  # the session is free again


def test_result_size_and_memory_limits_are_4xx_naming_the_limit(door: Door) -> None:
    rows = sql(door, f"SELECT number FROM numbers({ROW_LIMIT + 1})")
    assert rows.status_code == 413
    assert "LEARNSTREAM_ANALYST_MAX_RESULT_ROWS=1000" in rows.json()["error"]
    assert sql(door, f"SELECT number FROM numbers({ROW_LIMIT})").status_code == 200
    wide = sql(door, "SELECT repeat('x', 1000) || toString(number) FROM numbers(900)")
    assert wide.status_code == 413
    assert "LEARNSTREAM_ANALYST_MAX_RESULT_BYTES=200000" in wide.json()["error"]
    memory = sql(door, "SELECT length(groupArray(number)) FROM numbers(100000000)")
    assert memory.status_code == 422
    assert "LEARNSTREAM_ANALYST_MAX_MEMORY_BYTES=300000000" in memory.json()["error"]
    unknown = sql(door, "SELECT nope FROM events")
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]


def test_a_session_whose_result_was_cut_off_answers_the_next_query_right(door: Door) -> None:
    """chdb leaves the rest of a stream cut off at the row limit on its handle; the next
    query on that session read it (IndexError, "unrecognized data found in stream")
    until failed sessions were replaced. The door has one analyst session."""
    for _ in range(3):
        cut = sql(door, "SELECT number FROM numbers(5000000)")
        assert cut.status_code == 413, cut.text[:300]
        after = sql(door, "SELECT 0 / 0 AS nan, 1.5 AS fine")
        assert after.status_code == 200, after.text[:300]
        assert after.json()["rows"] == [[None, 1.5]]


def test_nan_and_infinities_are_null_in_json(door: Door) -> None:
    reply = sql(
        door,
        "SELECT nan AS a, inf AS b, -inf AS c, [nan, 1.5] AS d, map('k', -inf) AS e, "
        "toDecimal64(1.5, 2) AS f, toIPv4('10.0.0.1') AS g, tuple(0 / 0, 'x') AS h",
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["rows"] == [
        [None, None, None, [None, 1.5], {"k": None}, "1.50", "10.0.0.1", [None, "x"]]
    ]
    assert jsonable({"scores": [float("nan"), 2.0], "at": datetime(2026, 3, 1)}) == {
        "scores": [None, 2.0],
        "at": "2026-03-01T00:00:00",
    }


def test_the_readme_example_runs_as_written(door: Door) -> None:
    assert "sum(questions_correct) / sum(questions_answered)" in README_EXAMPLE
    reply = sql(door, README_EXAMPLE)
    assert reply.status_code == 200, reply.text
    ratios = {row[1]: row[3] for row in reply.json()["rows"]}
    assert ratios["2026-03-02"] == 1.0
    assert ratios["2026-03-03"] is None  # 0 questions answered: 0/0 is NaN, sent as null


@contextmanager
def served(app: FastAPI, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_cli_prints_the_result_or_the_servers_reason(
    door: Door, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("LEARNSTREAM_QUERY_HOST", "127.0.0.1")
    monkeypatch.setenv("LEARNSTREAM_QUERY_PORT", str(port))
    monkeypatch.setenv("LEARNSTREAM_READER_TOKEN", ADMIN["authorization"].removeprefix("Bearer "))
    monkeypatch.setenv("LEARNSTREAM_DATA_DIR", str(door.settings.data_dir))
    with served(door.app, port):
        assert cli(["query", README_EXAMPLE, "--format", "csv"]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert printed[0].startswith("user_id,day,")
        assert "u1,2026-03-03,0," in printed  # null ratio: an empty cell

        with pytest.raises(SystemExit) as refused:
            cli(["query", "SELECT * FROM file('/etc/hostname')"])
        assert "403" in str(refused.value.code)
        assert "refused table function file()" in str(refused.value.code)
        with pytest.raises(SystemExit) as stopped:
            cli(["query", HEAVY])
        assert "422" in str(stopped.value.code)
        assert "LEARNSTREAM_ANALYST_MAX_EXECUTION_S" in str(stopped.value.code)

    proxy = FastAPI()

    @proxy.post("/v1/query")
    async def gateway_error() -> PlainTextResponse:
        return PlainTextResponse("upstream sink is restarting", status_code=502)

    with served(proxy, port), pytest.raises(SystemExit) as bad_gateway:
        cli(["query", "SELECT 1"])
    assert str(bad_gateway.value.code) == "query failed (502: upstream sink is restarting)"

    # no sink answering: the CLI opens the data itself, through the same door
    assert cli(["query", "SELECT count() AS n FROM numbers(3)", "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["n", "3"]
    with pytest.raises(SystemExit) as direct:
        cli(["query", "SELECT * FROM file('/etc/hostname')"])
    assert str(direct.value.code).startswith("query failed (403: refused table function file()")


def test_as_of_outside_what_clickhouse_dates_hold_is_422(door: Door) -> None:
    for path in ("sessions/stats", "sessions/warmup"):
        for as_of in ("0001-01-01", "1969-12-31", "2149-06-07", "9999-12-31"):
            reply = door.api.get(f"/v1/learners/u1/{path}", params={"as_of": as_of}, headers=ADMIN)
            assert reply.status_code == 422, (path, as_of, reply.text)
            assert reply.json()["detail"][0]["loc"] == ["query", "as_of"]
        for as_of in ("1970-01-01", "2149-06-06"):
            reply = door.api.get(f"/v1/learners/u1/{path}", params={"as_of": as_of}, headers=ADMIN)
            assert reply.status_code == 200, (path, as_of, reply.text)
    month = door.api.get(
        "/v1/learners/u1/sessions/stats",
        params={"as_of": "1970-01-01", "period": "month"},
        headers=ADMIN,
    ).json()
    assert (month["from"], month["total_sessions"]) == ("1969-12-03", 0)


def test_offsets_are_bounded_not_wrapped(door: Door) -> None:
    history = "/v1/learners/u1/sessions/history"
    reply = door.api.get(history, params={"offset": 2**32}, headers=ADMIN)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["query", "offset"]
    last = door.api.get(history, params={"offset": 1_000_000}, headers=ADMIN)
    assert last.status_code == 200 and last.json()["sessions"] == []


@pytest.mark.parametrize(
    "claims,named",
    [
        ({"role": "subscriber_admin", "org": 42}, "'org'"),
        ({"role": "teacher", "org": "org-a", "classes": "c1"}, "'classes'"),
        ({"role": "teacher", "org": "org-a", "classes": [1]}, "'classes'"),
        ({"role": "teacher_admin", "org": "org-a", "teachers": "t1"}, "'teachers'"),
        ({"role": ["system_admin"]}, "'role'"),
    ],
)
def test_reader_tokens_with_claims_of_the_wrong_type_are_401(
    door: Door, claims: dict[str, Any], named: str
) -> None:
    reply = door.api.get("/v1/learners/u1/state", headers=bearer(**claims))
    assert reply.status_code == 401, reply.text
    assert named in reply.json()["detail"] and "must be" in reply.json()["detail"]


def test_a_sql_body_that_is_not_utf8_is_400(door: Door) -> None:
    reply = door.api.post("/v1/query", content=b"SELECT '\xff\xfe'", headers=ADMIN)
    assert reply.status_code == 400
    assert "not UTF-8" in reply.json()["detail"]


def test_readyz_follows_the_sink_and_healthz_stays_ok(door: Door) -> None:
    reason: list[str | None] = ["4 attempts in a row failed: ClickHouse is down"]
    api = TestClient(create_query_app(door.writer, door.sessions, SECRET, None, lambda: reason[0]))
    assert api.get("/readyz").status_code == 503
    assert api.get("/readyz").json() == {"status": "unready", "reason": reason[0]}
    assert api.get("/healthz").json() == {"status": "ok"}
    reason[0] = None
    assert (api.get("/readyz").status_code, api.get("/readyz").json()) == (200, {"status": "ready"})
    assert TestClient(door.app).get("/readyz").json() == {"status": "ready"}
