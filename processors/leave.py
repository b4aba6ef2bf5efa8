"""A static member that stops on purpose leaves its group at once.

Workers are static members (``group.instance.id``), so a restart rejoins as the same
member without a rebalance. The price (KIP-345): a static member never sends LeaveGroup,
so when a worker is stopped for good (scale-in, SIGTERM) its partitions wait out the
session timeout before another worker gets them; the chaos soak measured ~15 s for a
worker that leaves. aiokafka speaks LeaveGroup v0/v1 only, which cannot name a static
member, so this sends v3 (members by instance id), as Kafka's
``removeMembersFromConsumerGroup`` does. Sent as soon as a graceful stop has made its
last commit (processors.commits' ``after_final_commit``), before the rest of Faust's
shutdown (~2 s more): the other workers take the partitions over meanwhile. A worker
that exits for a restart (``os._exit``) does not get here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

log = logging.getLogger(__name__)


class LeaveGroupResponse_v3(Response):  # type: ignore[misc]  # aiokafka is untyped here
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(
                ("member_id", String("utf-8")),
                ("group_instance_id", String("utf-8")),
                ("error_code", Int16),
            ),
        ),
    )


class LeaveGroupRequest_v3(RequestStruct):  # type: ignore[misc]
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponse_v3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class LeaveAsStaticMember(Request[LeaveGroupRequest_v3]):  # type: ignore[misc]
    API_KEY = 13

    def __init__(self, group: str, instance_id: str) -> None:
        self._group = group
        self._instance_id = instance_id

    def build(self, request_struct_class: type[LeaveGroupRequest_v3]) -> LeaveGroupRequest_v3:
        # an unknown member id ("") with the instance id: remove that static member
        return request_struct_class(self._group, [("", self._instance_id)])


async def leave_group(bootstrap: str, group: str, instance_id: str) -> bool:
    """Remove ``instance_id`` from ``group``; True if the broker took it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        coordinator = await admin.find_coordinator(group)
        response: Any = await admin._send_request_to_node(
            coordinator, LeaveAsStaticMember(group, instance_id)
        )
    finally:
        await admin.close()
    errors = [response.error_code, *(member[2] for member in response.members)]
    if any(errors):
        log.warning("leaving group %s as %s: error codes %s", group, instance_id, errors)
        return False
    return True


async def leave_after_stop(bootstrap: str, group: str, instance_id: str) -> None:
    """Best effort, bounded: the session timeout still moves the partitions if not."""
    try:
        left = await asyncio.wait_for(leave_group(bootstrap, group, instance_id), 10.0)
    except Exception as exc:
        log.warning("could not leave group %s as %s: %r", group, instance_id, exc)
        return
    if left:
        log.info("left group %s as static member %s", group, instance_id)
