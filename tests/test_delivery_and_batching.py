"""Redelivery decisions (processors) and insert planning (sink)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from projections.delivery import Position, Seen, already_applied, classify
from sinks.batching import PendingRow, PlannedInsert, halves, plan_inserts


def test_redelivery_is_told_apart_from_a_duplicate() -> None:
    here = Position(2, 10)
    assert classify(None, here) is Seen.FIRST_TIME
    assert classify(Position(2, 10), here) is Seen.REDELIVERED
    assert classify(Position(2, 7), here) is Seen.DUPLICATE
    assert classify(Position(1, 10), here) is Seen.DUPLICATE


def test_state_applied_up_to_an_offset_skips_it_and_earlier() -> None:
    assert not already_applied(None, Position(0, 0))
    assert already_applied(Position(0, 5), Position(0, 5))
    assert already_applied(Position(0, 5), Position(0, 4))
    assert not already_applied(Position(0, 5), Position(0, 6))
    assert not already_applied(Position(1, 9), Position(0, 6))


def test_position_survives_its_json_form() -> None:
    assert Position.from_json(Position(3, 42).as_json()) == Position(3, 42)


T0 = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)


@given(st.lists(st.lists(st.integers(0, 24 * 90), max_size=30), max_size=4))
def test_plans_keep_each_partitions_offset_order_and_one_month_each(
    partitions: list[list[int]],
) -> None:
    pending = {
        ("events.clean", p): [
            PendingRow(offset=100 + i, timestamp=T0 + timedelta(hours=h), row=[p, i, h])
            for i, h in enumerate(hours)
        ]
        for p, hours in enumerate(partitions)
    }
    plans = plan_inserts(pending)
    planned = [row for plan in plans for row in plan.rows]
    assert sorted(planned) == sorted(r.row for rows in pending.values() for r in rows)
    for plan in plans:
        months = {
            ((T0 + timedelta(hours=r[2])).year, (T0 + timedelta(hours=r[2])).month)
            for r in plan.rows
        }
        assert len(months) == 1
        assert len({run.partition for run in plan.runs}) == len(plan.runs)
        for run in plan.runs:  # each run: consecutive pending rows of its partition
            mine = [r[1] + 100 for r in plan.rows if r[0] == run.partition]
            assert mine == list(range(run.first_offset, run.last_offset + 1))
    for p in range(len(partitions)):  # a partition's rows keep their order across plans
        assert [r[1] for r in planned if r[0] == p] == list(range(len(partitions[p])))
    assert len({plan.dedup_token for plan in plans}) == len(plans)
    # runs of different partitions in one month share an insert
    if partitions and all(h and max(h) < 1 for h in partitions):
        assert len(plans) == 1


def _split_all_the_way(plan: PlannedInsert) -> list[PlannedInsert]:
    """The inserts the sink makes when every multi-row insert is refused."""
    if len(plan.rows) < 2:
        return [plan]
    first, second = halves(plan)
    return _split_all_the_way(first) + _split_all_the_way(second)


@given(
    st.lists(
        st.lists(st.integers(1, 3), min_size=1, max_size=12).map(
            lambda gaps: [sum(gaps[: i + 1]) for i in range(len(gaps))]
        ),
        min_size=1,
        max_size=4,
    )
)
def test_halving_a_plan_keeps_every_row_once_in_offset_order_per_partition(
    offsets_by_partition: list[list[int]],
) -> None:
    """A refused insert is split until its bad rows are alone: nothing lost or doubled,
    each partition's rows still in offset order, and every piece's token its own."""
    pending = {
        ("events.clean", p): [
            PendingRow(offset=100 + o, timestamp=T0, row=[p, 100 + o]) for o in offsets
        ]
        for p, offsets in enumerate(offsets_by_partition)
    }
    for plan in plan_inserts(pending):
        pieces = _split_all_the_way(plan)
        assert sorted(row for piece in pieces for row in piece.rows) == sorted(plan.rows)
        for p in {run.partition for run in plan.runs}:
            stored = [row[1] for piece in pieces for row in piece.rows if row[0] == p]
            assert stored == sorted(stored)
        for piece in pieces:
            assert piece.offsets == tuple(row[1] for row in piece.rows)
            for run in piece.runs:
                mine = [row[1] for row in piece.rows if row[0] == run.partition]
                assert (mine[0], mine[-1]) == (run.first_offset, run.last_offset)
        tokens = [piece.dedup_token for piece in pieces]
        assert len(set(tokens)) == len(tokens)
        assert pieces == _split_all_the_way(plan)  # the same split on a retry
