"""Durable publish: a send counts only once Kafka acknowledged it (acks=all, idempotent)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError


class PublishUnavailable(Exception):
    """Kafka did not acknowledge within the bound; the caller should retry later."""


class KafkaPublisher:
    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._started: AIOKafkaProducer | None = None

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._started is None:
            raise RuntimeError("publisher used before start()")
        return self._started

    async def start(self) -> None:
        # built here, not in __init__: aiokafka binds to the running event loop
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        await producer.start()
        self._started = producer

    async def stop(self) -> None:
        if self._started is not None:
            await self._started.stop()
            self._started = None

    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(topic, value=value, key=key), self._timeout_s
            )
        except (TimeoutError, KafkaError) as exc:
            raise PublishUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc

    async def is_ready(self) -> bool:
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), self._timeout_s)
        except (TimeoutError, KafkaError):
            return False
        return True
