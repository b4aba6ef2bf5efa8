"""The analysts' door: which raw SQL runs, and within which limits.

ClickHouse's own parser decides what a statement is, never text matching:
``formatQuery`` (a pure function; the SQL travels as a bound parameter) turns the SQL
into exactly one statement in canonical form, or fails; ``EXPLAIN AST`` of that canonical
form shows its syntax tree, which is checked here. The canonical form matters: EXPLAIN AST
of raw text such as ``SELECT 1 FORMAT JSON INTO OUTFILE 'f'`` hands the trailing
INTO OUTFILE to the EXPLAIN itself, which then writes the file (measured on chdb 26.9);
canonical text puts every clause where the explained statement takes it.

What may run: one SELECT (WITH, UNION, INTERSECT, EXCEPT, subqueries) or DESCRIBE, without
INTO OUTFILE, FORMAT or SETTINGS, reading tables and only the table functions that touch
nothing outside the database. The statement that runs is the canonical one that was
checked. Limits are session settings of the analysts' sessions (see ``session_settings``),
set before ``readonly=1``, so nothing an analyst sends can change or outlive them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from learnstream.refusal import Refusal
from learnstream.settings import Settings

# Table functions that read only generated data, given literals or the database's own
# tables. Every other one (file, url, s3, remote, mysql, executable, python, ...) reaches
# files, networks or other servers, so anything not listed is refused, new ones included.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "primes",
        "values",
        "generate_series",
        "generateSeries",
        "generateRandom",
        "null",
        "view",
        "merge",
        # also the scalar format('{} {}', a, b); as a table function it parses given text
        "format",
    }
)
_ALLOWED_LOWER = frozenset(name.lower() for name in ALLOWED_TABLE_FUNCTIONS)
# the statements that may run (SELECT, DESCRIBE), and the root children of their own
_OWN_CHILDREN = {"SelectWithUnionQuery": {"ExpressionList"}, "DescribeQuery": {"TableExpression"}}
# any other root child is an output clause
_OUTPUT_CLAUSES = {"Literal": "INTO OUTFILE", "Identifier": "FORMAT", "Set": "SETTINGS"}

_FIXED_SETTINGS = "refused SETTINGS: analysts' queries run with fixed settings and limits"
_READONLY = 164
_TIMEOUT_EXCEEDED = 159
_MEMORY_LIMIT_EXCEEDED = 241
_TOO_MANY_ROWS_OR_BYTES = 396


class QueryRefused(Refusal):
    """A 4xx for the analyst: the status and what was refused, in words."""


@dataclass(frozen=True)
class AnalystLimits:
    max_execution_s: float
    max_result_rows: int
    max_result_bytes: int
    max_memory_bytes: int
    max_threads: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AnalystLimits:
        return cls(
            max_execution_s=settings.analyst_max_execution_s,
            max_result_rows=settings.analyst_max_result_rows,
            max_result_bytes=settings.analyst_max_result_bytes,
            max_memory_bytes=settings.analyst_max_memory_bytes,
            max_threads=settings.analyst_max_threads,
        )

    def session_settings(self) -> list[tuple[str, Any]]:
        """In order: readonly=1 last, since it forbids changing any setting after it."""
        return [
            ("max_execution_time", self.max_execution_s),
            ("timeout_overflow_mode", "throw"),
            ("max_result_rows", self.max_result_rows),
            ("max_result_bytes", self.max_result_bytes),
            ("result_overflow_mode", "throw"),
            ("max_memory_usage", self.max_memory_bytes),
            ("max_threads", self.max_threads),
            ("readonly", 1),
        ]


@dataclass(frozen=True)
class _Node:
    depth: int
    kind: str
    name: str  # a function's name; empty for other nodes


def _tree(explained: str) -> list[_Node]:
    """EXPLAIN AST lines, e.g. ``   Function numbers (alias n) (children 1)``."""
    nodes = []
    for line in explained.splitlines():
        body = line.lstrip(" ")
        kind, _, rest = body.partition(" ")
        name = rest.split(" ", 1)[0] if kind == "Function" else ""
        nodes.append(_Node(len(line) - len(body), kind, name))
    return nodes


def _first_word(statement: str) -> str:
    return statement.split(None, 1)[0].upper() if statement.strip() else "an empty statement"


def refusal(statement: str, explained: str, table_functions: frozenset[str]) -> str | None:
    """Why the canonical ``statement``, whose EXPLAIN AST is ``explained``, may not run."""
    tree = _tree(explained)
    if not tree or tree[0].kind not in _OWN_CHILDREN:
        return (
            f"refused {_first_word(statement)}: only SELECT (with WITH, UNION, subqueries) "
            "and DESCRIBE run here, read-only"
        )
    root = tree[0]
    # by lower-case name, anywhere in the tree: ClickHouse resolves some table functions
    # in any case, and `x IN file(...)` or the scalar file() read files outside any FROM
    refused_functions = table_functions - _ALLOWED_LOWER
    for node in tree[1:]:
        if node.kind == "Set":
            return _FIXED_SETTINGS
        if node.depth == root.depth + 1 and node.kind not in _OWN_CHILDREN[root.kind]:
            clause = _OUTPUT_CLAUSES.get(node.kind, f"a {node.kind} clause")
            return f"refused {clause}: results come back as the API's JSON, nowhere else"
        if node.kind == "Function" and node.name.lower() in refused_functions:
            return (
                f"refused table function {node.name}(): it reaches files, networks or other "
                f"servers; allowed are {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
            )
    return None


def table_function_names(client: Any) -> frozenset[str]:
    """Every table function this ClickHouse knows, in lower case."""
    rows = client.query("SELECT name FROM system.table_functions").result_rows
    return frozenset(str(row[0]).lower() for row in rows)


def _clickhouse_message(exc: Exception) -> str:
    return str(exc).strip()


def _unreachable(exc: DatabaseError) -> bool:
    """ClickHouse did not answer (a server down): nothing the analyst can fix."""
    return exc.code is None and isinstance(exc, OperationalError)


def checked_statement(client: Any, sql: str, table_functions: frozenset[str]) -> str:
    """The one statement ``sql`` is, canonically formatted, if it may run."""
    try:
        formatted = client.query("SELECT formatQuery({sql:String})", parameters={"sql": sql})
        statement = str(formatted.result_rows[0][0])
    except DatabaseError as exc:
        if _unreachable(exc):
            raise
        message = f"not one valid SQL statement: {_clickhouse_message(exc)}"
        raise QueryRefused(400, message) from None
    try:
        # command(), not query(): query() would append a FORMAT clause to the statement
        explained = str(client.command(f"EXPLAIN AST {statement}"))
    except DatabaseError as exc:
        if _unreachable(exc):
            raise
        if exc.code == _READONLY:  # EXPLAIN applies an output SETTINGS clause
            raise QueryRefused(403, _FIXED_SETTINGS) from None
        raise QueryRefused(400, _clickhouse_message(exc)) from None
    reason = refusal(statement, explained, table_functions)
    if reason is not None:
        raise QueryRefused(403, reason)
    return statement


def _limit_refusal(exc: DatabaseError, limits: AnalystLimits) -> QueryRefused | None:
    said = _clickhouse_message(exc)
    if exc.code == _TIMEOUT_EXCEEDED:
        return QueryRefused(
            422,
            f"stopped at the time limit, LEARNSTREAM_ANALYST_MAX_EXECUTION_S="
            f"{limits.max_execution_s:g}: {said}",
        )
    if exc.code == _MEMORY_LIMIT_EXCEEDED:
        return QueryRefused(
            422,
            f"stopped at the memory limit, LEARNSTREAM_ANALYST_MAX_MEMORY_BYTES="
            f"{limits.max_memory_bytes}: {said}",
        )
    if exc.code == _TOO_MANY_ROWS_OR_BYTES:
        if "max rows" in said:
            limit = f"LEARNSTREAM_ANALYST_MAX_RESULT_ROWS={limits.max_result_rows}"
        else:
            limit = f"LEARNSTREAM_ANALYST_MAX_RESULT_BYTES={limits.max_result_bytes}"
        return QueryRefused(413, f"the result is over the limit, {limit}: {said}")
    return None


def run(
    client: Any, sql: str, limits: AnalystLimits, table_functions: frozenset[str]
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of an analyst's query, on an analysts' session (blocking)."""
    statement = checked_statement(client, sql, table_functions)
    try:
        result = client.query(statement)
        return list(result.column_names), [list(row) for row in result.result_rows]
    except DatabaseError as exc:
        refused = _limit_refusal(exc, limits)
        if refused is not None:
            raise refused from None
        if _unreachable(exc):
            raise
        raise QueryRefused(400, _clickhouse_message(exc)) from None
