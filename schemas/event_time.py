"""When an event happened: the device's clock corrected, and the range every stage takes.

Two ranges, both documented in the README:

- A device clock value (``timestamp`` and ``sent_at`` as sent) must lie in
  [1970-01-01, 2100-01-01). That takes a device whose clock was reset to the epoch
  (its skew is corrected below) and refuses sentinels such as .NET's
  ``DateTime.MinValue`` (year 1) or ``9999-12-31``, which no correction can mean.
- The event time after correction must lie in [2000-01-01, received_at + 24 h]. Every
  stage can represent that: its local calendar date, in any zone, is inside ClickHouse's
  ``Date`` (1970-01-01 to 2149-06-06), and date arithmetic in the folds cannot overflow.

Because both values are bounded first, the correction itself is bounded (less than 130
years) and can never overflow ``datetime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEVICE_CLOCK_FROM = datetime(1970, 1, 1, tzinfo=UTC)
DEVICE_CLOCK_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(hours=24)


@dataclass(frozen=True)
class EventTime:
    timestamp: datetime  # corrected event time
    original: datetime | None  # the device's timestamp, when it was corrected


@dataclass(frozen=True)
class TimeError:
    field: str
    message: str


def corrected_timestamp(
    timestamp: datetime, sent_at: datetime | None, received_at: datetime, tolerance: timedelta
) -> tuple[datetime, datetime | None]:
    """(timestamp, original) with the device's clock error taken out.

    A device stamps both the event and the send with its own clock, so received_at -
    sent_at is how far that clock is off (plus transit time, which is why small
    differences are left alone). Returns the original only when it was corrected.
    """
    if sent_at is None:
        return timestamp, None
    skew = received_at - sent_at
    if abs(skew) <= tolerance:
        return timestamp, None
    return timestamp + skew, timestamp


def _device_clock_error(name: str, value: datetime) -> TimeError | None:
    if DEVICE_CLOCK_FROM <= value < DEVICE_CLOCK_UNTIL:
        return None
    return TimeError(
        name,
        f"{value.isoformat()} is not a plausible device clock value (supported: "
        f"{DEVICE_CLOCK_FROM.date()} to {DEVICE_CLOCK_UNTIL.date()}, exclusive)",
    )


def event_time(
    timestamp: datetime, sent_at: datetime | None, received_at: datetime, tolerance: timedelta
) -> EventTime | TimeError:
    """The corrected event time, or the first reason it is outside what stages take."""
    for name, value in (("timestamp", timestamp), ("sent_at", sent_at)):
        if value is not None and (error := _device_clock_error(name, value)):
            return error
    corrected, original = corrected_timestamp(timestamp, sent_at, received_at, tolerance)
    if (problem := unsupported(corrected, received_at)) is not None:
        note = "" if original is None else f" (corrected for the device's clock: {corrected})"
        return TimeError("timestamp", problem + note)
    return EventTime(corrected, original)


def unsupported(timestamp: datetime, received_at: datetime | None) -> str | None:
    """Why an event time is outside the range every stage takes, or None. Stages after
    the door check it again for records already in the log (written by an older
    collector or another producer): without a receipt time, only the lower bound."""
    if timestamp < EARLIEST_EVENT_TIME:
        return f"is before {EARLIEST_EVENT_TIME.date()}, the earliest supported"
    if received_at is not None and timestamp > received_at + MAX_FUTURE:
        return "is more than 24 h in the future"
    return None
