"""The sink's "already stored?" lookup on real chdb, for ids and names of every shape.

The lookup binds its event ids, users and organisations as verbatim text when nothing in
them needs escaping (sinks/writer.py): a user id with a quote, a backslash, a backtick,
a tab or a newline must go the usual, escaped way, and be found all the same."""

from __future__ import annotations

import asyncio
from pathlib import Path

from learnstream.settings import Settings
from sinks.rows import EVENT_COLUMNS, event_row
from sinks.writer import ClickHouseWriter
from tests.conftest import REPO, migrated_clickhouse
from tests.test_avro_reader import CATALOG
from tests.test_sink_redelivery import lesson_datum

USERS = ["ada", "o'brien", "back\\slash", "tick`", "tab\there", "new\nline", "élève", ""]


def test_stored_ids_are_found_whatever_the_users_names(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", devstack_home=REPO / ".devstack")
    with migrated_clickhouse(settings) as client:
        writer = ClickHouseWriter(client, settings.clickhouse_database)
        try:
            datums = [lesson_datum(i) | {"user_id": user} for i, user in enumerate(USERS)]
            rows = [event_row(CATALOG, d, "events.clean", 0, i) for i, d in enumerate(datums)]
            stored, unstored = rows[::2], rows[1::2]
            asyncio.run(writer.insert("events", stored, EVENT_COLUMNS, "lookup-test"))

            def lookup(users: list[str]) -> set[str]:
                wanted = [row for row in rows if row[6] in users]
                moments = [row[3] for row in wanted]
                return asyncio.run(
                    writer.stored_event_ids(
                        "events",
                        [row[0] for row in wanted],
                        {row[8] for row in wanted},
                        set(users),
                        min(moments),
                        max(moments),
                    )
                )

            assert lookup(USERS) == {row[0] for row in stored}
            for row in rows:  # one user at a time: the verbatim and the escaped binding
                assert lookup([row[6]]) == ({row[0]} if row in stored else set())
            assert not lookup([row[6] for row in unstored])
        finally:
            writer.release()
