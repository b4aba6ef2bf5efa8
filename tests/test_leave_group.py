"""A static member stopped on purpose leaves its group at once (LeaveGroup v3)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processors.leave import leave_group


async def _state(bootstrap: str, group: str) -> tuple[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    described = response.groups[0]
    return described[2], len(described[5])


async def _scenario(bootstrap: str) -> None:
    topic, group = f"lg-{uuid.uuid4().hex[:8]}", f"lg-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, group_instance_id="worker-x"
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
    finally:
        await consumer.stop()  # a static member: stopping does not leave
    assert await _state(bootstrap, group) == ("Stable", 1)
    assert await leave_group(bootstrap, group, "worker-x")
    assert await _state(bootstrap, group) == ("Empty", 0)


def test_a_static_member_that_stopped_leaves_its_group_at_once(kafka_bootstrap: str) -> None:
    asyncio.run(_scenario(kafka_bootstrap))
