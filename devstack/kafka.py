"""A real Apache Kafka broker on loopback, fetched from Maven Central and run on Java.

One combined broker+controller in KRaft mode, data on disk; or, with a ``Quorum``, one
node of a cluster of such nodes (devstack.cluster starts three). Everything is
idempotent: the jars are fetched once (Maven caches them in ~/.m2 as well), storage is
formatted once, and ``start`` reuses a broker that is already running from the same
folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from learnstream.topics import min_insync_replicas

log = logging.getLogger(__name__)

MIN_JAVA = 17


class DevstackError(RuntimeError):
    """The local stack cannot be brought up; the message says what to do."""


@dataclass(frozen=True)
class KafkaPaths:
    home: Path  # shared jars: <home>/kafka-libs
    data: Path  # this broker's log.dirs, pid file and log

    @property
    def libs(self) -> Path:
        return self.home / "kafka-libs"

    @property
    def pid_file(self) -> Path:
        return self.data / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data / "broker.log"

    @property
    def config_file(self) -> Path:
        return self.data / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data / "logs"


@dataclass(frozen=True)
class Quorum:
    """Where a node stands: alone (the default), or one voter of a controller quorum on
    loopback, Kafka's own topics then replicated to every voter."""

    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()  # (node id, controller port) of every voter
    cluster_id: str | None = None  # every node of one cluster is formatted with the same

    @property
    def replication(self) -> int:
        return max(1, len(self.voters))

    def quorum_lines(self, controller_port: int) -> list[str]:
        if not self.voters:
            return [f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}"]
        voters = ",".join(f"{node}@127.0.0.1:{port}" for node, port in self.voters)
        return [f"controller.quorum.voters={voters}"]

    def replication_lines(self) -> list[str]:
        """Kafka's own topics (consumer offsets, transactions) as durable as ours: with
        replication 3, a write needs 2 copies, so one broker may be down."""
        factor = self.replication
        isr = min_insync_replicas(factor)
        return [
            f"default.replication.factor={factor}",
            f"min.insync.replicas={isr}",
            f"offsets.topic.replication.factor={factor}",
            f"transaction.state.log.replication.factor={factor}",
            f"transaction.state.log.min.isr={isr}",
            f"share.coordinator.state.topic.replication.factor={factor}",
            f"share.coordinator.state.topic.min.isr={isr}",
        ]

    def session_lines(self) -> list[str]:
        if not self.voters:
            # One node is broker and controller in one process: fencing it for a late
            # heartbeat (default after 9 s, e.g. when tests starve 2 cores) only takes
            # every partition's leader away. Clients then see NotLeaderForPartition.
            return ["broker.session.timeout.ms=30000"]
        # In a cluster a crashed broker's partitions move only once the controller fences
        # it: Kafka's default 9 s keeps the writes that wait for it short, and heartbeats
        # every 1.5 s (not 2) give a broker that a busy machine delays six chances first.
        return ["broker.session.timeout.ms=9000", "broker.heartbeat.interval.ms=1500"]


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DevstackError(f"'{name}' is not on PATH. {hint}")
    return path


def check_java() -> str:
    java = _require_tool("java", f"Install a Java {MIN_JAVA}+ runtime (e.g. openjdk-17-jre).")
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', version)
    if match is None or int(match.group(1)) < MIN_JAVA:
        raise DevstackError(f"Kafka 4 needs Java {MIN_JAVA}+; found: {version.strip()}")
    return java


def fetch(paths: KafkaPaths) -> Path:
    """Resolve the broker jars with Maven into ``paths.libs`` (once)."""
    if paths.libs.is_dir() and any(paths.libs.glob("kafka_2.13-*.jar")):
        return paths.libs
    mvn = _require_tool("mvn", "Install Apache Maven (e.g. the 'maven' package).")
    check_java()
    staging = paths.home / "kafka-libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pom = paths.home / "kafka-pom.xml"
    pom.write_bytes(resources.files("devstack").joinpath("kafka-pom.xml").read_bytes())
    log.info("fetching Apache Kafka jars with Maven (first run only)...")
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise DevstackError(f"Maven could not fetch Kafka:\n{result.stdout}\n{result.stderr}")
    if not any(staging.glob("kafka_2.13-*.jar")):
        raise DevstackError(f"Maven finished but no Kafka jar landed in {staging}")
    staging.rename(paths.libs)  # atomic: a half-finished fetch is never mistaken for done
    return paths.libs


def _server_properties(
    paths: KafkaPaths, port: int, controller_port: int, quorum: Quorum = Quorum()
) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={quorum.node_id}",
            *quorum.quorum_lines(controller_port),
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={paths.log_dirs}",
            # Topics are provisioned deliberately (learnstream.topics); an auto-created
            # topic with the wrong partition count breaks co-partitioning silently.
            "auto.create.topics.enable=false",
            "num.partitions=3",
            "offsets.topic.num.partitions=3",
            *quorum.replication_lines(),
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.backoff.ms=1000",
            *quorum.session_lines(),
            "",
        ]
    )


def _classpath(paths: KafkaPaths) -> str:
    return str(paths.libs / "*")


def format_storage(
    paths: KafkaPaths, port: int, controller_port: int, quorum: Quorum = Quorum()
) -> None:
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(_server_properties(paths, port, controller_port, quorum))
    if (paths.log_dirs / "meta.properties").exists():
        return
    java = check_java()
    # a lone node bootstraps its quorum by itself; a cluster's voters are in its config
    standalone = [] if quorum.voters else ["--standalone"]
    result = subprocess.run(
        [
            java,
            "-cp",
            _classpath(paths),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            quorum.cluster_id or uuid.uuid4().hex[:22],
            "-c",
            str(paths.config_file),
            *standalone,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise DevstackError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def running_pid(paths: KafkaPaths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    _reap(pid)  # a broker that died as our child is a zombie until reaped
    return pid if _alive(pid) else None


async def _metadata_ok(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        await asyncio.wait_for(admin.list_topics(), 5)
        return True
    except Exception:
        return False
    finally:
        await admin.close()


def _log_tail(paths: KafkaPaths) -> str:
    if not paths.log_file.exists():
        return ""
    return paths.log_file.read_text(errors="replace")[-3000:]


def wait_ready(paths: KafkaPaths, port: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = running_pid(paths)
        if pid is None:
            tail = (
                paths.log_file.read_text(errors="replace")[-3000:]
                if paths.log_file.exists()
                else ""
            )
            raise DevstackError(f"Kafka exited during start-up; log tail:\n{tail}")
        if _port_open(port) and asyncio.run(_metadata_ok(f"127.0.0.1:{port}")):
            return
        time.sleep(0.3)
    raise DevstackError(f"Kafka did not become ready within {timeout_s:.0f}s; see {paths.log_file}")


def start(
    paths: KafkaPaths,
    port: int,
    controller_port: int,
    heap: str = "512m",
    quorum: Quorum = Quorum(),
    jvm_flags: Sequence[str] = (),
) -> tuple[int, bool]:
    """Start (or reuse) the broker; returns (pid, started_now)."""
    pid, started = launch(paths, port, controller_port, heap, quorum, jvm_flags)
    wait_ready(paths, port)
    if started:
        log.info("Kafka %s ready on 127.0.0.1:%d (pid %d)", "broker", port, pid)
    return pid, started


def launch(
    paths: KafkaPaths,
    port: int,
    controller_port: int,
    heap: str = "512m",
    quorum: Quorum = Quorum(),
    jvm_flags: Sequence[str] = (),
) -> tuple[int, bool]:
    """Start the broker's process (or find it running) without waiting for it to be
    ready: a cluster's nodes are ready only once a majority of its voters runs."""
    existing = running_pid(paths)
    if existing is not None:
        return existing, False
    if _port_open(port):
        raise DevstackError(f"port {port} is taken by another process; set another Kafka port")
    java = check_java()
    fetch(paths)
    format_storage(paths, port, controller_port, quorum)
    log4j = paths.home / "log4j2.yaml"
    log4j.write_bytes(resources.files("devstack").joinpath("log4j2.yaml").read_bytes())
    with paths.log_file.open("ab") as log_out:
        process = subprocess.Popen(
            [
                java,
                f"-Xmx{heap}",
                f"-Xms{heap}",
                "-XX:+UseG1GC",
                *jvm_flags,
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                _classpath(paths),
                "kafka.Kafka",
                str(paths.config_file),
            ],
            stdout=log_out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, we stop it cleanly
        )
    paths.pid_file.write_text(str(process.pid))
    return process.pid, True


def stop(paths: KafkaPaths, timeout_s: float = 30.0) -> None:
    pid = running_pid(paths)
    if pid is None:
        paths.pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
        _reap(pid)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)
    paths.pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
