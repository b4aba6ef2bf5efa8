"""Realistic workloads for the processors bench (issue 11, item 5).

Every event is built from its type's schema in the catalogue (as ``schemas.examples``
does) with varied values: ids drawn from pools of topics, content items, courses,
questions, practice modes and drills; numbers anywhere in their ``ls.minimum`` ..
``ls.maximum`` range; enums and booleans at random. The seeds name the event types but
give no frequencies, so the mix below is ours: the folded learning events dominate,
as in a study app, and every other type of the seeds appears too.

Left out of the input: the types the processors themselves derive (xp_earned,
level_up, streak_*, concept_mastered), and consent_updated, which could withdraw a
learner's consent and so silently drop the rest of their events.

- ``fresh``: many learners (Zipf activity: a few very active, a long tail), a steady
  stream over the last days before ``NOW``.
- ``history``: a few learners with two years of daily activity each, in time order,
  touching every one of ``topics`` topics; ``history_window`` continues them.
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench.workload import CATALOG, NOW
from schemas.catalog import EventType
from schemas.examples import example_event

DERIVED_OR_CONSENT = frozenset(
    {
        "xp_earned",
        "level_up",
        "streak_broken",
        "streak_continued",
        "concept_mastered",
        "consent_updated",
    }
)

# Relative weights. Types named here are the ones the learner folds act on.
FOLDED = {
    "question_submit": 30.0,
    "lesson_completed": 10.0,
    "quiz_completed": 6.0,
    "quiz_complete": 4.0,
    "material_complete": 5.0,
    "session_completed": 4.0,
    "session_start": 2.0,
    "session_end": 2.0,
    "material_open": 3.0,
    "session_pause": 1.0,
}
BY_CLASS = {  # (category, sampling) -> weight of each other type of that class
    ("learning_progress", "never"): 1.0,
    ("user_interaction", "never"): 1.0,
    ("user_interaction", "high_volume"): 4.0,  # page views, mouse movement: 1 % kept
    ("system_performance", "performance"): 0.5,
    ("system_performance", "never"): 0.2,
    ("system_performance", "debug"): 0.1,
    ("business_intelligence", "never"): 0.2,
}

POOL_SIZES = {  # field name -> how many distinct values
    "topic_id": 300,
    "content_id": 80,
    "material_id": 80,
    "course_id": 12,
    "question_id": 3000,
    "practice_mode_id": 6,
    "drill_id": 24,
}
DEFAULT_POOL = 100  # any other *_id


def _weight(event_type: EventType) -> float:
    if event_type.name in FOLDED:
        return FOLDED[event_type.name]
    return BY_CLASS.get((event_type.category, event_type.sampling), 0.5)


def zipf_picker(n: int, rng: random.Random, s: float = 1.0) -> Callable[[], int]:
    """An index in range(n) with P(i) proportional to 1 / (i + 1) ** s."""
    cumulative = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(n)))
    total = cumulative[-1]

    def pick() -> int:
        return min(n - 1, bisect.bisect_left(cumulative, rng.random() * total))

    return pick


@dataclass
class Mix:
    """Draws varied, valid events of the mix's types."""

    rng: random.Random
    topics: int = 300
    contents: int = 80
    never_sampled_only: bool = False

    def __post_init__(self) -> None:
        types = [
            t
            for t in (CATALOG[name] for name in sorted(CATALOG))
            if t.name not in DERIVED_OR_CONSENT
            and (t.sampling == "never" or not self.never_sampled_only)
        ]
        self.types = types
        self.cumulative = list(itertools.accumulate(_weight(t) for t in types))
        self.templates = {t.name: example_event(t) for t in types}
        sizes = {**POOL_SIZES, "topic_id": self.topics}
        sizes["content_id"] = sizes["material_id"] = self.contents
        self.pickers = {name: zipf_picker(size, self.rng, 0.8) for name, size in sizes.items()}
        self.forced_topic: str | None = None

    def _pool(self, name: str) -> str:
        picker = self.pickers.get(name)
        if picker is None:
            picker = self.pickers[name] = zipf_picker(DEFAULT_POOL, self.rng, 0.8)
        if name == "topic_id" and self.forced_topic is not None:
            return self.forced_topic
        prefix = name.removesuffix("_id")[:5]
        return f"{prefix}-{picker()}"

    def _vary(self, schema: Any, spec: dict[str, Any], name: str, template: Any) -> Any:
        rng = self.rng
        if isinstance(schema, list):
            non_null = [branch for branch in schema if branch != "null"]
            return self._vary(non_null[0], spec, name, template)
        if isinstance(schema, dict):
            if schema.get("logicalType"):
                return template
            if schema["type"] == "record":
                return {
                    f["name"]: self._vary(f["type"], f, f["name"], template[f["name"]])
                    for f in schema["fields"]
                }
            if schema["type"] == "array" and isinstance(template, list) and template:
                return [
                    self._vary(schema["items"], {}, name, template[0])
                    for _ in range(rng.randint(1, 3))
                ]
            if schema["type"] == "enum":
                return rng.choice(schema["symbols"])
            if schema["type"] in ("string", "int", "long", "float", "double", "boolean"):
                return self._vary(schema["type"], spec, name, template)
            return template
        if "ls.enum" in spec:
            return rng.choice(spec["ls.enum"])
        if schema == "string" and name.endswith("_id"):
            value = self._pool(name)
            return value if len(value) <= spec.get("ls.maxLength", 256) else template
        if schema == "boolean":
            return rng.random() < 0.7
        if schema in ("int", "long", "float", "double") and "ls.minimum" in spec:
            low, high = spec["ls.minimum"], spec.get("ls.maximum", spec["ls.minimum"] + 600)
            if schema in ("int", "long"):
                return rng.randint(int(low), int(high))
            return round(rng.uniform(low, high), 2)
        return template

    def event(self, user: str, at: datetime, zone: str) -> dict[str, Any]:
        rng = self.rng
        total = self.cumulative[-1]
        kind = self.types[bisect.bisect_left(self.cumulative, rng.random() * total)]
        template = self.templates[kind.name]
        (slot,) = [f for f in kind.schema["fields"] if f["name"] == "properties"]
        properties = self._vary(slot["type"], slot, "properties", template["properties"])
        if kind.name == "quiz_complete" and properties.get("total_questions"):
            total_q = max(1, int(properties["total_questions"]))
            properties["total_questions"] = total_q
            properties["correct_answers"] = rng.randint(0, total_q)
        return {
            **template,
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": at.isoformat(),
            "user_id": user,
            "session_id": f"sess-{user}-{at.date().isoformat()}",
            "device_info": {"platform": "web", "timezone": zone},
            "properties": properties,
        }


ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "America/Sao_Paulo")


def fresh(
    count: int,
    learners: int = 2000,
    topics: int = 300,
    contents: int = 80,
    seed: int = 11,
    days: float = 7.0,
    end: datetime = NOW,
    never_sampled_only: bool = False,
) -> list[dict[str, Any]]:
    """``count`` events of ``learners`` learners with Zipf activity, in time order."""
    rng = random.Random(seed)
    mix = Mix(rng, topics, contents, never_sampled_only)
    learner = zipf_picker(learners, rng, 1.0)
    start = end - timedelta(days=days)
    step = (end - start) / max(1, count)
    made = []
    for i in range(count):
        index = learner()
        made.append(mix.event(f"learner-{index}", start + step * i, ZONES[index % len(ZONES)]))
    return made


def history(
    learners: int = 16,
    per_learner: int = 2000,
    days: int = 730,
    topics: int = 300,
    seed: int = 12,
    end: datetime = NOW,
) -> list[dict[str, Any]]:
    """Two years (``days``) of daily activity for each learner, all interleaved in time
    order; every learner answers questions on all ``topics`` topics."""
    rng = random.Random(seed)
    mix = Mix(rng, topics)
    made: list[dict[str, Any]] = []
    first_day = end - timedelta(days=days)
    for index in range(learners):
        user = f"veteran-{index}"
        # every day at least once, the rest on random days
        day_of = sorted([d for d in range(days)] + rng.choices(range(days), k=per_learner - days))
        order = rng.sample(range(topics), topics)
        asked = 0
        for n, day in enumerate(day_of):
            at = first_day + timedelta(days=day, seconds=8 * 3600 + n % 50 * 300)
            mix.forced_topic = f"topic-{order[asked % topics]}"
            event = mix.event(user, at, ZONES[index % len(ZONES)])
            if event["event_type"] == "question_submit":
                asked += 1
            made.append(event)
    mix.forced_topic = None
    made.sort(key=lambda e: e["timestamp"])
    return made


def history_window(
    learners: int,
    count: int,
    seed: int = 13,
    start: datetime = NOW,
    never_sampled_only: bool = False,
) -> list[dict[str, Any]]:
    """``count`` more events of the ``history`` learners, from ``start`` on."""
    rng = random.Random(seed)
    mix = Mix(rng, never_sampled_only=never_sampled_only)
    made = []
    for n in range(count):
        index = rng.randrange(learners)
        at = start + timedelta(seconds=20 * n)
        made.append(mix.event(f"veteran-{index}", at, ZONES[index % len(ZONES)]))
    return made


def users_of(events: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({e["user_id"] for e in events})
