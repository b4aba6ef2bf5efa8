"""Shared fixtures: one real Kafka broker per test session, isolated names per test.

With a Docker engine present, the broker is Apache Kafka in a testcontainer; without
one (as on CI here), it is the devstack broker: the same Apache Kafka jars from
Maven Central, on this machine's Java, in a temporary data folder on free ports.
``LEARNSTREAM_TEST_KAFKA=local|docker`` forces either.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devstack import kafka
from devstack.services import free_port
from learnstream.settings import Settings
from learnstream.topics import ensure_topics
from sinks.clickhouse import connect, migrate

REPO = Path(__file__).resolve().parent.parent
APACHE_KAFKA_IMAGE = "apache/kafka:4.4.0"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker: needs the real Kafka broker (make unit skips)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches the broker, through any fixture, is marked ``broker``,
    so ``make unit`` (``-m "not broker"``) is the fast loop without it."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _kafka_mode() -> str:
    forced = os.environ.get("LEARNSTREAM_TEST_KAFKA", "auto")
    if forced != "auto":
        return forced
    return "docker" if _docker_available() else "local"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _kafka_mode() == "docker":  # pragma: no cover - no Docker engine on this CI
        yield from _docker_kafka()
        return
    port = free_port()
    paths = kafka.KafkaPaths(
        home=(REPO / ".devstack").resolve(), data=tmp_path_factory.mktemp("kafka")
    )
    kafka.start(paths, port, free_port())
    try:
        yield f"127.0.0.1:{port}"
    finally:
        kafka.stop(paths)


def _docker_kafka() -> Iterator[str]:  # pragma: no cover - exercised only with Docker
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_port()
    container = (
        DockerContainer(APACHE_KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"


def isolated_settings(kafka_bootstrap: str, folder: Path) -> Settings:
    """Its own topics, data folder and ports on the shared broker."""
    made = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=folder / "data",
        devstack_home=REPO / ".devstack",
        collector_port=free_port(),
        query_port=free_port(),
        processors_health_port=free_port(),
        sink_metrics_port=free_port(),
        sink_batch_max_wait_s=0.3,
        # a Faust partition stall (see processors.watchdog) costs a test 30 s, not 2 min
        processor_stall_timeout_s=30.0,
    )
    asyncio.run(ensure_topics(made))
    return made


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topics, data folder and ports on the shared broker."""
    return isolated_settings(kafka_bootstrap, tmp_path)


@contextmanager
def migrated_clickhouse(settings: Settings) -> Iterator[Any]:
    client = connect(settings)
    migrate(client, settings.clickhouse_database)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def clickhouse(settings: Settings) -> Iterator[Any]:
    """A migrated chdb client in the test's folder, closed even when the test fails:
    chdb serves one data folder per process, so a client left open breaks the next test."""
    with migrated_clickhouse(settings) as client:
        yield client
