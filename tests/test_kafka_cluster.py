"""A broker crash under load on a three-broker cluster: nothing acknowledged is lost.

The test starts its own KRaft cluster (devstack.cluster: three combined broker+controller
nodes, topics replicated 3 ways, min.insync.replicas 2) and the pipeline on it as
``make run`` starts it. While a client posts batches (and posts again every batch
answered 503, as the SDK does), the broker leading most events.raw partitions is
SIGKILLed. Every event the collector answered 202 for must reach ClickHouse exactly
once, the pipeline must go on taking events, and the broker, started again, must rejoin
every partition's in-sync replicas.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.cluster import KafkaCluster, PartitionState, partition_states
from devstack.services import free_port
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_RAW,
    TOPIC_SPECS,
    TopicSpec,
    ensure_topics,
    min_insync_replicas,
    topic_config,
)
from tests.conftest import REPO
from tests.live_stack import LiveStack, live_stack

BATCH = 25
USERS = 300  # spread over every partition
ACCEPTED = "source_topic LIKE '%events.clean'"  # derived events share the table
PER_EVENT_COUNTS = (
    f"SELECT toString(event_id) AS id, count() FROM events WHERE {ACCEPTED} GROUP BY id"
)
CLIENTS = 3  # posting at once, so some batches are in flight when the broker dies
BEFORE_KILL_S = 3.0  # load running before the crash
AFTER_KILL_S = 13.0  # covers fencing the dead broker (9 s) and moving its leaders
RETRY_PAUSE_S = 0.3  # shorter than the collector's Retry-After: more re-posts, not fewer


def test_replicated_topics_acknowledge_once_a_majority_holds_a_write() -> None:
    assert [min_insync_replicas(r) for r in (1, 2, 3, 4, 5)] == [1, 1, 2, 3, 3]
    compacted = TopicSpec("t", {"cleanup.policy": "compact"})
    assert topic_config(compacted, 1) == {"cleanup.policy": "compact"}
    assert topic_config(compacted, 3) == {"cleanup.policy": "compact", "min.insync.replicas": "2"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    made = KafkaCluster.on_ports(
        (REPO / ".devstack").resolve(),
        tmp_path_factory.mktemp("kafka-cluster"),
        [(free_port(), free_port()) for _ in range(3)],
    )
    made.start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def cluster_settings(cluster: KafkaCluster, tmp_path: Path) -> Settings:
    """Own topics, folder and ports on the cluster, every topic on all three brokers.
    Four partitions, not twelve: three JVMs and the pipeline share 2 cores."""
    made = Settings(
        kafka_bootstrap=cluster.bootstrap,
        topic_replication=cluster.replication,
        topic_partitions=4,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=tmp_path / "data",
        devstack_home=REPO / ".devstack",
        collector_port=free_port(),
        query_port=free_port(),
        processors_health_port=free_port(),
        sink_metrics_port=free_port(),
        sink_batch_max_wait_s=0.3,
        processor_stall_timeout_s=30.0,
    )
    asyncio.run(ensure_topics(made))
    return made


def _event(user: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        "user_id": f"learner-{user}",
        "device_info": {"timezone": "UTC"},
        "properties": {"content_id": "lesson-1"},
    }


@dataclass
class Load:
    """Posts batches until stopped; a batch answered 503 is posted again until a 202.
    Remembers which events were acknowledged, and when."""

    collector: httpx.Client
    accepted: dict[str, float] = field(default_factory=dict)  # event_id -> when
    unavailable: int = 0  # 503 answers (Kafka did not acknowledge in time)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    _users: int = 0

    def batch(self) -> list[dict[str, Any]]:
        events = []
        for _ in range(BATCH):
            self._users = (self._users + 1) % USERS
            events.append(_event(self._users))
        return events

    def post(self, events: list[dict[str, Any]]) -> None:
        while True:
            try:
                response = self.collector.post("/v1/events/batch", json={"events": events})
            except httpx.TimeoutException:
                response = None  # unknown outcome: the same batch again, as the SDK does
            if response is not None and response.status_code == 202:
                assert response.json() == {"accepted": len(events), "rejected": []}
                now = time.monotonic()
                self.accepted.update((e["event_id"], now) for e in events)
                return
            if response is not None:
                assert response.status_code == 503, response.text
                self.unavailable += 1
            time.sleep(RETRY_PAUSE_S)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.post(self.batch())
        except BaseException as exc:  # surfaced by the test thread
            self.error = exc

    def accepted_since(self, moment: float) -> int:
        return sum(1 for at in self.accepted.values() if at > moment)


def _events_raw_leaders(settings: Settings) -> Counter[int]:
    states = partition_states(settings.kafka_bootstrap, [settings.topic(EVENTS_RAW)])
    return Counter(s.leader for s in states)


def _our_partitions(settings: Settings) -> list[PartitionState]:
    return partition_states(
        settings.kafka_bootstrap, [settings.topic(spec.name) for spec in TOPIC_SPECS]
    )


def _wait(what: str, check: Callable[[], bool], timeout_s: float, stack: LiveStack) -> float:
    """Seconds until ``check`` held; a service exiting on its own fails the test."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        assert not stack.group.exited(), f"a service stopped: {stack.group.exited()}"
        if check():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _stored_counts(stack: LiveStack) -> dict[str, int]:
    return {str(row[0]): int(row[1]) for row in stack.sql(PER_EVENT_COUNTS)}


@pytest.mark.broker  # starts brokers of its own, not through kafka_bootstrap: mark it here
def test_leader_broker_sigkilled_under_load_loses_and_doubles_nothing(
    cluster: KafkaCluster, cluster_settings: Settings
) -> None:
    settings = cluster_settings
    assert all(len(s.replicas) == 3 for s in _our_partitions(settings))

    with live_stack(settings) as stack:
        loads = [
            Load(httpx.Client(base_url=settings.collector_url, timeout=15)) for _ in range(CLIENTS)
        ]
        posters = [threading.Thread(target=load.run, daemon=True) for load in loads]
        for poster in posters:
            poster.start()
        try:
            _wait("events acknowledged", lambda: all(ld.accepted for ld in loads), 30, stack)
            time.sleep(BEFORE_KILL_S)  # a steady stream, then the crash in the middle of it

            victim, led = _events_raw_leaders(settings).most_common(1)[0]
            cluster.kill(victim)
            killed_at = time.monotonic()
            moved_s = _wait(
                "the dead broker's leaderships to move",
                lambda: victim not in _events_raw_leaders(settings),
                60,
                stack,
            )
            time.sleep(max(0.0, AFTER_KILL_S - (time.monotonic() - killed_at)))
        finally:
            for load in loads:
                load.stop.set()
            for poster, load in zip(posters, loads, strict=True):
                poster.join(60)
                load.collector.close()
        assert all(load.error is None for load in loads), [repr(ld.error) for ld in loads]
        after_kill = sum(load.accepted_since(killed_at + moved_s) for load in loads)
        assert after_kill > 0, "nothing was acknowledged once the leaders had moved"
        unavailable = sum(load.unavailable for load in loads)

        expected = {event_id for load in loads for event_id in load.accepted}
        try:
            catch_up_s = _wait(
                f"{len(expected)} acknowledged events in ClickHouse",
                lambda: expected <= set(_stored_counts(stack)),
                120,
                stack,
            )
        except AssertionError:
            catch_up_s = float("nan")  # the counts below say what is missing
        counts = _stored_counts(stack)
        lost = expected - set(counts)
        doubled = {event_id: n for event_id, n in counts.items() if n != 1}
        assert not lost and not doubled, (len(lost), doubled)

        # the broker comes back from its folder and catches up on every partition
        restarted_at = time.monotonic()
        cluster.start_node(victim)
        _wait(
            "the restarted broker back in every in-sync replica set",
            lambda: all(len(s.isr) == 3 for s in _our_partitions(settings)),
            90,
            stack,
        )
        rejoin_s = time.monotonic() - restarted_at
        final = Load(httpx.Client(base_url=settings.collector_url, timeout=15))
        with final.collector:
            final.post(final.batch())
        _wait(
            "events posted after the rejoin in ClickHouse",
            lambda: set(final.accepted) <= set(_stored_counts(stack)),
            60,
            stack,
        )

    print(
        f"\nkilled node {victim} (led {led} of {settings.topic_partitions} events.raw "
        f"partitions); leaders moved in {moved_s:.1f} s; {len(expected)} events "
        f"acknowledged, {after_kill} of them after the move; {unavailable} answers 503; "
        f"all stored once {catch_up_s:.1f} s after the load stopped; restarted broker in "
        f"every ISR {rejoin_s:.1f} s after its start"
    )
