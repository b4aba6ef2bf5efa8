"""``learnstream``: the analyst's command line.

    learnstream query "SELECT ..." [--format table|csv|json]
    learnstream query NAME [--param days=7 ...] [--format ...]   (a named query)
    learnstream queries                                          (list the named ones)
    learnstream query NAME --plot out.png                        (a time series, drawn)
    learnstream row-policies --clickhouse-user U --role R ...    (ClickHouse row policies)
    learnstream export-user USER [--format json|csv]             (data-subject export)
    learnstream erase-user USER                                  (data-subject erasure)

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
from learnstream.startup import settings_or_exit
from sinks import query_library


def _headers(settings: Settings) -> dict[str, str]:
    headers = {"content-type": "text/plain"}
    if settings.reader_token:
        headers["authorization"] = f"Bearer {settings.reader_token}"
    return headers


def _failure(response: httpx.Response) -> str:
    """The read API's reason for a failed request, as told: its JSON ``error`` or
    ``detail``, else the body's text (a proxy's error page is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    said = (body.get("error") or body.get("detail")) if isinstance(body, dict) else None
    if said is None:
        said = response.text.strip() or response.reason_phrase
    elif not isinstance(said, str):
        said = json.dumps(said)
    return f"{response.status_code}: {said}"


def _via_endpoint(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]] | None:
    try:
        response = httpx.post(
            f"{settings.query_url}/v1/query",
            content=sql.encode(),
            headers=_headers(settings),
            timeout=settings.analyst_max_execution_s + 30,
        )
    except httpx.ConnectError:
        return None  # no sink running: the chdb data is free to open
    except httpx.TransportError as exc:
        raise SystemExit(f"query failed: the read API at {settings.query_url}: {exc!r}") from None
    if response.status_code != 200:
        raise SystemExit(f"query failed ({_failure(response)})")
    try:
        body = response.json()
        return list(body["columns"]), list(body["rows"])
    except (ValueError, KeyError, TypeError):
        raise SystemExit(
            f"query failed: the read API at {settings.query_url} answered 200 without a result "
            f"({response.text.strip()[:200]!r})"
        ) from None


def _direct(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    """Through the same door as the read API: one read-only session with the analysts'
    limits, and only what ``sinks.analyst_sql`` lets through."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from sinks import analyst_sql
    from sinks.read_sessions import open_client

    limits = analyst_sql.AnalystLimits.from_settings(settings)
    try:
        client = open_client(settings, limits.session_settings())
    except ClickHouseError as exc:
        raise SystemExit(f"cannot open ClickHouse: {exc}") from None
    try:
        return analyst_sql.run(client, sql, limits, analyst_sql.table_function_names(client))
    except analyst_sql.QueryRefused as exc:
        raise SystemExit(f"query failed ({exc.status}: {exc.message})") from None
    except ClickHouseError as exc:
        raise SystemExit(f"query failed: {exc}") from None
    finally:
        client.close()


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


def _run_query(args: argparse.Namespace, library: dict[str, query_library.NamedQuery]) -> int:
    sql = args.sql
    if sql in library:
        given = dict(item.partition("=")[::2] for item in args.param)
        try:
            sql = library[sql].render(given)
        except query_library.QueryError as exc:
            raise SystemExit(str(exc)) from None
    elif args.param:
        raise SystemExit(f"--param is for named queries; {sql[:40]!r} is not one")
    settings = settings_or_exit("learnstream")
    found = _via_endpoint(settings, sql)
    columns, rows = found if found is not None else _direct(settings, sql)
    if args.plot is not None:
        from learnstream.plots import PlotError, plot_time_series

        title = args.sql if args.sql in library else ""
        try:
            plot_time_series(columns, rows, args.plot, title=title)
        except PlotError as exc:  # e.g. no rows yet: a message, never a traceback
            raise SystemExit(f"cannot plot: {exc}") from None
        print(f"wrote {args.plot}")
        return 0
    print(render(columns, rows, args.format))
    return 0


def _row_policies(args: argparse.Namespace) -> int:
    from sinks.access import AccessError, Principal, Role, row_policies

    settings = settings_or_exit("learnstream")
    try:
        who = Principal(
            Role(args.role),
            args.user_id,
            args.organization,
            tuple(args.class_id),
            tuple(args.teacher),
        )
    except AccessError as exc:
        raise SystemExit(exc.message) from None
    statements = row_policies(who, args.clickhouse_user, settings.clickhouse_database)
    if not args.apply:
        print(";\n".join(statements) + ";")
        return 0
    if not settings.clickhouse_url:
        raise SystemExit(
            "--apply needs a ClickHouse server (LEARNSTREAM_CLICKHOUSE_URL); "
            "embedded chdb has no users to give policies to"
        )
    from sinks.clickhouse import connect

    client = connect(settings)
    for statement in statements:
        client.command(statement)
    print(f"applied {len(statements)} row policies for {args.clickhouse_user}")
    return 0


def _learner_request(args: argparse.Namespace) -> int:
    """export-user / erase-user: through the sink's read API, as the configured reader."""
    settings = settings_or_exit("learnstream")
    headers = _headers(settings)
    base = f"{settings.query_url}/v1/learners/{args.user_id}"
    try:
        if args.command == "export-user":
            response = httpx.get(
                f"{base}/export", params={"format": args.format}, headers=headers, timeout=300
            )
        else:
            response = httpx.post(f"{base}/erase", headers=headers, timeout=60)
    except httpx.TransportError as exc:
        message = f"the sink's read API at {settings.query_url} is not reachable: {exc}"
        raise SystemExit(message) from None
    if response.status_code >= 400:
        raise SystemExit(f"{args.command} refused ({_failure(response)})")
    print(response.text)
    return 0


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
    query.add_argument("--plot", metavar="OUT.png", help="draw the result as a time series instead")
    commands.add_parser("queries", help="list the named queries and their parameters")
    policies = commands.add_parser(
        "row-policies", help="ClickHouse row policies giving a server user one reader's rows"
    )
    policies.add_argument("--clickhouse-user", required=True)
    policies.add_argument(
        "--role",
        required=True,
        choices=["student", "teacher", "teacher_admin", "subscriber_admin", "system_admin"],
    )
    policies.add_argument("--user-id", required=True, help="the reader's own user id")
    policies.add_argument("--organization")
    policies.add_argument("--class-id", action="append", default=[], help="repeatable")
    policies.add_argument(
        "--teacher", action="append", default=[], help="teachers a teacher_admin manages"
    )
    policies.add_argument("--apply", action="store_true", help="run them on the server")
    export = commands.add_parser("export-user", help="a learner's events and state (audited)")
    export.add_argument("user_id")
    export.add_argument("--format", choices=["json", "csv"], default="json")
    erase = commands.add_parser(
        "erase-user", help="erase a learner everywhere (administrators; audited)"
    )
    erase.add_argument("user_id")
    args = parser.parse_args(argv)
    if args.command in ("export-user", "erase-user"):
        return _learner_request(args)
    library = query_library.load()
    if args.command == "queries":
        for name, named in library.items():
            params = ", ".join(f"{p.name}={p.default or '?'}" for p in named.parameters)
            print(f"{name} ({params})\n    {named.description}")
        return 0
    if args.command == "row-policies":
        return _row_policies(args)
    return _run_query(args, library)


if __name__ == "__main__":
    sys.exit(main())
