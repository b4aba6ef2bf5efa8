"""Three Apache Kafka brokers on loopback: a KRaft cluster for replication to mean something.

Each node is a combined broker+controller (devstack.kafka) with its own data folder; the
three are the controller quorum's voters, so any two keep the cluster running. Kafka's
own topics are replicated 3 ways with ``min.insync.replicas=2``, as learnstream's topics
are when ``LEARNSTREAM_TOPIC_REPLICATION`` is 3 (learnstream.topics). A node can be
SIGKILLed and started again from its folder, as a broker crash and its repair are.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from devstack import kafka

CLUSTER_SIZE = 3
# three JVMs share the machine with the services: half the single broker's heap each
NODE_HEAP = "256m"
# Three JVMs starting at once on a small machine spend most of their start-up compiling;
# the quick compiler alone starts them in about half the time (measured on 2 cores).
# These are development and test brokers: bench/ measures on the single broker.
NODE_JVM_FLAGS = ("-XX:TieredStopAtLevel=1",)


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int
    paths: kafka.KafkaPaths

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class KafkaCluster:
    nodes: tuple[Node, ...]
    heap: str = NODE_HEAP

    @classmethod
    def on_ports(
        cls, home: Path, data: Path, ports: Sequence[tuple[int, int]], heap: str = NODE_HEAP
    ) -> KafkaCluster:
        """Nodes 1..n with these (broker port, controller port) pairs, node i's data in
        ``data``/node-i. ``home`` holds the jars, as for a single broker."""
        return cls(
            tuple(
                Node(i, port, controller, kafka.KafkaPaths(home=home, data=data / f"node-{i}"))
                for i, (port, controller) in enumerate(ports, start=1)
            ),
            heap,
        )

    @classmethod
    def from_base_port(cls, home: Path, data: Path, base_port: int) -> KafkaCluster:
        """The devstack's layout: node i listens on base+2(i-1), its controller on the
        port after it; node 1 sits where the single broker would."""
        ports = [(base_port + 2 * i, base_port + 2 * i + 1) for i in range(CLUSTER_SIZE)]
        return cls.on_ports(home, data, ports)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def replication(self) -> int:
        return len(self.nodes)

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def _quorum(self, node: Node) -> kafka.Quorum:
        voters = tuple((n.node_id, n.controller_port) for n in self.nodes)
        return kafka.Quorum(node.node_id, voters, self._cluster_id())

    def _cluster_id(self) -> str:
        """One id for every node, kept beside their folders: a node formatted later (its
        folder lost) must join the same cluster, not found a new one."""
        root = self.nodes[0].paths.data.parent
        root.mkdir(parents=True, exist_ok=True)
        file = root / "cluster.id"
        if not file.exists():
            staging = root / f"cluster.id.{os.getpid()}"
            staging.write_text(uuid.uuid4().hex[:22])
            staging.replace(file)
        return file.read_text().strip()

    def _launch(self, node: Node) -> bool:
        _, started = kafka.launch(
            node.paths,
            node.port,
            node.controller_port,
            self.heap,
            self._quorum(node),
            NODE_JVM_FLAGS,
        )
        return started

    def start(self, timeout_s: float = 120.0) -> bool:
        """Start (or reuse) every node and wait until each answers; True if any started now.

        All are launched before any is waited for: a node is ready only once a majority
        of the quorum's voters runs."""
        started = False
        for node in self.nodes:
            started = self._launch(node) or started
        for node in self.nodes:
            kafka.wait_ready(node.paths, node.port, timeout_s)
        self.wait_for_brokers(len(self.nodes), timeout_s)
        return started

    def wait_for_brokers(self, count: int, timeout_s: float = 60.0) -> None:
        """Until ``count`` brokers are registered and unfenced: a topic created before
        that gets replicas on a fenced node out of sync from its first write."""
        deadline = time.monotonic() + timeout_s
        while (live := len(live_brokers(self.bootstrap))) < count:
            if time.monotonic() > deadline:
                raise kafka.DevstackError(f"only {live} of {count} Kafka brokers joined")
            time.sleep(0.3)

    def start_node(self, node_id: int, timeout_s: float = 120.0) -> None:
        """Start one node again from its folder (after a crash or a stop)."""
        node = self.node(node_id)
        self._launch(node)
        kafka.wait_ready(node.paths, node.port, timeout_s)
        self.wait_for_brokers(len(self.nodes), timeout_s)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown, no leadership handed over."""
        paths = self.node(node_id).paths
        pid = kafka.running_pid(paths)
        if pid is None:
            raise kafka.DevstackError(f"Kafka node {node_id} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while kafka.running_pid(paths) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every node, all asked at once: one after another, each would first hand
        its leaderships to the others, which are about to stop too."""
        for node in self.nodes:
            if (pid := kafka.running_pid(node.paths)) is not None:
                os.kill(pid, signal.SIGTERM)
        for node in self.nodes:
            kafka.stop(node.paths)


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int  # node id; -1 while none
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def _metadata(bootstrap: str, topics: list[str]) -> tuple[list[Any], list[Any]]:
    """(brokers, topics) of the cluster's metadata, asked of any node that answers: the
    admin client sends to a random known node, which may be the one just killed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        deadline = time.monotonic() + 15
        while True:
            try:
                cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
                described = await asyncio.wait_for(admin.describe_topics(topics), 5)
                return list(cluster["brokers"]), list(described)
            except (KafkaError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


def live_brokers(bootstrap: str) -> list[int]:
    """Node ids of the brokers the cluster has registered and not fenced."""
    try:
        brokers, _ = asyncio.run(_metadata(bootstrap, []))
    except (KafkaError, TimeoutError):
        return []
    return sorted(int(b["node_id"]) for b in brokers)


def partition_states(bootstrap: str, topics: Sequence[str]) -> list[PartitionState]:
    """Leader, replicas and in-sync replicas of every partition of ``topics``."""
    _, described = asyncio.run(_metadata(bootstrap, list(topics)))
    states = []
    for topic in described:
        for part in topic["partitions"]:
            states.append(
                PartitionState(
                    topic["topic"],
                    int(part["partition"]),
                    int(part["leader"]),
                    tuple(int(r) for r in part["replicas"]),
                    tuple(int(r) for r in part["isr"]),
                )
            )
    return sorted(states, key=lambda s: (s.topic, s.partition))
