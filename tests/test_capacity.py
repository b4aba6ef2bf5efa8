"""docs/SCALING.md cannot drift from the model: its generated tables are what
``python -m bench.capacity`` prints, every measured input is still in BENCHMARKS.md where the
model says it is, and the plan behaves as a plan should (no broker, no chdb)."""

from __future__ import annotations

import itertools
import re

import pytest

from bench import capacity
from learnstream.topics import TOPIC_SPECS
from projections.rulebook import TABLES
from tests.conftest import REPO

SCALING = (REPO / "docs" / "SCALING.md").read_text(encoding="utf-8")
BENCHMARKS = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
RATES = [*range(100, 20_000, 100), *range(20_000, 2_000_001, 2_500)]


def _section(heading_start: str) -> str:
    """The body of the BENCHMARKS.md section whose ``## `` heading starts so."""
    sections = re.split(r"^(?=## )", BENCHMARKS, flags=re.M)
    found = [s for s in sections if s.startswith(heading_start)]
    assert len(found) == 1, f"BENCHMARKS.md has {len(found)} sections '{heading_start}…'"
    return found[0]


def test_the_document_holds_what_the_model_prints() -> None:
    begin, end = SCALING.index(capacity.BEGIN), SCALING.index(capacity.END)
    in_doc = SCALING[begin : end + len(capacity.END)]
    assert in_doc == capacity.render(), "run `python -m bench.capacity --write`"


def test_the_readme_links_the_document() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "](docs/SCALING.md)" in readme


@pytest.mark.parametrize("name", sorted(capacity.MEASURED))
def test_every_measured_input_is_in_its_benchmarks_section(name: str) -> None:
    figure = capacity.MEASURED[name]
    assert figure.quote in _section(figure.section), (name, figure.quote, figure.section)
    # the value is the quoted figure (the last one, where a quote holds two rounds)
    last = re.findall(r"\d[\d ]*(?:\.\d+)?", figure.quote)[-1]
    assert float(last.replace(" ", "")) == figure.value, name


def test_the_topic_count_is_the_code_s() -> None:
    assert capacity.ASSUMED["topics"].value == len(TOPIC_SPECS) + len(TABLES)


def test_partitions_leave_every_consuming_worker_one() -> None:
    for rate in RATES:
        plan = capacity.plan(rate)
        assert plan.partitions >= max(plan.processors, plan.sinks), rate
        assert plan.partitions >= capacity.ASSUMED["min_partitions"].value


def test_more_load_never_needs_fewer_units() -> None:
    """Across every rate for the stages partitions do not split; across the document's
    columns for all. (The sink may need one worker fewer just past a partition step, as its
    load is then cut finer: that compares two deployments, not one growing.)"""
    plans = [capacity.plan(rate) for rate in RATES]
    for before, after in itertools.pairwise(plans):
        for field in ("collectors", "partitions", "brokers", "shards", "mb_in", "mb_out"):
            assert getattr(after, field) >= getattr(before, field), (after.rate, field)
    columns = [capacity.plan(rate) for rate in capacity.SCALES]
    for before, after in itertools.pairwise(columns):
        for field in ("collectors", "processors", "sinks", "partitions", "brokers", "shards"):
            assert getattr(after, field) >= getattr(before, field), (after.rate, field)


@pytest.mark.parametrize("partitions", capacity.PARTITION_STEPS)
def test_on_fixed_partitions_more_load_never_needs_fewer_workers(partitions: int) -> None:
    """Partitions are chosen on day one; as the load grows on them, no stage shrinks and no
    stage needs more workers than there are partitions."""
    units = capacity.units()
    most = partitions * min(units["processors"].events_at_plan, units["sink"].events_at_plan)
    step = max(1, int(most) // 400)
    plans = [capacity.plan(rate, partitions) for rate in range(step, int(most), step)]
    for before, after in itertools.pairwise(plans):
        assert after.processors >= before.processors, after.rate
        assert after.sinks >= before.sinks, after.rate
    assert all(max(p.processors, p.sinks) <= partitions for p in plans)
    with pytest.raises(ValueError):
        capacity.plan(int(partitions * units["processors"].events_at_plan) + 1, partitions)


def test_no_worker_is_planned_past_its_share() -> None:
    """The busiest worker of each consuming stage, holding whole partitions, stays within
    the planned utilisation, and one fewer worker would not."""
    units = capacity.units()
    for rate in capacity.SCALES:
        plan = capacity.plan(rate)
        per_partition = rate / plan.partitions
        for workers, unit in ((plan.processors, "processors"), (plan.sinks, "sink")):
            cap = units[unit].events_at_plan
            busiest = -(-plan.partitions // workers) * per_partition
            assert busiest <= cap + 1e-6, (rate, unit)
            if workers > 1:
                assert -(-plan.partitions // (workers - 1)) * per_partition > cap, (rate, unit)
