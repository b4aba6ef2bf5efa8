"""ClickHouse's HTTP interface in front of embedded ClickHouse (chdb), for several clients.

chdb locks its data folder: one process per folder, so two sink workers cannot share an
embedded ClickHouse. A ClickHouse server would do, but none can be installed here: no
PyPI package ships the server binary, and chdb does not start ClickHouse's own HTTP
listener (``SYSTEM START LISTEN HTTP`` answers "start_servers_callback is not set").
This process owns the folder and serves the part of the HTTP interface that
clickhouse-connect's HTTP client uses, so every client reaches it as it would a server
(``LEARNSTREAM_CLICKHOUSE_URL=http://127.0.0.1:PORT``). Every statement runs in the real
ClickHouse engine; only the transport is ours:

- the statement in the body, or in ``?query=`` with an INSERT's data in the body (plain,
  chunked, or compressed with lz4, zstd, gzip or deflate);
- ``param_<name>`` bindings (in the URL, or as form fields beside the statement),
  ``database``, ``default_format``, and every other URL parameter as a setting of that
  request;
- ``session_id``: one engine connection per session, so ``SET`` and ``USE`` last;
- errors as ClickHouse sends them: status 500, ``X-ClickHouse-Exception-Code``, the
  ``Code: N. DB::Exception: ...`` text.

Not served: external data (files in a multipart form), ClickHouse's own ``decompress=1`` framing,
authentication (it listens on loopback only), progress headers, streaming results.
``python -m devstack.chdb_http --data DIR --port N`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

log = logging.getLogger("chdb_http")
_chdb_connect: Callable[[str], Any] = chdb.connect  # chdb's own is not annotated

# URL parameters that steer the transport, never settings of the statement
TRANSPORT = frozenset(
    {
        "query",
        "database",
        "default_format",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "quota_key",
        "user",
        "password",
        "compress",
        "decompress",
        "enable_http_compression",
        "wait_end_of_query",
        "buffer_size",
        "client_protocol_version",
        "role",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_response_buffer_size",
    }
)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)
# an INSERT statement at the start of a body, up to its format's name and one newline
_INSERT_HEAD = re.compile(
    r"\s*INSERT\s+INTO\s.*?\bFORMAT\s+(?P<format>\w+)[ \t]*(\r?\n)?", re.IGNORECASE | re.DOTALL
)
_HEAD_BYTES = 1 << 16
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
SESSION_IDLE_S = 600.0  # a session unused this long is closed (ClickHouse's default: 60 s)


class RequestError(Exception):
    """A request this interface cannot serve; answered like a ClickHouse error."""

    def __init__(self, message: str, code: int = 48) -> None:  # 48: NOT_IMPLEMENTED
        super().__init__(f"Code: {code}. DB::Exception: {message}")
        self.code = code


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def settings_clause(settings: Mapping[str, str]) -> str:
    for name in settings:
        if not _SETTING_NAME.match(name):
            raise RequestError(f"not a setting name: {name!r}", 115)  # UNKNOWN_SETTING
    return ", ".join(f"{name} = {_quote(value)}" for name, value in settings.items())


def decoded(body: bytes, encoding: str | None) -> bytes:
    """The body as sent before its Content-Encoding."""
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame  # type: ignore[import-untyped]  # a clickhouse-connect dependency

        return bytes(lz4.frame.decompress(body))
    if encoding == "zstd":
        from clickhouse_connect.driver.compression import _zstd_decompress

        return bytes(_zstd_decompress(body))
    raise RequestError(f"Content-Encoding {encoding!r} is not supported here")


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body; a file in it is external data."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None or not isinstance(name, str):
            raise RequestError("external data (a file in the form) is not served")
        payload = part.get_payload(decode=True)
        fields[name] = payload.decode("utf-8") if isinstance(payload, bytes) else ""
    return fields


@dataclass
class Connection:
    """One engine connection: its own SET and USE state, one statement at a time."""

    handle: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    database: str | None = None
    used_at: float = field(default_factory=time.monotonic)

    def use(self, database: str | None) -> None:
        if database and database != self.database:
            self.handle.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
            self.database = database

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.close()


class Engine:
    """The one chdb engine of this process and its connections.

    A request's settings are applied to the connection it runs on, with SET, so
    statements that take no SETTINGS clause (DDL, SET itself) get them too; connections
    are therefore kept apart by the settings they carry: a client sends the same ones
    with every request, so it keeps finding its connection."""

    def __init__(self, path: Path) -> None:
        self.path = str(path.resolve())
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._idle: dict[tuple[tuple[str, str], ...], list[Connection]] = {}
        self._sessions: dict[tuple[str, tuple[tuple[str, str], ...]], Connection] = {}
        self._keeper = self._open(())  # keeps the engine open while no request runs
        zone = self._keeper.handle.query("SELECT timezone()", "TabSeparated")
        self.timezone: str = zone.bytes().decode().strip()

    def _open(self, settings: tuple[tuple[str, str], ...]) -> Connection:
        connection = Connection(_chdb_connect(self.path))
        try:
            # readonly last: once it is set, no other setting may change
            for name, value in sorted(settings, key=lambda s: s[0] == "readonly"):
                connection.handle.query(f"SET {name} = {_quote(value)}", "TabSeparated")
        except Exception:
            connection.close()
            raise
        return connection

    @contextlib.contextmanager
    def connection(self, session: str | None, settings: Mapping[str, str]) -> Iterator[Connection]:
        settings_clause(settings)  # refuses names that could smuggle SQL into SET
        key = tuple(sorted(settings.items()))
        if session:
            with self._lock:
                self._close_idle_sessions()
                found = self._sessions.get((session, key))
                if found is None:
                    found = self._sessions[(session, key)] = self._open(key)
                found.used_at = time.monotonic()  # not idle: it is not closed under us
            with found.lock:  # ClickHouse refuses concurrent requests in a session; we queue
                yield found
                found.used_at = time.monotonic()
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            pooled = idle.pop() if idle else None
        connection = pooled or self._open(key)
        try:
            yield connection
        finally:
            with self._lock:
                self._idle.setdefault(key, []).append(connection)

    def _close_idle_sessions(self) -> None:
        now = time.monotonic()
        for key, connection in list(self._sessions.items()):
            if now - connection.used_at > SESSION_IDLE_S and not connection.lock.locked():
                del self._sessions[key]
                connection.close()

    def close(self) -> None:
        with self._lock:
            for connections in self._idle.values():
                for connection in connections:
                    connection.close()
            for connection in self._sessions.values():
                connection.close()
            self._idle.clear()
            self._sessions.clear()
        self._keeper.close()


@dataclass(frozen=True)
class Answer:
    body: bytes
    format: str
    summary: dict[str, str]


def _summary(result: Any) -> dict[str, str]:
    summary = {}
    for key, method in (
        ("read_rows", "rows_read"),
        ("read_bytes", "bytes_read"),
        ("written_rows", "rows_written"),
        ("written_bytes", "bytes_written"),
    ):
        with contextlib.suppress(Exception):
            summary[key] = str(int(getattr(result, method)()))
    with contextlib.suppress(Exception):
        summary["elapsed_ns"] = str(int(result.elapsed() * 1e9))
    return summary


def split_insert(url_query: str | None, body: bytes) -> tuple[str, bytes | None]:
    """(statement, an INSERT's data or None). As ClickHouse reads a request: the
    statement is ``?query=`` followed by the body, and an INSERT ... FORMAT's data
    starts after the format's name (and one line break)."""
    if url_query is not None:
        if _INSERT.match(url_query) and _TRAILING_FORMAT.search(url_query) and body:
            return url_query, body
        text = body.decode("utf-8")
        return (f"{url_query}\n{text}" if text else url_query), None
    head = body[:_HEAD_BYTES].decode("latin-1")  # the statement is text; the data need not be
    found = _INSERT_HEAD.match(head)
    if found is None:
        return body.decode("utf-8"), None
    statement = body[: found.end("format")].decode("utf-8")
    data = body[found.end() :]
    return (statement, data) if data else (body.decode("utf-8"), None)


def execute(engine: Engine, params: Mapping[str, str], body: bytes) -> Answer:
    """Run one request's statement as ClickHouse's HTTP handler would."""
    bindings = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
    settings = {
        k: v for k, v in params.items() if k not in TRANSPORT and not k.startswith("param_")
    }
    if params.get("decompress") in ("1", "true"):
        raise RequestError("ClickHouse's compressed framing (decompress=1) is not served")
    default_format = params.get("default_format", "TabSeparated")
    statement, data = split_insert(params.get("query"), body)
    data_file: str | None = None
    if data is not None:
        # clickhouse-local reads an INSERT's data from a file: put the body in one
        head = _TRAILING_FORMAT.search(statement)
        assert head is not None  # split_insert found it
        with tempfile.NamedTemporaryFile(prefix="chdb-http-", delete=False) as file:
            file.write(data)
            data_file = file.name
        clause = f" SETTINGS {settings_clause(settings)}" if settings else ""
        sql = (
            f"{statement[: head.start()].rstrip()} FROM INFILE {_quote(data_file)}"
            f"{clause} FORMAT {head.group(1)}"
        )
        settings = {}  # in the statement itself: a per-insert token needs no connection
    else:
        sql = statement
    if not sql.strip():
        raise RequestError("Empty query", 62)
    trailing = _TRAILING_FORMAT.search(sql)
    result_format = trailing.group(1) if trailing and data_file is None else default_format
    try:
        with engine.connection(params.get("session_id"), settings) as connection:
            connection.use(params.get("database"))
            result = connection.handle.query(sql, default_format, params=bindings)
    finally:
        if data_file is not None:
            os.unlink(data_file)
    return Answer(result.bytes() or b"", result_format, _summary(result))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            raw = b"".join(chunks)
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return decoded(raw, self.headers.get("Content-Encoding"))

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._body() if self.command == "POST" else b""
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            # large statements and parameters come as form fields (query, param_*)
            params.update(form_fields(content_type, body))
            body = b""
        if url.path.rstrip("/") in ("/ping", "/replicas_status") or (
            url.path in ("", "/") and not body and "query" not in params
        ):
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        query_id = params.get("query_id", "")
        common = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Server-Display-Name": "chdb-http",
        }
        try:
            answer = execute(self.server.engine, params, body)
        except Exception as exc:  # ClickHouse's error, or ours in its shape
            message = str(exc)
            log.warning("refused %r (%s): %s", body[:300], url.query[:300], message[:300])
            start = message.find("Code: ")
            message = message[start:] if start > 0 else message
            found = _ERROR_CODE.search(message)
            code = found.group(1) if found else "1000"  # POCO_EXCEPTION: no code given
            self._send(
                500,
                (message.rstrip() + "\n").encode(),
                {**common, "X-ClickHouse-Exception-Code": code, "Content-Type": "text/plain"},
            )
            return
        self._send(
            200,
            answer.body,
            {
                **common,
                "X-ClickHouse-Format": answer.format,
                "X-ClickHouse-Summary": json.dumps(answer.summary),
                "Content-Type": "application/octet-stream",
            },
        )

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self.engine = engine
        super().__init__((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.chdb_http", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="chdb data folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s chdb-http %(message)s")
    engine = Engine(args.data)
    server = Server(engine, args.host, args.port)

    def stop(*_: object) -> None:
        # shutdown() waits for serve_forever, which runs in this thread: ask from another
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving %s on http://%s:%d", args.data, args.host, args.port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
