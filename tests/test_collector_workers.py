"""``python -m collector --workers N``: N uvicorn workers on one port, as in production.

A batch is answered once every event in it is in Kafka, whichever worker takes it, and
the workers do not outlive their supervisor: a supervisor killed outright (SIGKILL, no
chance to stop them) must not leave workers serving the port behind a restarted one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW
from tests.conftest import REPO
from tests.kafka_read import read_all


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
                continue
            with contextlib.suppress(OSError):
                if b"resource_tracker" not in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _ready(settings: Settings) -> bool:
    try:
        return httpx.get(f"{settings.collector_url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Running:
    supervisor: subprocess.Popen[bytes]
    workers: list[int]


@pytest.fixture
def collector(settings: Settings) -> Iterator[Running]:
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "--workers", "2"],
        env={**os.environ, **settings.as_env()},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    running = Running(process, [])
    try:
        _wait_until(lambda: _ready(settings), 60, "the collector to be ready")
        _wait_until(lambda: len(_children(process.pid)) >= 2, 30, "two workers")
        running.workers = _children(process.pid)
        yield running
    finally:
        for pid in [process.pid, *running.workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(10)


def _lesson(user: str) -> dict[str, str | dict[str, str]]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": "2026-11-23T11:00:00Z",
        "user_id": user,
        "properties": {"content_id": "lesson-7"},
    }


def test_a_batch_is_answered_once_all_of_it_is_in_kafka(
    settings: Settings, collector: Running
) -> None:
    events = [_lesson(f"learner-{i % 7}") for i in range(60)]
    response = httpx.post(
        f"{settings.collector_url}/v1/events/batch", json={"events": events}, timeout=30
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 60, "rejected": []}
    # read at once: a 202 means every record was acknowledged, so all are there already
    stored = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW))
    assert len(stored) == 60
    assert {m.key for m in stored} == {f"learner-{i}".encode() for i in range(7)}


def test_workers_leave_when_their_supervisor_is_killed(collector: Running) -> None:
    assert len(collector.workers) == 2
    os.kill(collector.supervisor.pid, signal.SIGKILL)  # no chance to stop its workers
    collector.supervisor.wait(10)
    _wait_until(lambda: not any(_alive(p) for p in collector.workers), 30, "the workers to exit")
