"""Nothing lost, nothing counted twice: the processors worker is SIGKILLed at random
points while it works through a large log, restarted each time, and the projections
it finally publishes must equal the fold of the deduplicated log exactly."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bench import workload
from devstack.services import ServiceGroup
from learnstream.settings import Settings
from tests.crash_helpers import (
    expected_mastery_and_modes,
    produce_and_expect,
    published_mastery_and_modes,
    published_progress,
    wait_until_caught_up,
)

# 30 000 (with 5 % repeats) keeps five kills mid-flight and the suite within its budget
EVENT_COUNT = int(os.environ.get("LEARNSTREAM_CRASH_EVENTS", "30000"))
KILLS = 5


def generated(rng: random.Random) -> list[dict[str, Any]]:
    """The bench workload, 200 learners over 60 days in 3 zones, plus retried sends."""
    events = workload.events(
        EVENT_COUNT,
        users=200,
        seed=rng.randrange(2**32),
        days=60,
        zones=("UTC", "Europe/Paris", "America/Chicago"),
        drills=("d1", "d2", "d3", "d4"),
    )
    events += [dict(e) for e in rng.sample(events, EVENT_COUNT // 20)]
    rng.shuffle(events)
    return events


@contextmanager
def worker_log(tmp_path: Path) -> Iterator[IO[str]]:
    """The workers' interleaved logs; a failure quotes their warnings and errors."""
    path = Path(os.environ.get("LEARNSTREAM_CRASH_LOG", tmp_path / "workers.log"))
    with open(path, "a") as log:
        try:
            yield log
        except AssertionError as failure:
            log.flush()
            notable = [
                line.rstrip()
                for line in path.read_text(errors="replace").splitlines()
                if any(level in line for level in ("WARNING", "ERROR", "CRITICAL", "Traceback"))
            ]
            excerpt = "\n".join(notable[-60:])
            raise AssertionError(
                f"{failure}\nworker log ({path}), last warnings:\n{excerpt}"
            ) from None


def run_with_kills(
    settings: Settings, log: IO[str], expected: dict[str, dict[str, Any]], rng: random.Random
) -> int:
    """Kill the worker KILLS times mid-flight, then let it finish; returns the kill count."""
    group = ServiceGroup(env=settings.as_env(), out=log)
    kills = 0
    try:
        group.start("processors")
        while kills < KILLS:
            time.sleep(rng.uniform(6, 14))  # start-up, recovery and some progress
            group.kill("processors")
            kills += 1
            group.start("processors")
        wait_until_caught_up(settings, group, expected, timeout_s=480)
    finally:
        group.stop_all()
    return kills


def test_sigkilled_worker_restarts_to_exactly_the_fold(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(2026)
    events = generated(rng)
    expected = produce_and_expect(settings, events)

    with worker_log(tmp_path) as log:
        kills = run_with_kills(settings, log, expected, rng)
    assert kills == KILLS
    assert published_progress(settings) == expected  # no double XP, no lost day
    assert published_mastery_and_modes(settings) == expected_mastery_and_modes(events)


def test_second_worker_joining_mid_run_gives_the_same_state(
    settings: Settings, tmp_path: Path
) -> None:
    """A rebalance hands partitions, with their table state, from one worker to another."""
    rng = random.Random(7)
    events = workload.events(
        EVENT_COUNT // 3,
        users=150,
        seed=11,
        days=40,
        zones=("UTC", "Asia/Tokyo"),
        drills=("d1", "d2", "d3"),
    )
    events += [dict(e) for e in rng.sample(events, len(events) // 20)]
    expected = produce_and_expect(settings, events)
    with worker_log(tmp_path) as log:
        group = ServiceGroup(env=settings.as_env(), out=log)
        try:
            group.start("processors", "worker-1")
            time.sleep(12)  # worker 1 owns every partition and is working through them
            group.start("processors", "worker-2")  # rebalance mid-run
            wait_until_caught_up(settings, group, expected, timeout_s=480)
        finally:
            group.stop_all()
    assert published_progress(settings) == expected
    assert published_mastery_and_modes(settings) == expected_mastery_and_modes(events)
