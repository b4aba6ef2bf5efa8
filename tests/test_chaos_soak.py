"""The chaos soak (``python -m bench chaos``, bench/chaos.py) for two minutes: the whole
pipeline, two processors workers among its services, under a steady load with retried
duplicates and invalid events, while workers, the sink and the collector are SIGKILLed,
the broker restarts and a worker leaves the group and comes back. Nothing acknowledged
may be lost or stored twice, every refusal must be kept, and the projections must equal
the fold of the accepted log. A failure lists what went wrong: lost ids with their
events.raw partition and offsets and the fault they followed, the services' logs are
kept in the test's tmp_path.

Availability findings (a service that did not recover by itself and was restarted by the
soak, an unclean exit on SIGTERM) do not break those guarantees; they are reported as a
warning, and fail the test with LEARNSTREAM_CHAOS_STRICT=1."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from bench import chaos

# A broker of its own: the soak restarts it, which the session's shared one must not see.
# Part of `make test` since the loss it found is fixed (issue 13): events.raw commits are
# capped at what was delivered (processors.positions, processors.commits), a batch's
# state lands whole (processors.state_tables), and the sink recomputes the view rows of
# what it stored past its commit (sinks.event_sink). LEARNSTREAM_CHAOS_SOAK=0 skips it.
pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        os.environ.get("LEARNSTREAM_CHAOS_SOAK") == "0", reason="LEARNSTREAM_CHAOS_SOAK=0"
    ),
]

MINUTES = float(os.environ.get("LEARNSTREAM_CHAOS_MINUTES", "2"))
STRICT = os.environ.get("LEARNSTREAM_CHAOS_STRICT") == "1"


def test_two_minutes_of_faults_lose_and_double_nothing(tmp_path: Path) -> None:
    seed = os.environ.get("LEARNSTREAM_CHAOS_SEED")
    options = chaos.Options(
        minutes=MINUTES,
        rate=150,
        # short quiet spells, so every kind of fault fits in the two minutes
        gap_s=(2.0, 6.0),
        seed=int(seed) if seed else None,
        folder=tmp_path / "chaos",
    )
    result = chaos.run(options)
    report = chaos.table(result)
    print(report)

    injected = result.injected()
    assert all(injected[kind] >= 1 for kind in chaos.FAULT_KINDS), report
    assert injected["worker_join"] == injected["worker_leave"], report
    counts = result.counts
    assert counts["acknowledged"] > MINUTES * 60 * options.rate / 2, report
    assert counts["duplicates_sent"] > 0, report
    assert counts["lost"] == counts["doubled"] == 0, report
    assert counts["derived_lost"] == counts["derived_doubled"] == 0, report
    assert counts["daily_stats_differ_users"] == 0, report
    assert counts["invalid_refused"] == counts["invalid_sent"] > 0, report
    assert counts["invalid_stored"] == counts["invalid_refused"], report
    assert counts["invalid_doubled"] == 0, report
    for projection in ("user_progress", "topic_mastery", "mode_progress"):
        assert counts[f"{projection}_differ"] == 0, report
    assert counts["user_progress_current_differ"] == 0, report
    assert result.lag_left == {"processors": 0, "sink": 0}, report
    assert result.ok, report  # and nothing else broke a guarantee (e.g. the collector's answers)
    if result.availability:
        finding = "chaos soak availability findings:\n- " + "\n- ".join(result.availability)
        assert not STRICT, finding
        warnings.warn(finding, stacklevel=1)
