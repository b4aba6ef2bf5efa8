"""Collector throughput beside raw aiokafka doing the same work, and the processors' committed
offsets (which tests and benches wait on)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.stats import percentile
from bench.workload import encoded
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW

CONCURRENCY = 32


async def _bounded(items: list[Any], work: Any, in_flight: int = CONCURRENCY) -> list[float]:
    """Run ``work(item)`` with ``in_flight`` calls at once; returns per-call latencies."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            started = time.perf_counter()
            await work(item)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies


async def raw_produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> dict[str, float]:
    """aiokafka alone: the same encoded records, same acks, same concurrency."""
    records = [encoded(e) for e in events]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    await producer.start()
    try:
        started = time.perf_counter()

        async def send(record: tuple[bytes, bytes]) -> None:
            await producer.send_and_wait(topic, record[1], key=record[0])

        latencies = await _bounded(records, send)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {
        "events_per_s": len(records) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


async def collector_posts(url: str, events: list[dict[str, Any]]) -> dict[str, float]:
    """The collector over HTTP: validate, enrich, encode, publish, 202 after the ack."""
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        started = time.perf_counter()

        async def post(event: dict[str, Any]) -> None:
            response = await client.post("/v1/events", json=event)
            assert response.status_code == 202, response.text

        latencies = await _bounded(events, post)
        elapsed = time.perf_counter() - started
    return {
        "events_per_s": len(events) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


BATCH_SIZE = 100  # the SDK's flush size (seed 004)
BATCHES_IN_FLIGHT = 4


async def raw_produce_batches(
    bootstrap: str, topic: str, events: list[dict[str, Any]]
) -> dict[str, float]:
    """aiokafka alone, sending BATCH_SIZE records at once and awaiting all their acks:
    what one batch request asks of Kafka, with the same requests in flight."""
    records = [encoded(e) for e in events]
    batches = [records[i : i + BATCH_SIZE] for i in range(0, len(records), BATCH_SIZE)]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    await producer.start()
    try:
        started = time.perf_counter()

        async def send(batch: list[tuple[bytes, bytes]]) -> None:
            sent = [await producer.send(topic, value, key=key) for key, value in batch]
            await asyncio.gather(*sent)

        latencies = await _bounded(batches, send, BATCHES_IN_FLIGHT)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return _figures(len(records), elapsed, latencies)


async def collector_batches(url: str, events: list[dict[str, Any]]) -> dict[str, float]:
    """POST /v1/events/batch with BATCH_SIZE events per request; latency per request."""
    batches = [events[i : i + BATCH_SIZE] for i in range(0, len(events), BATCH_SIZE)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = time.perf_counter()

        async def post(batch: list[dict[str, Any]]) -> None:
            response = await client.post("/v1/events/batch", json={"events": batch})
            assert response.status_code == 202 and not response.json()["rejected"], response.text

        latencies = await _bounded(batches, post, BATCHES_IN_FLIGHT)
        elapsed = time.perf_counter() - started
    return _figures(len(events), elapsed, latencies)


def _figures(count: int, elapsed: float, latencies: list[float]) -> dict[str, float]:
    return {
        "events_per_s": count / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


async def committed_total(settings: Settings, group: str) -> int:
    """How many events.raw records a consumer group has committed past."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.topic(EVENTS_RAW), p) for p in range(settings.topic_partitions)
        ]
        total = 0
        for tp in partitions:
            total += await consumer.committed(tp) or 0
        return total
    finally:
        await consumer.stop()
