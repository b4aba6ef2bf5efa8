"""The stall watch: a partition with waiting records and no progress is reported;
quiet, caught-up or recovering partitions are not. End to end, a worker whose partition
stops being fetched exits for a restart, and the restart finishes the work."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from bench import workload
from devstack.services import ServiceGroup, free_port
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN
from processors.health import serve_health
from processors.watchdog import (
    NotAdvancing,
    Stall,
    StallWatch,
    WatchdogThread,
    warn_not_advancing,
)
from schemas.codec import decode
from tests.crash_helpers import REGISTRY, produce_and_expect
from tests.kafka_read import read_all


def test_waiting_records_without_progress_are_a_stall() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0, 1}, now=0)
    watch.processed(0, 41, now=5)
    watch.processed(1, 9, now=5)
    assert watch.stalls({0: 50, 1: 10}, {}, now=30) == []  # not idle long enough
    assert watch.stalls({0: 50, 1: 10}, {}, now=70) == [Stall(0, 42, 50, 65)]  # 1 caught up


def test_before_the_first_record_the_committed_offset_is_the_start() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0, 1, 2}, now=0)
    committed: dict[int, int | None] = {0: 100, 1: 7, 2: None}  # 2: nothing committed yet
    assert watch.stalls({0: 100, 1: 12, 2: 3}, committed, now=61) == [Stall(1, 7, 12, 61)]


def test_recovery_and_reassignment_restart_the_clock() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0}, now=0)
    assert watch.recovering(now=50)
    watch.flowing()
    assert watch.stalls({0: 10}, {0: 0}, now=100) == []
    assert watch.stalls({0: 10}, {0: 0}, now=111) == [Stall(0, 0, 10, 61)]
    watch.assigned({1}, now=111)  # partition 0 went to another worker
    assert watch.stalls({0: 10, 1: 5}, {1: 5}, now=200) == []


def test_a_recovery_that_never_ends_is_a_stall_too() -> None:
    watch = StallWatch(timeout_s=60, recovery_grace_factor=5)
    watch.assigned({0}, now=0)
    assert watch.recovering(now=10)
    assert watch.recovering(now=300)  # 290 s into recovery: still within 5 x 60 s
    assert watch.stalls({0: 10}, {0: 0}, now=300) == []
    assert not watch.recovering(now=311)  # grace over: the clock runs again
    assert watch.stalls({0: 10}, {0: 0}, now=361) == [Stall(0, 0, 10, 61)]


def test_a_stalled_worker_exits_and_its_restart_finishes_the_work(
    settings: Settings, tmp_path: Path
) -> None:
    """A partition stops being fetched (injected); the worker notices, exits with 75, and
    once restarted processes everything: every event comes out, under its own id."""
    marker = tmp_path / "stalled-once"
    faulty = settings.model_copy(update={"fault_stall_marker": marker})
    log_path = tmp_path / "worker.log"
    events = workload.events(90, users=30, seed=4)
    with open(log_path, "a") as log:
        group = ServiceGroup(env=faulty.as_env(), out=log)
        group.start("processors")
        try:
            deadline = time.monotonic() + 90
            while not marker.exists():  # ready, flowing, and one partition no longer fetched
                assert time.monotonic() < deadline and not group.exited()
                time.sleep(0.5)
            produce_and_expect(faulty, events)
            deadline = time.monotonic() + 180
            clean: list[Any] = []
            expected_ids = {e["event_id"] for e in events}
            while time.monotonic() < deadline:
                assert not group.supervise(), "processors died on their own"
                time.sleep(1)
                clean = read_all(faulty.kafka_bootstrap, faulty.topic(EVENTS_CLEAN))
                if {str(decode(REGISTRY, m.value)["event_id"]) for m in clean} >= expected_ids:
                    break
        finally:
            group.stop_all()
    text = log_path.read_text(errors="replace")
    assert "partitions stalled" in text and "exiting for a restart" in text
    ids = [str(decode(REGISTRY, m.value)["event_id"]) for m in clean]
    # every event came out; records processed but not yet committed when the worker
    # exited are processed again and re-sent with the same id (the sink keeps one)
    assert set(ids) == {e["event_id"] for e in events}


def test_idle_for_is_the_time_since_any_partition_last_moved() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0, 1}, now=100.0)
    watch.processed(1, 5, now=130.0)
    assert watch.idle_for(150.0) == 20.0
    watch.assigned(set(), now=200.0)
    assert watch.idle_for(210.0) == 0.0


def test_a_commit_that_stops_behind_processed_records_is_a_stall() -> None:
    watch = StallWatch(timeout_s=30)
    watch.assigned({0, 1}, now=0.0)
    watch.processed(0, 9, now=1.0)  # partition 0 processed up to 9: next is 10
    assert watch.commit_stalls({0: 5, 1: 0}, now=10.0) == []  # the clock starts
    assert watch.commit_stalls({0: 8, 1: 0}, now=35.0) == []  # it moved: clock restarts
    assert watch.commit_stalls({0: 8, 1: 0}, now=64.0) == []
    assert watch.commit_stalls({0: 8, 1: 0}, now=65.0) == [Stall(0, 8, 10, 30.0)]
    assert watch.commit_stalls({0: 10, 1: 0}, now=70.0) == []  # caught up: nothing held
    # partition 1 processed nothing: a commit that does not move is no evidence there
    assert watch.commit_stalls({0: 10, 1: 0}, now=500.0) == []


def test_a_partition_not_advancing_is_reported_once_at_half_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0, 1}, now=0.0)
    watch.processed(0, 41, now=5.0)  # partition 0: next is 42, and 50 is the end
    ends = {0: 50, 1: 7}
    committed: dict[int, int | None] = {0: 40, 1: 7}  # partition 1 is caught up
    with caplog.at_level(logging.WARNING, logger="processors.watchdog"):
        warn_not_advancing(watch, ends, committed, now=34.0)  # idle 29 s: under half
        assert watch.unready(now=34.0) == []
        warn_not_advancing(watch, ends, committed, now=36.0)  # idle 31 s
        assert watch.unready(now=40.0) == [
            {"partition": 0, "committed": 40, "end": 50, "since_s": 35.0}
        ]
        warn_not_advancing(watch, ends, committed, now=46.0)  # the same stall: said once
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    assert "partition 0 is not advancing: committed offset 40, end offset 50" in warning.message


def test_progress_ends_a_report_and_a_new_stall_is_reported_again() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0}, now=0.0)
    assert watch.not_advancing({0: 10}, {0: 0}, now=31.0) == [NotAdvancing(0, 0, 10, 0.0)]
    assert watch.not_advancing({0: 10}, {0: 0}, now=41.0) == []  # still the same stall
    watch.processed(0, 3, now=45.0)
    assert watch.not_advancing({0: 10}, {0: 0}, now=50.0) == []
    assert watch.unready(now=50.0) == []  # it moved: ready again
    assert watch.not_advancing({0: 10}, {0: 0}, now=76.0) == [NotAdvancing(0, 0, 10, 45.0)]
    watch.assigned({1}, now=80.0)  # partition 0 went to another worker
    assert watch.unready(now=80.0) == []


def test_readyz_names_the_partitions_that_do_not_advance_and_healthz_stays_up() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({2}, now=time.monotonic() - 40)  # idle for 40 s
    port = free_port()
    server = serve_health(port, watch)
    assert server is not None
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/readyz").status_code == 200  # nothing checked yet
        watch.not_advancing({2: 9}, {2: 4}, now=time.monotonic())
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unready"
        (stalled,) = body["stalled"]
        assert {k: stalled[k] for k in ("partition", "committed", "end")} == {
            "partition": 2,
            "committed": 4,
            "end": 9,
        }
        assert stalled["since_s"] >= 40
        assert httpx.get(f"{base}/healthz").status_code == 200
        watch.processed(2, 8, now=time.monotonic())
        watch.not_advancing({2: 9}, {2: 4}, now=time.monotonic())
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_health_port_in_use_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    watch = StallWatch(timeout_s=60)
    port = free_port()
    first = serve_health(port, watch)
    assert first is not None
    try:
        with caplog.at_level(logging.ERROR, logger="processors.health"):
            assert serve_health(port, watch) is None
        assert "health endpoint not served" in caplog.text
        assert serve_health(0, watch) is None  # 0: off
    finally:
        first.shutdown()
        first.server_close()


class _Exited(Exception):
    pass


class _Watchdog(WatchdogThread):
    @staticmethod
    def _exit(reason: str) -> NoReturn:
        raise _Exited(reason)


def test_a_table_recovery_that_reads_nothing_for_the_timeout_is_a_stall() -> None:
    remaining = [500]
    watchdog = _Watchdog(
        StallWatch(timeout_s=30),
        make_probe=lambda: None,  # type: ignore[arg-type,return-value]
        is_recovering=lambda: True,
        recovery_remaining=lambda: remaining[0],
    )
    watchdog._check_recovery_moves(now=0.0)
    remaining[0] = 200  # reading: a long recovery that moves goes on
    watchdog._check_recovery_moves(now=40.0)
    watchdog._check_recovery_moves(now=69.0)
    with pytest.raises(_Exited, match="read nothing for 30s with 200 changelog records left"):
        watchdog._check_recovery_moves(now=70.0)


def test_a_recovery_with_nothing_left_to_read_is_not_a_stall() -> None:
    watchdog = _Watchdog(
        StallWatch(timeout_s=30),
        make_probe=lambda: None,  # type: ignore[arg-type,return-value]
        is_recovering=lambda: True,
        recovery_remaining=lambda: 0,
    )
    for now in (0.0, 40.0, 80.0):
        watchdog._check_recovery_moves(now=now)
