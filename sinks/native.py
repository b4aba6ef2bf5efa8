"""Rows as ClickHouse's Native format, serialised in the calling thread.

clickhouse-connect's ``insert`` turns Python values into Native columns inside the call,
on whichever thread makes it: for the sink, the ClickHouse thread, where that Python
work took the GIL from the event loop decoding the next batch, and stretched every
insert on the sink's critical path (BENCHMARKS.md, session 8). Serialised here, on the
event loop, the ClickHouse thread only sends bytes and waits for ClickHouse, without
the GIL. The serialisation is clickhouse-connect's own (``create_insert_context`` with
the column types given, so it asks nothing of the server, and ``NativeTransform``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.transform import NativeTransform

_STATEMENT = b"INSERT INTO "  # what the first chunk starts with, for an HTTP body


def _raise(error: Exception) -> NoReturn:
    raise error


def native_block(
    client: Any,
    table: str,
    column_names: Sequence[str],
    column_types: Sequence[ClickHouseType],
    columns: Sequence[Sequence[Any]],
) -> bytes:
    """``columns`` (one sequence per column) as the body of ``INSERT … FORMAT Native``.
    A value its column cannot hold raises what ``client.insert`` would (DataError,
    ValueError, …): the rows' fault (sinks.failures)."""
    context = client.create_insert_context(
        table,
        column_names=list(column_names),
        column_types=list(column_types),
        column_oriented=True,
        data=columns,
    )
    chunks = list(NativeTransform.build_insert(context, error_handler=_raise))
    if chunks and chunks[0].startswith(_STATEMENT):  # the statement goes apart
        chunks[0] = chunks[0][chunks[0].index(b"\n") + 1 :]
    return b"".join(chunks)
