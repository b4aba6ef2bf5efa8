"""``learnstream``: the analyst's command line.

    learnstream query "SELECT ..." [--format table|csv|json]
    learnstream query NAME [--param days=7 ...] [--format ...]   (a named query)
    learnstream queries                                          (list the named ones)
    learnstream query NAME --plot out.png                        (a time series, drawn)
    learnstream row-policies --clickhouse-user U --role R ...    (ClickHouse row policies)
    learnstream export-user USER [--format json|csv]             (data-subject export)
    learnstream erase-user USER                                  (data-subject erasure)
    learnstream redrive [--type T] [--since/--until] [--error-contains X] [--dry-run]
                                                                 (dead letters, after a fix)
    learnstream import FILE|- [--format jsonl|csv|parquet]       (historical events)

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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from learnstream.settings import Settings
from learnstream.startup import settings_or_exit
from sinks import query_library

if TYPE_CHECKING:  # imported when used: `learnstream query` need not load tqdm or pyarrow
    from learnstream.importer import ImportOptions


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


def run_sql(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    """Through the running sink's read API, else (no sink running) on the data directly."""
    found = _via_endpoint(settings, sql)
    return found if found is not None else _direct(settings, sql)


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
    columns, rows = run_sql(settings, sql)
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


def _moment(text: str) -> datetime:
    """An ISO 8601 time or date for --since/--until; without an offset, UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time or date: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _batch_size(text: str) -> int:
    """1 to 500: the collector takes at most 500 events a batch."""
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"must be 1 to 500, not {text!r}")
    return int(text)


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"must be a number of events per second, not {text!r}")
    return rate


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None  # None: a bar when stderr is a terminal


def _redrive(args: argparse.Namespace) -> int:
    from learnstream.importer import BatchPoster, ImportFailed
    from learnstream.redrive import Filters, Redrive
    from schemas.catalog import default_catalog

    settings = settings_or_exit("learnstream")
    catalog = default_catalog()
    types = set()
    for name in args.type:
        found = catalog.resolve(name)
        if found is None:
            raise SystemExit(f"--type {name!r}: no such event type")
        types.add(found.name)
    filters = Filters(frozenset(types), args.since, args.until, args.error_contains, args.key_id)
    poster = None if args.dry_run else BatchPoster(settings.collector_url, args.write_key)
    tolerance = timedelta(seconds=settings.clock_skew_tolerance_s)
    try:
        report = Redrive(lambda sql: run_sql(settings, sql), catalog, tolerance, poster).run(
            filters, _progress(args)
        )
    except ImportFailed as exc:
        raise SystemExit(f"redrive stopped: {exc}; running it again is safe") from None
    except KeyboardInterrupt:
        print("redrive interrupted; running it again is safe", file=sys.stderr)
        return 130
    finally:
        if poster is not None:
            poster.close()
    print(json.dumps(report.as_json(), indent=2) if args.json else report.text())
    return 0


def _import(args: argparse.Namespace) -> int:
    from learnstream import importer
    from schemas.catalog import default_catalog

    settings = settings_or_exit("learnstream")
    source = args.source
    if source == "-" and args.state is None:
        raise SystemExit("importing standard input needs --state FILE to resume from")
    try:
        fmt = args.format or ("jsonl" if source == "-" else importer.detect_format(source))
    except importer.ImportFailed as exc:
        raise SystemExit(str(exc)) from None
    # standard input's rejects go beside its state file, not into the working folder
    base = source if source != "-" else str(args.state).removesuffix(".import-state")
    options = importer.ImportOptions(
        source=source,
        fmt=fmt,
        state_path=Path(args.state or f"{base}.import-state"),
        rejects_path=Path(args.rejects or f"{base}.rejects.jsonl"),
        batch_size=args.batch_size,
        rate=args.rate,
        progress=_progress(args),
    )
    poster = importer.BatchPoster(settings.collector_url, args.write_key)
    tolerance = timedelta(seconds=settings.clock_skew_tolerance_s)
    try:
        state = importer.run_import(options, default_catalog(), poster, tolerance)
    except (importer.ImportFailed, OSError) as exc:
        raise SystemExit(f"import stopped: {exc}; {_resume_hint(options)}") from None
    except KeyboardInterrupt:
        print(f"import interrupted; {_resume_hint(options)}", file=sys.stderr)
        return 130
    finally:
        poster.close()
    print(importer.summary(state, options.rejects_path))
    return 0


def _resume_hint(options: ImportOptions) -> str:
    return f"the same command resumes it ({options.state_path} holds where)"


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
    redrive = commands.add_parser(
        "redrive",
        help="send dead letters (events_invalid) back through validation, after a fix",
        description="Dead letters the collector wrote, through today's validation and the "
        "collector again. An event already stored is not sent; running twice stores once.",
    )
    redrive.add_argument("--type", action="append", default=[], help="event type; repeatable")
    redrive.add_argument("--since", type=_moment, help="refused at or after (ISO 8601, UTC)")
    redrive.add_argument("--until", type=_moment, help="refused before (ISO 8601, UTC)")
    redrive.add_argument("--error-contains", help="text in the refusal's errors")
    redrive.add_argument("--key-id", help="only letters that came with this write key's id")
    redrive.add_argument("--dry-run", action="store_true", help="judge only, send nothing")
    redrive.add_argument("--write-key", help="the write key to send with (when keys are set)")
    redrive.add_argument("--json", action="store_true", help="the report as JSON")
    redrive.add_argument("--no-progress", action="store_true")
    imports = commands.add_parser(
        "import",
        help="historical events from JSONL, CSV or Parquet (gzipped too), resumable",
        description="Events (the collector's JSON shape; CSV and Parquet columns may be "
        "dotted, e.g. properties.score) through the collector in batches. Interrupted, "
        "the same command resumes after the last batch the collector answered.",
    )
    imports.add_argument("source", metavar="FILE|-")
    imports.add_argument("--format", choices=["jsonl", "csv", "parquet"])
    imports.add_argument(
        "--batch-size", type=_batch_size, default=500, help="events a request, 1..500"
    )
    imports.add_argument("--state", help="checkpoint file (default FILE.import-state)")
    imports.add_argument("--rejects", help="rejected records (default FILE.rejects.jsonl)")
    imports.add_argument("--write-key", help="the write key to send with (when keys are set)")
    imports.add_argument("--rate", type=_rate, help="events per second at most")
    imports.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "redrive":
        return _redrive(args)
    if args.command == "import":
        return _import(args)
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
