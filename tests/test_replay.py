"""Replay: a new processors generation rebuilds every learner from the raw log into
fresh tables, republishes projections equal to the fold, and writes no event twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import workload
from bench.throughput import committed_total
from devstack.services import ServiceGroup
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_DERIVED,
    EVENTS_RAW,
    PROJECTIONS_USER_PROGRESS,
)
from processors.generations import group_id
from processors.offsets import OffsetProbe
from processors.state_tables import changelog_topic_name
from schemas.catalog import default_catalog
from schemas.codec import decode
from schemas.registry import FileSchemaRegistry
from tests.crash_helpers import produce_and_expect, published_progress, wait_until_caught_up
from tests.kafka_read import read_all

REGISTRY = FileSchemaRegistry.from_files(default_catalog())


def _count(settings: Settings, topic: str) -> int:
    return len(read_all(settings.kafka_bootstrap, settings.topic(topic)))


def _stuck(settings: Settings, group_name: str, records: int, log: Path) -> str:
    """Why a generation did not get there: per partition, where it is and the log's end,
    and what the worker said last."""
    probe = OffsetProbe(settings.kafka_bootstrap, settings.topic(EVENTS_RAW), group_name)

    async def snapshot() -> tuple[dict[int, int], dict[int, int | None]]:
        try:
            return await probe.snapshot(set(range(settings.topic_partitions)))
        finally:
            await probe.stop()

    ends, committed = asyncio.run(snapshot())
    said = log.read_text(errors="replace").splitlines()
    tail = [line for line in said if "watchdog" in line or "task " in line][-60:] + said[-10:]
    return (
        f"{group_name} did not commit {records}: committed {committed}, ends {ends}\n"
        + "\n".join(tail)
    )


def _run_through(
    settings: Settings, records: int, expected: dict[str, dict[str, Any]], log: Path
) -> int:
    """Run the settings' generation until it has committed ``records`` raw records and
    its published progress matches ``expected``; returns how often the worker asked to
    be restarted (and was)."""
    group_name = group_id(settings, settings.processors_generation)
    restarts = 0
    with open(log, "a") as out:
        group = ServiceGroup(env=settings.as_env(), out=out)
        group.start("processors")
        try:
            deadline = time.monotonic() + 240
            while asyncio.run(committed_total(settings, group_name)) < records:
                # restarts a worker that exited on a stall, as its supervisor would
                restarts += len(group.restart_asked())
                assert not group.exited(), "processors died on their own"
                if time.monotonic() >= deadline:
                    # the worker logs what each of its tasks waits on (processors.app)
                    group.processes["processors"].send_signal(signal.SIGUSR1)
                    time.sleep(2)
                    raise AssertionError(_stuck(settings, group_name, records, log))
                time.sleep(1)
            wait_until_caught_up(settings, group, expected, timeout_s=60)
        finally:
            group.stop_all()
    return restarts


def _assert_clean_holds(settings: Settings, distinct: int, restarts: int) -> int:
    """events.clean holds exactly ``distinct`` events; more records only as copies a
    restarted worker re-sent (it re-sends what it processed after its last commit, by
    design: same ids, and the sink stores one). Returns the record count."""
    ids = [
        str(decode(REGISTRY, m.value)["event_id"])
        for m in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_CLEAN))
    ]
    assert len(set(ids)) == distinct
    assert len(ids) == distinct or restarts > 0, "copies in events.clean without a restart"
    return len(ids)


def test_replay_rebuilds_state_without_writing_events_twice(
    settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(5)
    first = workload.events(1500, users=40, seed=21, days=20, zones=("UTC",), drills=("d1", "d2"))
    first += [dict(e) for e in rng.sample(first, 100)]  # retried sends
    expected = produce_and_expect(settings, first)
    restarts = _run_through(settings, 1600, expected, tmp_path / "gen1.log")
    clean = _assert_clean_holds(settings, 1500, restarts)
    derived = _count(settings, EVENTS_DERIVED)

    # while generation 1 runs, a replay into generation 2 refuses to start
    log_path = tmp_path / "generation-1.log"
    with open(log_path, "w") as log:
        running = ServiceGroup(env=settings.as_env(), out=log)
        running.start("processors")
        try:
            deadline = time.monotonic() + 90
            while "Worker]: Ready" not in log_path.read_text(errors="replace"):
                assert time.monotonic() < deadline, "generation 1 did not start"
                time.sleep(0.5)
            refused = subprocess.run(
                [sys.executable, "-m", "processors", "replay"],
                env={**os.environ, **settings.as_env()},
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            running.stop_all()
    assert refused.returncode != 0
    assert "stop generation 1" in refused.stderr

    second = settings.model_copy(update={"processors_generation": 2})
    progress_records = _count(settings, PROJECTIONS_USER_PROGRESS)
    _run_through(second, 1600, expected, tmp_path / "gen2-replay.log")
    assert published_progress(settings) == expected  # rebuilt from nothing, equal to the fold
    assert _count(settings, PROJECTIONS_USER_PROGRESS) > progress_records  # republished
    changelog = changelog_topic_name(group_id(second, 2))
    assert len(read_all(settings.kafka_bootstrap, changelog)) > 0  # its own, fresh tables
    assert (_count(settings, EVENTS_CLEAN), _count(settings, EVENTS_DERIVED)) == (clean, derived)

    # generation 2 is now the live pipeline: new events flow through it as usual
    more = workload.events(300, users=40, seed=22, days=2, zones=("UTC",), drills=("d1",))
    expected = produce_and_expect(settings, first + more, produce_only=more)
    live_restarts = _run_through(second, 1900, expected, tmp_path / "gen2-live.log")
    assert published_progress(settings) == expected
    # copies generation 1 left (if it restarted) are still there; the live run adds
    # each new event once, more only if it restarted itself
    total = _assert_clean_holds(settings, 1500 + 300, restarts + live_restarts)
    assert total == clean + 300 or (live_restarts > 0 and total > clean + 300)
