"""One readable log format for every learnstream process, and a bound on repeats."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# aiokafka's loggers that repeat one line per connection attempt while a broker is down
# (seen: "Unable connect to node" 2,222 times a second from one worker)
CHATTY_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.consumer.fetcher",
    "aiokafka.producer.sender",
)
REPEAT_INTERVAL_S = 10.0


class RepeatsBounded(logging.Filter):
    """Lets a message (by logger and format string) through at most once per interval;
    the next one that passes says how many were held back. An outage stays visible
    without drowning every other line."""

    def __init__(
        self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def held_back(self, logger: str, msg: str) -> int:
        """How many of this message were held back since it last passed."""
        return self._held.get((logger, msg), 0)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        if held := self._held.pop(key, 0):
            record.msg = f"{record.msg} ({held} more like this in the last {self._interval_s:g} s)"
        return True


def bound_repeats(interval_s: float = REPEAT_INTERVAL_S) -> None:
    """Install the bound on aiokafka's loggers (idempotent): logger filters survive the
    handler changes Faust's worker makes when it starts."""
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatsBounded) for f in logger.filters):
            logger.addFilter(RepeatsBounded(interval_s))


def configure_logging(service: str, level: str) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {service:<10} %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # aiokafka narrates every coordinator hiccup at WARNING; the pipeline's own
    # logs say what matters.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    bound_repeats()
