"""The dedup window's bookkeeping, as plain decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.dedup_window import ExpiryQueue, arrival_ms


def test_ids_leave_the_window_in_arrival_order_per_partition() -> None:
    queue = ExpiryQueue(window_ms=1000)
    queue.remember(0, "a", 100)
    queue.remember(0, "b", 900)
    queue.remember(1, "c", 100)
    assert queue.expired(0, 1100) == []  # 'a' is exactly at the edge: still inside
    assert queue.expired(0, 1101) == [("a", 100)]
    assert queue.expired(0, 5000) == [("b", 900)]
    assert queue.expired(1, 5000) == [("c", 100)]
    assert len(queue) == 0


def test_rebuild_restores_what_the_table_holds_for_a_partition() -> None:
    queue = ExpiryQueue(window_ms=10)
    assert not queue.knows(2)
    queue.rebuild(2, [("x", 50), ("y", 5)])
    assert queue.knows(2)
    assert queue.expired(2, 30) == [("y", 5)]
    queue.forget_partition(2)
    assert not queue.knows(2)


@given(
    st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 10_000)), max_size=50),
    st.integers(0, 20_000),
)
def test_exactly_the_entries_older_than_the_window_expire(
    arrivals: list[tuple[str, int]], now: int
) -> None:
    queue = ExpiryQueue(window_ms=2_000)
    for event_id, arrived in arrivals:
        queue.remember(0, event_id, arrived)
    gone = queue.expired(0, now)
    assert sorted(gone) == sorted((e, t) for e, t in arrivals if t < now - 2_000)
    assert len(queue) == len(arrivals) - len(gone)


def test_entries_from_before_arrival_times_were_kept_expire_a_window_later() -> None:
    """State written by an older version has no "t": it must neither crash the worker
    (it did, on a data folder kept from before) nor be forgotten early."""
    legacy, current = {"p": 0, "o": 5}, {"p": 0, "o": 6, "t": 1_000}
    assert arrival_ms(legacy, unknown=50_000) == 50_000
    assert arrival_ms(current, unknown=50_000) == 1_000
    queue = ExpiryQueue(window_ms=10_000)
    queue.rebuild(0, [("old", arrival_ms(legacy, 50_000)), ("new", arrival_ms(current, 50_000))])
    assert queue.expired(0, now_ms=55_000) == [("new", 1_000)]
    assert queue.expired(0, now_ms=60_001) == [("old", 50_000)]
