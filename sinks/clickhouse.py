"""ClickHouse access through clickhouse-connect only: embedded chdb or an HTTP server."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import clickhouse_connect

from learnstream.settings import Settings

log = logging.getLogger(__name__)


def connect(settings: Settings) -> Any:
    """The same code talks to chdb (default) or, with ``clickhouse_url`` set, a server."""
    if settings.clickhouse_url:
        client = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
    else:
        settings.chdb_path.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(interface="chdb", path=str(settings.chdb_path))
    client.command(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse_database}")
    client.database = settings.clickhouse_database  # analysts write FROM events
    return client


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";\n") if s.strip().strip(";").strip()]


def migrate(client: Any, database: str) -> list[str]:
    """Apply, in order, each migration file not yet recorded; returns those applied."""
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {
        row[0]
        for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows
    }
    applied = []
    files = sorted(
        (f for f in resources.files("sinks.migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    for migration in files:
        version = migration.name.removesuffix(".sql")
        if version in done:
            continue
        for statement in _statements(migration.read_text(encoding="utf-8")):
            # replace, not format: SQL comments may hold braces
            client.command(statement.rstrip(";").replace("{db}", database))
        client.insert(f"{database}.schema_migrations", [[version]], column_names=["version"])
        applied.append(version)
        log.info("applied migration %s", version)
    return applied
