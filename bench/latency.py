"""End-to-end latency: from the collector's 202 to the learner's projection update.

Events go to the collector in batches on a fixed schedule (``rate`` events/s in ten
batches a second). Each learner's k-th event is acknowledged at some moment; the
latency is the time until ``projections.user_progress`` shows that learner with
``events_applied >= k``. Every event is a lesson_completed with a fresh id, so none is
dropped by dedup or sampling and each moves events_applied by one.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.stats import percentile
from bench.tail import follow
from bench.workload import lesson
from learnstream.settings import Settings
from learnstream.topics import PROJECTIONS_USER_PROGRESS
from schemas.codec import decode
from schemas.registry import FileSchemaRegistry

TICKS_PER_S = 10


async def _watch(
    settings: Settings, seen: dict[tuple[str, int], float], stop: asyncio.Event
) -> None:
    """Record when each (user, events_applied) first appears on the projection topic."""
    registry = FileSchemaRegistry.from_files()

    def on_record(record: Any, now: float) -> None:
        progress = decode(registry, record.value)
        seen.setdefault((progress["user_id"], progress["events_applied"]), now)

    topic = settings.topic(PROJECTIONS_USER_PROGRESS)
    await follow(settings, topic, on_record, stop, time.perf_counter)


async def steady_load(
    settings: Settings, rate: int, seconds: float, users: int = 200, drain_s: float = 60
) -> dict[str, float]:
    """Post ``rate`` events/s for ``seconds``; latency percentiles from ack to projection."""
    acked: dict[tuple[str, int], float] = {}
    seen: dict[tuple[str, int], float] = {}
    sent_per_user: dict[str, int] = defaultdict(int)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(settings, seen, stop))
    await asyncio.sleep(2)  # the watcher is at the end of the topic before events flow
    per_tick = max(1, rate // TICKS_PER_S)
    ticks = int(seconds * TICKS_PER_S)
    base = datetime.now(UTC) - timedelta(hours=1)
    counter = 0
    async with httpx.AsyncClient(base_url=settings.collector_url, timeout=60) as client:

        async def post(batch: list[dict[str, Any]], keys: list[tuple[str, int]]) -> None:
            response = await client.post("/v1/events/batch", json={"events": batch})
            assert response.status_code == 202 and not response.json()["rejected"], response.text
            now = time.perf_counter()
            for key in keys:
                acked[key] = now

        started = time.perf_counter()
        posts = []
        for tick in range(ticks):
            batch, keys = [], []
            for _ in range(per_tick):
                user = f"bench-{counter % users}"
                counter += 1
                sent_per_user[user] += 1
                batch.append(lesson(user, base + timedelta(milliseconds=counter)))
                keys.append((user, sent_per_user[user]))
            posts.append(asyncio.create_task(post(batch, keys)))
            await asyncio.sleep(max(0.0, started + (tick + 1) / TICKS_PER_S - time.perf_counter()))
        await asyncio.gather(*posts)
        sending_s = time.perf_counter() - started
    deadline = time.perf_counter() + drain_s
    while time.perf_counter() < deadline and not all(k in seen for k in acked):
        await asyncio.sleep(0.2)
    stop.set()
    await watcher
    latencies = [seen[k] - acked[k] for k in acked if k in seen]
    return {
        "offered_events_per_s": counter / sending_s,
        "events": counter,
        "updated": len(latencies),
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }
