"""The migrations rendered for a ClickHouse cluster (LEARNSTREAM_CLICKHOUSE_CLUSTER).

No cluster (Keeper, shards, replicas) runs here, so the cluster DDL is rendered and
checked, never run: every rendered statement goes through ClickHouse's own parser
(``formatQuery``, in chdb), and the checks read the parser's formatting of it. Without
the setting, the statements are today's, byte for byte.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from pydantic import ValidationError

from learnstream.settings import Settings
from sinks.clickhouse import bookkeeping_statements, migrate, migration_statements
from sinks.cluster_ddl import ClusterDdlError, render_for_cluster

CLUSTER = "analytics"
DATABASE = "learnstream"
ON_CLUSTER = f" ON CLUSTER {CLUSTER}"

Parse = Callable[[str], str]


def todays_statements(database: str) -> list[tuple[str, list[str]]]:
    """The single-node migrations as ``migrate`` ran them before the cluster renderer,
    written out again here so that a change to either shows up."""
    files = sorted(
        (f for f in resources.files("sinks.migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    out = []
    for migration in files:
        sql = migration.read_text(encoding="utf-8")
        statements = [s.strip() for s in sql.split(";\n") if s.strip().strip(";").strip()]
        out.append(
            (
                migration.name.removesuffix(".sql"),
                [s.rstrip(";").replace("{db}", database) for s in statements],
            )
        )
    return out


TODAYS_BOOKKEEPING = (
    f"CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations "
    "(version String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)


@pytest.fixture(scope="module")
def parse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parse]:
    """ClickHouse's parser: a statement as ``formatQuery`` formats it, or its syntax error.
    Closed after the module: chdb serves one data folder per process."""
    folder = tmp_path_factory.mktemp("chdb-parser")
    client = clickhouse_connect.get_client(interface="chdb", path=str(folder))

    def formatted(statement: str) -> str:
        result = client.query("SELECT formatQuery(%(sql)s)", parameters={"sql": statement})
        return str(result.result_rows[0][0])

    try:
        yield formatted
    finally:
        client.close()


def _only_comments(statement: str) -> bool:
    return not re.sub(r"--[^\n]*", "", statement).strip()


@pytest.fixture(scope="module")
def cluster(parse: Parse) -> list[tuple[str, str]]:
    """Every statement the sink runs on a cluster, in order, as (version, formatted)."""
    statements = [("bookkeeping", s) for s in bookkeeping_statements(DATABASE, CLUSTER)]
    for version, rendered in migration_statements(DATABASE, CLUSTER):
        statements += [(version, s) for s in rendered]
    return [(version, parse(s)) for version, s in statements]


@pytest.fixture(scope="module")
def single_node(parse: Parse) -> list[tuple[str, str]]:
    return [
        (version, parse(s))
        for version, statements in todays_statements(DATABASE)
        for s in statements
        if not _only_comments(s)  # see test_a_comment_only_statement_is_left_out
    ]


def _created_table(formatted: str) -> str | None:
    match = re.match(rf"CREATE TABLE (?:IF NOT EXISTS )?{DATABASE}\.(\w+)\b", formatted)
    return match[1] if match else None


def _engine(formatted: str) -> str | None:
    match = re.search(r"^ENGINE = (\w+)", formatted, re.M)
    return match[1] if match else None


def test_without_a_cluster_the_statements_are_todays_byte_for_byte() -> None:
    assert Settings().clickhouse_cluster is None
    assert migration_statements(DATABASE) == todays_statements(DATABASE)
    assert migration_statements(DATABASE, None) == todays_statements(DATABASE)
    assert bookkeeping_statements(DATABASE) == [TODAYS_BOOKKEEPING]


class RecordingClient:
    """Stands in for a ClickHouse client: records what ``migrate`` sends."""

    def __init__(self, done: set[str]) -> None:
        self.done = done
        self.commands: list[str] = []
        self.inserted: list[str] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> Any:
        assert sql == f"SELECT version FROM {DATABASE}.schema_migrations"
        return type("Result", (), {"result_rows": [[v] for v in sorted(self.done)]})()

    def insert(self, table: str, rows: list[list[str]], column_names: list[str]) -> None:
        assert table == f"{DATABASE}.schema_migrations" and column_names == ["version"]
        self.inserted += [row[0] for row in rows]


def test_migrate_without_a_cluster_sends_todays_commands() -> None:
    client = RecordingClient(done={"0001_events"})
    applied = migrate(client, DATABASE)
    pending = [(v, s) for v, s in todays_statements(DATABASE) if v != "0001_events"]
    assert client.commands == [TODAYS_BOOKKEEPING] + [s for _, ss in pending for s in ss]
    assert applied == client.inserted == [v for v, _ in pending]


def test_migrate_with_a_cluster_sends_the_rendered_statements() -> None:
    client = RecordingClient(done=set())
    applied = migrate(client, DATABASE, CLUSTER)
    rendered = migration_statements(DATABASE, CLUSTER)
    assert client.commands == bookkeeping_statements(DATABASE, CLUSTER) + [
        s for _, statements in rendered for s in statements
    ]
    assert applied == client.inserted == [v for v, _ in todays_statements(DATABASE)]


def test_every_rendered_statement_parses_and_is_ddl_on_the_cluster(
    cluster: list[tuple[str, str]],
) -> None:
    # every migration is rendered (and the fixture had each statement parsed)
    versions = {version for version, _ in todays_statements(DATABASE)}
    assert {version for version, _ in cluster} == {"bookkeeping", *versions}
    for _, formatted in cluster:
        header = formatted.split("\n", 1)[0]
        assert re.match(r"(CREATE|ALTER|DROP)\b", header), formatted  # all of it is DDL
        assert header.endswith(ON_CLUSTER) or f"{ON_CLUSTER} " in header, formatted


def test_every_mergetree_engine_is_replicated_with_a_keeper_path_of_its_own(
    cluster: list[tuple[str, str]],
) -> None:
    paths = []
    for _, formatted in cluster:
        engine = _engine(formatted)
        if engine is None or not engine.endswith("MergeTree"):
            continue
        assert engine.startswith("Replicated"), formatted
        table = _created_table(formatted)
        args = re.search(rf"ENGINE = {engine}\('([^']*)', '([^']*)'", formatted)
        assert args is not None, formatted
        shard = "all" if table == "schema_migrations" else "{shard}"  # on every node
        assert args[1] == f"/clickhouse/tables/{shard}/{DATABASE}/{table}"
        assert "{replica}" in args[2]
        paths.append(args[1])
    assert len(paths) == len(set(paths)) == 10


def test_each_distributed_table_is_over_a_local_table_created_before_it(
    cluster: list[tuple[str, str]], single_node: list[tuple[str, str]]
) -> None:
    local_columns: dict[str, str] = {}  # replicated local table -> its formatted columns
    distributed = {}
    for _, formatted in cluster:
        table, engine = _created_table(formatted), _engine(formatted)
        if table and engine and engine.startswith("Replicated"):
            local_columns[table] = formatted.split("\nENGINE", 1)[0]
        if engine != "Distributed":
            continue
        match = re.fullmatch(
            rf"CREATE TABLE IF NOT EXISTS {DATABASE}\.(\w+){ON_CLUSTER} AS {DATABASE}\.(\w+)\n"
            rf"ENGINE = Distributed\({CLUSTER}, {DATABASE}, (\w+), (.+)\)",
            formatted,
        )
        assert match is not None, formatted
        name, source, local, sharding_key = match.groups()
        assert source == local == f"{name}_local" and local in local_columns
        has_user_id = "`user_id` " in local_columns[local]
        assert sharding_key == ("cityHash64(user_id)" if has_user_id else "rand()"), name
        distributed[name] = sharding_key
    # every table of today keeps its name, now for the Distributed table over its shards
    todays_tables = {_created_table(f) for _, f in single_node if _engine(f)}
    assert set(distributed) == todays_tables
    assert distributed["events"] == distributed["user_progress"] == "cityHash64(user_id)"
    assert distributed["events_invalid"] == "rand()"


def test_materialized_views_read_from_and_write_to_local_tables(
    cluster: list[tuple[str, str]],
) -> None:
    local = {_created_table(f) for _, f in cluster if (_engine(f) or "").startswith("Replicated")}
    views = [f for _, f in cluster if f.startswith("CREATE MATERIALIZED VIEW")]
    assert len(views) == 3
    for formatted in views:
        target = re.search(rf" TO {DATABASE}\.(\w+)\n", formatted)
        source = re.search(rf"^FROM {DATABASE}\.(\w+)$", formatted, re.M)
        assert target is not None and source is not None, formatted
        assert target[1] in local and str(target[1]).endswith("_local")
        assert source[1] == "events_local" and source[1] in local


def test_apart_from_the_cluster_every_statement_is_todays(
    cluster: list[tuple[str, str]], single_node: list[tuple[str, str]]
) -> None:
    """Undo what the renderer does (ON CLUSTER, _local, Replicated engines, the replicated
    dedup window), leave out what it adds (Distributed tables and their ALTERs), and
    ClickHouse's parser formats exactly today's statements."""
    distributed = {_created_table(f) for _, f in cluster if _engine(f) == "Distributed"}
    undone = []
    for version, formatted in cluster:
        if version == "bookkeeping" or _engine(formatted) == "Distributed":
            continue
        altered = re.match(rf"ALTER TABLE {DATABASE}\.(\w+) ", formatted)
        if altered and altered[1] in distributed:
            continue
        text = formatted.replace(ON_CLUSTER, "")
        text = re.sub(
            r"Replicated(\w*MergeTree)\('/clickhouse/tables/\{shard\}/\w+/\w+', '\{replica\}'"
            r"(, )?",
            r"\1(",
            text,
        )
        text = re.sub(r"(\w*MergeTree)\(\)", r"\1", text)
        text = re.sub(r"\b(\w+)_local\b", r"\1", text)
        text = text.replace(
            " replicated_deduplication_window", " non_replicated_deduplication_window"
        )
        undone.append((version, text))
    assert undone == single_node


def test_the_distributed_tables_get_the_column_changes_but_no_index(
    cluster: list[tuple[str, str]],
) -> None:
    alters = [f for _, f in cluster if f.startswith("ALTER TABLE")]
    on_distributed = 0
    for before, formatted in itertools.pairwise(alters):
        table = re.match(rf"ALTER TABLE {DATABASE}\.(\w+) ", formatted)
        assert table is not None
        if table[1].endswith("_local"):
            continue
        on_distributed += 1
        # the local table's ALTER comes first, with the same column commands
        assert before.startswith(f"ALTER TABLE {DATABASE}.{table[1]}_local{ON_CLUSTER}")
        assert "INDEX" not in formatted
        commands = formatted.split("\n", 1)[1]
        assert commands.strip("() \n") in before
    assert on_distributed == 5  # 0003 (events, events_invalid), 0004, 0006, 0008
    assert any("ADD INDEX" in f and "events_invalid_local" in f for f in alters)


def test_no_statement_is_only_a_comment() -> None:
    """Splitting at ";\\n" once gave a statement that was only a comment (a comment line
    of 0006 ended with ";"): chdb takes it, a server's parser calls it an empty query."""
    for _, statements in todays_statements(DATABASE) + migration_statements(DATABASE, CLUSTER):
        assert not any(_only_comments(s) for s in statements)


def test_comments_and_literals_do_not_steer_the_renderer(parse: Parse) -> None:
    statement = (
        "-- {db}.nowhere ENGINE = Log; ALTER TABLE {db}.x\n"
        "CREATE TABLE {db}.t (user_id String COMMENT 'ENGINE = Log, see {db}.other') "
        "/* ENGINE = Memory */ ENGINE = MergeTree ORDER BY user_id"
    )
    ((local, over),) = render_for_cluster([[statement]], CLUSTER)
    assert local == (
        "-- {db}.nowhere ENGINE = Log; ALTER TABLE {db}.x\n"
        f"CREATE TABLE {{db}}.t_local{ON_CLUSTER} "
        "(user_id String COMMENT 'ENGINE = Log, see {db}.other') /* ENGINE = Memory */ "
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{db}/t_local', '{replica}') "
        "ORDER BY user_id"
    )
    assert over.endswith(f"Distributed({CLUSTER}, {{db}}, t_local, cityHash64(user_id))")
    for sql in (local, over):
        parse(sql.replace("{db}", DATABASE))


@pytest.mark.parametrize(
    "statements",
    [
        ["INSERT INTO {db}.t SELECT 1"],
        ["CREATE TABLE {db}.t (a Int8) ENGINE = Memory"],
        ["CREATE TABLE {db}.t (a Int8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a"],
        ["CREATE TABLE {db}.t AS {db}.other"],
        ["CREATE MATERIALIZED VIEW {db}.v ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a"],
        ["CREATE MATERIALIZED VIEW {db}.v TO {db}.t AS SELECT a FROM {db}.unknown"],
        ["ALTER TABLE {db}.unknown ADD COLUMN a Int8"],
        [
            "CREATE TABLE {db}.t (a Int8) ENGINE = MergeTree ORDER BY a",
            "ALTER TABLE {db}.t MODIFY TTL now()",
        ],
    ],
    ids=["insert", "memory", "replicated", "no-columns", "mv-inner", "mv-unknown", "alter", "ttl"],
)
def test_what_the_renderer_does_not_know_is_refused(statements: list[str]) -> None:
    with pytest.raises(ClusterDdlError):
        render_for_cluster([statements], CLUSTER)


def test_a_cluster_name_that_is_no_plain_identifier_is_quoted(parse: Parse) -> None:
    assert Settings(clickhouse_cluster="prod-eu.1").clickhouse_cluster == "prod-eu.1"
    for bad in ("", "two words", "c;DROP TABLE x", "`c`", "{db}"):
        with pytest.raises(ValidationError):
            Settings(clickhouse_cluster=bad)
    for version, statements in migration_statements(DATABASE, "prod-eu.1"):
        for statement in statements:
            formatted = parse(statement)
            assert " ON CLUSTER `prod-eu.1`" in formatted.split("\n", 1)[0], version
            if "Distributed(" in formatted:
                assert "Distributed(`prod-eu.1`, " in formatted


def test_the_sink_refuses_a_cluster_without_a_clickhouse_server(tmp_path: Path) -> None:
    from sinks.__main__ import serve

    settings = Settings(data_dir=tmp_path, clickhouse_cluster=CLUSTER)
    with pytest.raises(SystemExit, match="needs LEARNSTREAM_CLICKHOUSE_URL"):
        asyncio.run(serve(settings))
    assert not (tmp_path / "chdb").exists()  # refused before opening anything
