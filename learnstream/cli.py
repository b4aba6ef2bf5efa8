"""``learnstream``: the analyst's command line.

    learnstream query "SELECT ..." [--format table|csv|json]
    learnstream query NAME [--param days=7 ...] [--format ...]   (a named query)
    learnstream queries                                          (list the named ones)

Asks the running sink's query endpoint (it owns the embedded chdb while it runs);
when no sink is running, opens the ClickHouse data directly.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from learnstream.settings import Settings
from sinks import query_library


def _via_endpoint(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]] | None:
    try:
        response = httpx.post(
            f"{settings.query_url}/v1/query",
            content=sql.encode(),
            headers={"content-type": "text/plain"},
            timeout=60,
        )
    except httpx.TransportError:
        return None
    body = response.json()
    if response.status_code != 200:
        raise SystemExit(f"query failed: {body.get('error')}")
    return body["columns"], body["rows"]


def _direct(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    from sinks.clickhouse import connect

    client = connect(settings)
    result = client.query(sql, settings={"readonly": 1})
    return list(result.column_names), [list(r) for r in result.result_rows]


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(
            [dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=2
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue()
    cells = [list(columns)] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="learnstream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", help="run read-only SQL or a named query")
    query.add_argument("sql", help="SQL, or the name of a query in the library")
    query.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    commands.add_parser("queries", help="list the named queries and their parameters")
    args = parser.parse_args(argv)
    library = query_library.load()
    if args.command == "queries":
        for name, named in library.items():
            params = ", ".join(f"{p.name}={p.default or '?'}" for p in named.parameters)
            print(f"{name} ({params})\n    {named.description}")
        return 0
    sql = args.sql
    if sql in library:
        given = dict(item.partition("=")[::2] for item in args.param)
        try:
            sql = library[sql].render(given)
        except query_library.QueryError as exc:
            raise SystemExit(str(exc)) from None
    elif args.param:
        raise SystemExit(f"--param is for named queries; {sql[:40]!r} is not one")
    settings = Settings()
    found = _via_endpoint(settings, sql)
    columns, rows = found if found is not None else _direct(settings, sql)
    print(render(columns, rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
