"""The processors' ``/metrics``: Prometheus text that parses, with the consumer lag of a
partition rising while its processing is stopped and the other partitions flowing on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import ServiceGroup, free_port
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW
from tests.test_processors_poison import record

PER_PARTITION = 20


async def _produce(settings: Settings, partition: int, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for n in range(count):
            user = f"usr_p{partition}_{n}"
            _, value = record(user)
            await producer.send(
                settings.topic(EVENTS_RAW), value, key=user.encode(), partition=partition
            )
        await producer.flush()
    finally:
        await producer.stop()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by name and labels, parsed by prometheus_client's own parser."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_parse_and_lag_rises_while_a_partition_is_stopped(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    marker = tmp_path / "stall-once"  # the worker stops fetching its first partition
    own = settings.model_copy(
        update={
            "processors_health_port": port,
            "fault_stall_marker": marker,
            "processor_stall_timeout_s": 600.0,  # watched, not acted on, within this test
        }
    )
    raw = own.topic(EVENTS_RAW)
    with open(tmp_path / "worker.log", "w") as log:
        group = ServiceGroup(env=own.as_env(), out=log)
        group.start("processors")
        try:
            deadline = time.monotonic() + 90
            while not marker.exists():
                assert not group.exited(), "the worker exited"
                assert time.monotonic() < deadline, "partition 0 was never stopped"
                time.sleep(0.5)
            asyncio.run(_produce(own, 0, PER_PARTITION))
            asyncio.run(_produce(own, 1, PER_PARTITION))
            lag0 = (("partition", "0"), ("topic", raw))
            lag1 = (("partition", "1"), ("topic", raw))
            applied = (("verdict", "applied"),)
            samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert not group.exited(), "the worker exited"
                samples = _scrape(port)
                if (
                    samples.get(("learnstream_processors_consumer_lag", lag0)) == PER_PARTITION
                    and samples.get(("learnstream_processors_consumer_lag", lag1)) == 0
                    and samples.get(("learnstream_processors_events_total", applied))
                    == PER_PARTITION
                ):
                    break
                time.sleep(1)
            else:
                raise AssertionError(f"lag never showed the stopped partition: {samples}")
        finally:
            group.stop_all()
    records_in = samples[("learnstream_processors_records_in_total", (("topic", raw),))]
    assert records_in == PER_PARTITION  # only partition 1's were taken
    assert samples[("learnstream_processors_batch_seconds_count", ())] >= 1
    out = {labels: v for (name, labels), v in samples.items() if name.endswith("records_out_total")}
    assert out[(("topic", own.topic("events.clean")),)] == PER_PARTITION
