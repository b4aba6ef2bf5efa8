"""The stall watch: a partition with waiting records and no progress is reported;
quiet, caught-up or recovering partitions are not."""

from __future__ import annotations

from processors.watchdog import Stall, StallWatch


def test_waiting_records_without_progress_are_a_stall() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0, 1}, now=0)
    watch.processed(0, 41, now=5)
    watch.processed(1, 9, now=5)
    assert watch.stalls({0: 50, 1: 10}, {}, now=30) == []  # not idle long enough
    assert watch.stalls({0: 50, 1: 10}, {}, now=70) == [Stall(0, 42, 50, 65)]  # 1 caught up


def test_before_the_first_record_the_consumer_position_is_the_start() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0, 1, 2}, now=0)
    positions: dict[int, int | None] = {0: 100, 1: 7, 2: None}
    assert watch.stalls({0: 100, 1: 12, 2: 3}, positions, now=61) == [Stall(1, 7, 12, 61)]


def test_recovery_and_reassignment_restart_the_clock() -> None:
    watch = StallWatch(timeout_s=60)
    watch.assigned({0}, now=0)
    watch.idle(now=50)  # recovering
    assert watch.stalls({0: 10}, {0: 0}, now=100) == []
    assert watch.stalls({0: 10}, {0: 0}, now=111) == [Stall(0, 0, 10, 61)]
    watch.assigned({1}, now=111)  # partition 0 went to another worker
    assert watch.stalls({0: 10, 1: 5}, {1: 5}, now=200) == []
