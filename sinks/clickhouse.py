"""ClickHouse access through clickhouse-connect only: embedded chdb or an HTTP server."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import clickhouse_connect

from learnstream.settings import Settings
from sinks.cluster_ddl import bookkeeping_for_cluster, render_for_cluster

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


# the bookkeeping table on a single node
_SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
    "(version String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)


def _sql(template: str, database: str) -> str:
    # replace, not format: SQL comments may hold braces
    return template.rstrip(";").replace("{db}", database)


def bookkeeping_statements(database: str, cluster: str | None = None) -> list[str]:
    """What ``migrate`` runs before reading which migrations are applied."""
    templates = bookkeeping_for_cluster(cluster) if cluster else [_SCHEMA_MIGRATIONS]
    return [_sql(t, database) for t in templates]


def migration_statements(database: str, cluster: str | None = None) -> list[tuple[str, list[str]]]:
    """Every migration file in order, as (version, the statements it runs).

    Without a cluster these are the files' statements as written; with one, the same
    statements rendered for that ClickHouse cluster (``sinks.cluster_ddl``).
    """
    files = sorted(
        (f for f in resources.files("sinks.migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    versions = [f.name.removesuffix(".sql") for f in files]
    templates = [_statements(f.read_text(encoding="utf-8")) for f in files]
    if cluster:
        templates = render_for_cluster(templates, cluster)
    return [
        (version, [_sql(t, database) for t in statements])
        for version, statements in zip(versions, templates, strict=True)
    ]


def migrate(client: Any, database: str, cluster: str | None = None) -> list[str]:
    """Apply, in order, each migration file not yet recorded; returns those applied.

    ``cluster``: the ClickHouse cluster to create everything on (``ON CLUSTER``, replicated
    local tables, Distributed tables under today's names); unset, a single node.
    """
    for statement in bookkeeping_statements(database, cluster):
        client.command(statement)
    done = {
        row[0]
        for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows
    }
    applied = []
    for version, statements in migration_statements(database, cluster):
        if version in done:
            continue
        for statement in statements:
            client.command(statement)
        client.insert(f"{database}.schema_migrations", [[version]], column_names=["version"])
        applied.append(version)
        log.info("applied migration %s", version)
    return applied
