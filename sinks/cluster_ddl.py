"""The migrations for a ClickHouse cluster, rendered from the single-node ones.

A pure function of the single-node statements (templates with ``{db}``) and a cluster
name, statement by statement, with no server involved:

- ``CREATE TABLE {db}.t ... ENGINE = XMergeTree(args)`` becomes the local table
  ``{db}.t_local ON CLUSTER c ... ENGINE = ReplicatedXMergeTree('/clickhouse/tables/
  {shard}/{db}/t_local', '{replica}', args)`` and a ``Distributed`` table ``{db}.t`` over
  it, so every query keeps its table names. Rows go to a shard by ``cityHash64(user_id)``
  where the table has a ``user_id`` (a learner's events, stats and projection keys stay
  together on one shard, so ReplacingMergeTree and FINAL see all of a key's rows), else
  ``rand()``. ``non_replicated_deduplication_window`` becomes
  ``replicated_deduplication_window``, the same guard for a replicated table.
- A materialized view reads from and writes to local tables: it fires on each node's
  inserts into its local part.
- A plain view reads the Distributed tables, so it sees every shard.
- ``ALTER TABLE`` runs on the local table; its column commands also on the Distributed one
  (a Distributed table has no indexes).
- ``DROP`` gets ``ON CLUSTER``; dropping a sharded table drops both of its tables.

Every statement gets ``ON CLUSTER``. Anything else (an insert, a table engine outside the
MergeTree family, a materialized view without ``TO``) is refused with ``ClusterDdlError``:
a new kind of migration has to be taught here, and tests/test_cluster_ddl.py renders
every migration, so that shows up in the tests, not in production.

Keywords, names and ``{db}`` are matched in the code only: comments and string literals
are blanked first (``_code``), so a comment saying ``ENGINE = MergeTree`` changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LOCAL_SUFFIX = "_local"
# {shard} and {replica} are the nodes' own macros; {db} is replaced with the database
KEEPER_PATH = "/clickhouse/tables/{{shard}}/{{db}}/{table}"
REPLICA = "{replica}"

_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE = r"\{db\}\.(?P<name>\w+)"
_IF_NOT_EXISTS = r"(?P<ine>IF\s+NOT\s+EXISTS\s+)?"
_CREATE_TABLE = re.compile(rf"\s*CREATE\s+TABLE\s+{_IF_NOT_EXISTS}{_TABLE}", re.I)
_CREATE_MV = re.compile(
    rf"\s*CREATE\s+MATERIALIZED\s+VIEW\s+{_IF_NOT_EXISTS}{_TABLE}(?P<to>\s+TO\s+)?", re.I
)
_CREATE_VIEW = re.compile(rf"\s*CREATE\s+(OR\s+REPLACE\s+)?VIEW\s+{_IF_NOT_EXISTS}{_TABLE}", re.I)
_ALTER_TABLE = re.compile(rf"\s*ALTER\s+TABLE\s+{_TABLE}", re.I)
_DROP = re.compile(rf"\s*DROP\s+(?P<kind>TABLE|VIEW)\s+(?P<ie>IF\s+EXISTS\s+)?{_TABLE}\s*$", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>\w+)\s*", re.I)
_REFERENCE = re.compile(r"\{db\}\.(?P<name>\w+)")
_COLUMN_COMMAND = re.compile(r"\s*(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR)\s+COLUMN\b", re.I)
_LOCAL_ONLY_COMMAND = re.compile(r"\s*(ADD|DROP|MATERIALIZE|CLEAR)\s+INDEX\b", re.I)
_DEDUP_WINDOW = re.compile(r"\bnon_replicated_deduplication_window\b", re.I)
_COLUMN_ITEM_KEYWORDS = {"INDEX", "PROJECTION", "CONSTRAINT"}


class ClusterDdlError(ValueError):
    """A migration statement the cluster renderer does not know how to render."""


def cluster_identifier(cluster: str) -> str:
    """The cluster name as SQL: bare when it is a plain identifier, else backquoted."""
    if not cluster:
        raise ClusterDdlError("the cluster name is empty")
    if _PLAIN_IDENTIFIER.fullmatch(cluster):
        return cluster
    return "`" + cluster.replace("\\", "\\\\").replace("`", "\\`") + "`"


def bookkeeping_for_cluster(cluster: str) -> list[str]:
    """The database on every node, and ``schema_migrations`` replicated to every node (its
    Keeper path has no ``{shard}``), so a sink on any node sees what has been applied."""
    on = f"ON CLUSTER {cluster_identifier(cluster)}"
    return [
        f"CREATE DATABASE IF NOT EXISTS {{db}} {on}",
        f"CREATE TABLE IF NOT EXISTS {{db}}.schema_migrations {on} "
        "(version String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/all/{db}/schema_migrations', '{shard}-{replica}') "
        "ORDER BY version",
    ]


def render_for_cluster(migrations: Sequence[Sequence[str]], cluster: str) -> list[list[str]]:
    """Each migration's single-node statements, in order, as the cluster's statements.

    All migrations are rendered together: a later ``ALTER TABLE {db}.events`` has to know
    that an earlier one made ``events`` a Distributed table over ``events_local``.
    """
    sharded: set[str] = set()  # tables made local + Distributed so far
    on = f"ON CLUSTER {cluster_identifier(cluster)}"
    return [
        [out for statement in statements for out in _render(statement, on, cluster, sharded)]
        for statements in migrations
    ]


def _render(statement: str, on: str, cluster: str, sharded: set[str]) -> list[str]:
    sql = statement.strip().rstrip(";").rstrip()
    code = _code(sql)
    if not code.strip():  # only a comment (0006 splits one off at a ";" ending its line)
        return []
    if match := _CREATE_TABLE.match(code):
        return _create_table(sql, code, match, on, cluster, sharded)
    if match := _CREATE_MV.match(code):
        return [_materialized_view(sql, code, match, on, sharded)]
    if match := _CREATE_VIEW.match(code):
        return [_splice(sql, [(match.end("name"), match.end("name"), f" {on}")])]
    if match := _ALTER_TABLE.match(code):
        return _alter_table(sql, code, match, on, sharded)
    if match := _DROP.match(code):
        return _drop(sql, match, on, sharded)
    raise ClusterDdlError(f"no cluster rendering for: {_first_line(code)}")


def _create_table(
    sql: str, code: str, header: re.Match[str], on: str, cluster: str, sharded: set[str]
) -> list[str]:
    name = header["name"]
    local = name + LOCAL_SUFFIX
    columns = code.find("(", header.end())
    if columns < 0 or code[header.end() : columns].strip():
        raise ClusterDdlError(f"{name}: no cluster rendering for a table without a column list")
    engine = _ENGINE.search(code, _closing(code, columns))
    family = engine["engine"] if engine else "(none)"
    if engine is None or not family.endswith("MergeTree") or family.startswith("Replicated"):
        raise ClusterDdlError(f"{name}: no cluster rendering for ENGINE = {family}")
    args, engine_end = "", engine.end("engine")
    if code.startswith("(", engine.end()):
        close = _closing(code, engine.end())
        args, engine_end = sql[engine.end() + 1 : close].strip(), close + 1
    replicated = ", ".join(
        [f"'{KEEPER_PATH.format(table=local)}'", f"'{REPLICA}'", *([args] if args else [])]
    )
    edits = [
        (header.start("name"), header.end("name"), f"{local} {on}"),
        (engine.start("engine"), engine_end, f"Replicated{family}({replicated})"),
    ]
    edits += [
        (m.start(), m.end(), "replicated_deduplication_window")
        for m in _DEDUP_WINDOW.finditer(code, engine_end)
    ]
    shard_by = "cityHash64(user_id)" if "user_id" in _column_names(code, columns) else "rand()"
    distributed = (
        f"CREATE TABLE {header['ine'] or ''}{{db}}.{name} {on} AS {{db}}.{local}\n"
        f"ENGINE = Distributed({cluster_identifier(cluster)}, {{db}}, {local}, {shard_by})"
    )
    sharded.add(name)
    return [_splice(sql, edits), distributed]


def _materialized_view(
    sql: str, code: str, header: re.Match[str], on: str, sharded: set[str]
) -> str:
    if not header["to"]:
        raise ClusterDdlError(f"{header['name']}: a materialized view needs TO <table>")
    edits = [(header.end("name"), header.end("name"), f" {on}")]
    for ref in _REFERENCE.finditer(code, header.end("name")):
        if ref["name"] not in sharded:
            raise ClusterDdlError(f"{header['name']}: {ref['name']} is not a sharded table")
        edits.append((ref.end("name"), ref.end("name"), LOCAL_SUFFIX))
    return _splice(sql, edits)


def _alter_table(
    sql: str, code: str, header: re.Match[str], on: str, sharded: set[str]
) -> list[str]:
    name = header["name"]
    if name not in sharded:
        raise ClusterDdlError(f"ALTER TABLE {name}: not a sharded table")
    commands = _split_top_level(code, header.end())
    column_commands = []
    for start, end in commands:
        if _COLUMN_COMMAND.match(code, start):
            column_commands.append(sql[start:end])
        elif not _LOCAL_ONLY_COMMAND.match(code, start):
            raise ClusterDdlError(f"ALTER TABLE {name}: no cluster rendering for {code[start:end]}")
    local = _splice(sql, [(header.start("name"), header.end("name"), f"{name}{LOCAL_SUFFIX} {on}")])
    if not column_commands:
        return [local]
    return [local, f"ALTER TABLE {{db}}.{name} {on}" + ",".join(column_commands)]


def _drop(sql: str, header: re.Match[str], on: str, sharded: set[str]) -> list[str]:
    name = header["name"]
    if header["kind"].upper() == "TABLE" and name in sharded:
        sharded.discard(name)
        drop = f"DROP TABLE {header['ie'] or ''}{{db}}."
        return [f"{drop}{name} {on}", f"{drop}{name}{LOCAL_SUFFIX} {on}"]
    return [_splice(sql, [(header.end("name"), header.end("name"), f" {on}")])]


def _code(sql: str) -> str:
    """``sql`` with comments and string literals' contents blanked, at the same offsets."""
    out = list(sql)
    i = 0
    while i < len(sql):
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = len(sql) if end < 0 else end + 2
        elif sql[i] in '`"':  # a quoted identifier: kept, but a -- in it is no comment
            end = sql.find(sql[i], i + 1)
            i = len(sql) if end < 0 else end + 1
            continue
        elif sql[i] == "'":
            end = i + 1
            while end < len(sql) and sql[end] != "'":
                end += 2 if sql[end] == "\\" else 1
            out[i + 1 : end] = " " * (min(end, len(sql)) - i - 1)
            i = end + 1
            continue
        else:
            i += 1
            continue
        out[i:end] = " " * (end - i)
        i = end
    return "".join(out)


def _closing(code: str, opening: int) -> int:
    """The offset of the parenthesis closing the one at ``opening``."""
    depth = 0
    for i in range(opening, len(code)):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ClusterDdlError(f"unbalanced parentheses: {_first_line(code[opening:])}")


def _split_top_level(code: str, start: int, end: int | None = None) -> list[tuple[int, int]]:
    """Spans of the comma-separated items in ``code[start:end]``, outside parentheses."""
    end = len(code) if end is None else end
    spans, depth, item = [], 0, start
    for i in range(start, end):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
        elif code[i] == "," and depth == 0:
            spans.append((item, i))
            item = i + 1
    spans.append((item, end))
    return spans


def _column_names(code: str, opening: int) -> set[str]:
    """The names in the column list opening at ``opening``."""
    items = _split_top_level(code, opening + 1, _closing(code, opening))
    words = (code[start:end].split(maxsplit=1) for start, end in items)
    return {w[0].strip("`") for w in words if w and w[0].upper() not in _COLUMN_ITEM_KEYWORDS}


def _splice(sql: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, text in sorted(edits, reverse=True):
        sql = sql[:start] + text + sql[end:]
    return sql


def _first_line(code: str) -> str:
    return " ".join(code.split())[:120]
