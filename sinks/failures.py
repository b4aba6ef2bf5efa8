"""Whose fault a failed insert is: the rows' (final for them) or ClickHouse's (retry).

The two are told apart because they need opposite handling: retrying rows that
ClickHouse refuses for their content can never succeed and would stop every learner
behind them, while dead-lettering rows because ClickHouse was briefly away would throw
good data aside.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from enum import Enum

from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)


class Fault(Enum):
    DATA = "data"
    INFRASTRUCTURE = "infrastructure"


# ClickHouse error codes that say nothing about the rows: the server is busy, short of
# memory or parts, read-only, missing a table, or lost the connection.
INFRASTRUCTURE_CODES = frozenset(
    {
        60,  # UNKNOWN_TABLE: not migrated yet
        81,  # UNKNOWN_DATABASE
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION
    }
)

# Raised by the client while turning Python values into columns: a value the column
# type cannot hold (a Date before 1970, an integer out of range).
_SERIALIZATION_ERRORS = (DataError, ValueError, TypeError, OverflowError, struct.error)


async def fault_of(exc: BaseException, clickhouse_answers: Callable[[], Awaitable[bool]]) -> Fault:
    """DATA only when the rows are at fault; anything unclear is INFRASTRUCTURE unless
    ClickHouse answers a probe right after refusing them, which clears it."""
    if isinstance(exc, _SERIALIZATION_ERRORS):
        return Fault.DATA
    if isinstance(exc, OperationalError | InterfaceError | ProgrammingError):
        return Fault.INFRASTRUCTURE
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code in INFRASTRUCTURE_CODES:
            return Fault.INFRASTRUCTURE
        return Fault.DATA if await clickhouse_answers() else Fault.INFRASTRUCTURE
    return Fault.INFRASTRUCTURE
