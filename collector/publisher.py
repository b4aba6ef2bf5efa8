"""Durable publish: a send counts only once Kafka acknowledged it (acks=all, idempotent)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from collector.partition_batches import PartitionBatches

log = logging.getLogger(__name__)

# What "acknowledged" means, shared with the bench's raw-produce baseline so both are held
# to the same durability: every in-sync replica has the record, written once. Record
# batches of up to 256 KiB (aiokafka's default is 16 KiB): the requests of a moment fill
# one per partition, sent in one round trip instead of several (CPU per record of a
# publish 4.0 -> 2.0 µs; BENCHMARKS.md, issue 14). The broker takes up to 1 MiB a batch.
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 2,
    "max_batch_size": 256 * 1024,
}


class PublishUnavailable(Exception):
    """Kafka did not acknowledge within the bound; the caller should retry later."""


# Errors after which an idempotent producer never recovers: every later send fails the
# same way (aio-libs/aiokafka#1017: OutOfOrderSequenceNumber after a broker restart; the
# chaos soak saw the collector answer 503 to everything for minutes while /readyz said
# 200). The producer is replaced by a new one, with a new producer id.
FATAL_TO_PRODUCER = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)


class KafkaPublisher:
    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._started: AIOKafkaProducer | None = None
        self._replacing: asyncio.Task[None] | None = None
        self.replaced = 0  # producers replaced after a fatal error (for logs and tests)
        self._batches = PartitionBatches(lambda: self._producer, timeout_s)

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._started is None:
            raise RuntimeError("publisher used before start()")
        return self._started

    async def start(self) -> None:
        self._started = await self._new_producer()

    async def _new_producer(self) -> AIOKafkaProducer:
        # built here, not in __init__: aiokafka binds to the running event loop
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            request_timeout_ms=int(self._timeout_s * 1000),
            **PRODUCER_SETTINGS,
        )
        await producer.start()
        return producer

    async def stop(self) -> None:
        if self._replacing is not None:
            self._replacing.cancel()
        try:  # what requests still wait for, within the bound they wait
            await asyncio.wait_for(self._batches.flush(), self._timeout_s)
        except TimeoutError:
            self._batches.cancel()
        if self._started is not None:
            await self._started.stop()
            self._started = None

    def _replace_after(self, error: BaseException) -> None:
        """Start replacing the producer (once, in the background) if ``error`` left it
        unusable; requests meanwhile get 503 and their clients retry."""
        if not isinstance(error, FATAL_TO_PRODUCER) or self._replacing is not None:
            return
        log.warning("the Kafka producer cannot go on after %r; replacing it", error)
        self._replacing = asyncio.ensure_future(self._replace(self._producer))

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        try:
            while True:
                try:
                    fresh = await self._new_producer()
                    break
                except KafkaError as exc:  # the broker may still be coming back
                    log.warning("a new Kafka producer did not start (%r); retrying", exc)
                    await asyncio.sleep(1.0)
            self._started = fresh
            self.replaced += 1
            try:
                await asyncio.wait_for(broken.stop(), self._timeout_s)
            except Exception:  # it is broken; its records were answered 503 already
                log.info("the replaced producer did not stop cleanly", exc_info=True)
        finally:
            self._replacing = None

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self.publish_all(topic, ((key, value),))

    async def publish_all(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Returns once Kafka acknowledged every record, or raises PublishUnavailable.

        Each record goes into the record batch its partition is filling
        (collector/partition_batches.py), shared with the other requests of the moment;
        the request waits for the batches its records went into, all within one bound."""
        if not records:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                partition = await self._batches.partitioner(topic)
        except (TimeoutError, KafkaError) as exc:
            raise PublishUnavailable(f"Kafka did not answer: {exc!r}") from exc
        append = self._batches.append
        batches = {append(topic, partition(key), key, value) for key, value in records}
        for batch in batches:
            batch.waiters += 1
        try:
            await asyncio.wait([b.delivered for b in batches], timeout=deadline - loop.time())
        finally:
            for batch in batches:
                if not batch.delivered.done():
                    batch.waiters -= 1  # given up on: dropped if no request still waits
        for batch in batches:
            if not batch.delivered.done():
                raise PublishUnavailable(f"Kafka did not acknowledge within {self._timeout_s:g} s")
            error = batch.delivered.exception()
            if error is not None:
                self._replace_after(error)
                raise PublishUnavailable(f"Kafka did not acknowledge: {error!r}") from error

    async def is_ready(self) -> bool:
        """Kafka answers, and the producer is not being replaced after a fatal error."""
        if self._replacing is not None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), self._timeout_s)
        except (TimeoutError, KafkaError):
            return False
        return True
