"""Which remembered event_ids have left the dedup window, per source partition.

Time is the arrival time of the records themselves (their Kafka timestamps), not the
wall clock: replaying the log makes the same decisions, and a worker that was down
does not forget ids while it was away. Expired ids are deleted inside the stream, so
the table's changelog gets tombstones and its size stays bounded by the window.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def arrival_ms(remembered: Mapping[str, Any], unknown: int) -> int:
    """When a remembered id's first record arrived. Entries written before arrival times
    were kept have none: they count as arriving ``unknown`` (the record being processed),
    which keeps them one more full window: never forgotten early, still forgotten."""
    arrived = remembered.get("t")
    return int(arrived) if arrived is not None else unknown


@dataclass
class ExpiryQueue:
    window_ms: int
    # per partition: min-heap of (arrival ms, event_id)
    _heaps: dict[int, list[tuple[int, str]]] = field(default_factory=dict)

    def knows(self, partition: int) -> bool:
        return partition in self._heaps

    def rebuild(self, partition: int, remembered: Iterable[tuple[str, int]]) -> None:
        """After (re)assignment: the ids the table already holds for this partition."""
        heap = [(arrived, event_id) for event_id, arrived in remembered]
        heapq.heapify(heap)
        self._heaps[partition] = heap

    def forget_partition(self, partition: int) -> None:
        self._heaps.pop(partition, None)

    def remember(self, partition: int, event_id: str, arrived_ms: int) -> None:
        heapq.heappush(self._heaps.setdefault(partition, []), (arrived_ms, event_id))

    def expired(self, partition: int, now_ms: int) -> list[tuple[str, int]]:
        """(event_id, arrival ms) of every id older than the window, removed from the queue.

        The caller deletes an id only if the table still holds that arrival time: the
        same id may have been remembered again after it expired once.
        """
        heap = self._heaps.get(partition, [])
        horizon = now_ms - self.window_ms
        gone = []
        while heap and heap[0][0] < horizon:
            arrived, event_id = heapq.heappop(heap)
            gone.append((event_id, arrived))
        return gone

    def __len__(self) -> int:
        return sum(len(h) for h in self._heaps.values())
