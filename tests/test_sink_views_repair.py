"""The sink's daily views after a crash between an insert and its Kafka commit.

chdb writes an insert's part of ``events`` and its views' parts one after the other, so
a SIGKILL between them leaves the rows stored and ``daily_user_stats`` short; the
restarted sink must not take "stored" for "stored with its views". Here the views are
emptied (the lost parts) and the group's commit is taken back (the lost commit), then a
sink restarts; and once more with the views intact, which must not count anything twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from learnstream.settings import Settings
from sinks.writer import ClickHouseWriter
from tests.test_sink_redelivery import produce, rewind_group, run_sink_until

EVENTS = 240


def _daily(clickhouse: Any, db: str) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in clickhouse.query(
            f"SELECT organization_id, user_id, day, sum(events), sum(lessons_completed), "
            f"sum(study_seconds) FROM {db}.daily_user_stats "
            "GROUP BY organization_id, user_id, day ORDER BY user_id, day"
        ).result_rows
    ]


def _folded(clickhouse: Any, db: str) -> list[tuple[Any, ...]]:
    """What the view holds when every insert's view part landed: its query over events."""
    select = clickhouse.query(
        f"SELECT as_select FROM system.tables WHERE database = '{db}' "
        "AND name = 'daily_user_stats_mv'"
    ).result_rows[0][0]
    return [
        tuple(row)
        for row in clickhouse.query(
            f"SELECT organization_id, user_id, day, sum(events), sum(lessons_completed), "
            f"sum(study_seconds) FROM ({select}) "
            "GROUP BY organization_id, user_id, day ORDER BY user_id, day"
        ).result_rows
    ]


def test_views_lost_with_the_commit_are_recomputed_and_never_doubled(
    settings: Settings, clickhouse: Any
) -> None:
    db = settings.clickhouse_database
    writer = ClickHouseWriter(clickhouse, db)
    try:
        asyncio.run(produce(settings, EVENTS))
        first = asyncio.run(run_sink_until(settings, writer, EVENTS))
        assert first.rows_inserted == EVENTS and first.views_repaired == 0
        expected = _folded(clickhouse, db)
        assert _daily(clickhouse, db) == expected
        assert sum(row[4] for row in expected) == EVENTS

        # the views' parts and the commit lost: rows stored, views empty
        clickhouse.command(f"TRUNCATE TABLE {db}.daily_user_stats")
        clickhouse.command(f"TRUNCATE TABLE {db}.topic_daily_stats")
        asyncio.run(rewind_group(settings))
        repaired = asyncio.run(run_sink_until(settings, writer, EVENTS))
        assert repaired.rows_inserted == 0 and repaired.redelivered_skipped == EVENTS
        assert _daily(clickhouse, db) == expected
        # every partition holding rows, repaired at the start (in one statement per view)
        holding = clickhouse.query(
            f"SELECT uniqExact(source_partition) FROM {db}.events"
        ).result_rows[0][0]
        assert holding > 1 and repaired.views_repaired == holding

        # only the commit lost, the views' parts landed: recomputed, not added again
        asyncio.run(rewind_group(settings))
        again = asyncio.run(run_sink_until(settings, writer, EVENTS))
        assert _daily(clickhouse, db) == expected
        assert again.views_repaired > 0

        # a clean restart (everything committed) recomputes nothing, and goes on counting
        asyncio.run(produce(settings, 20))
        clean = asyncio.run(run_sink_until(settings, writer, 20))
        assert clean.rows_inserted == 20 and clean.views_repaired == 0
        assert _daily(clickhouse, db) == _folded(clickhouse, db)
        assert sum(row[4] for row in _daily(clickhouse, db)) == EVENTS + 20
    finally:
        writer.release()
