"""A line repeated while a broker is down is let through once per interval, with a count."""

from __future__ import annotations

import itertools
import logging

from hypothesis import given
from hypothesis import strategies as st

from learnstream.logs import RepeatsBounded


def _record(msg: str, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (), None)


@given(st.lists(st.floats(0, 3, allow_nan=False), min_size=1, max_size=200))
def test_one_line_per_interval_and_nothing_lost_from_the_count(gaps: list[float]) -> None:
    now = [0.0]
    bound = RepeatsBounded(10.0, clock=lambda: now[0])
    passed: list[float] = []
    held_reported = 0
    for gap in gaps:
        now[0] += gap
        record = _record("Unable connect to node %s")
        if bound.filter(record):
            passed.append(now[0])
            if "more like this" in str(record.msg):
                held_reported += int(str(record.msg).split("(")[1].split()[0])
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(passed))
    held_now = bound.held_back("aiokafka", "Unable connect to node %s")
    assert len(passed) + held_reported + held_now == len(gaps)  # every repeat counted


def test_different_messages_and_loggers_are_bounded_apart() -> None:
    bound = RepeatsBounded(10.0, clock=lambda: 0.0)
    assert bound.filter(_record("a"))
    assert not bound.filter(_record("a"))
    assert bound.filter(_record("b"))
    assert bound.filter(_record("a", name="aiokafka.conn"))
