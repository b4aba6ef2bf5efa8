"""Scale-out: two processors workers in one consumer group split events.raw's partitions,
and what they publish together is exactly what one worker (the fold) publishes, also when
the second worker joins while the log is flowing and leaves again before it ends, by a
clean stop or by a crash."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench import workload
from devstack.services import ServiceGroup, free_port
from learnstream.groups import group_members, processors_group
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, EVENTS_DERIVED, EVENTS_RAW, PROJECTIONS_XP
from processors.generations import group_id
from processors.outputs import derived_event_id
from projections.events import Event
from projections.fold import fold_log
from schemas.codec import decode
from tests.crash_helpers import (
    POLICY,
    REGISTRY,
    expected_mastery_and_modes,
    produce,
    produce_and_expect,
    published_mastery_and_modes,
    published_progress,
)
from tests.kafka_read import latest_by_key, read_all
from tests.test_crash_recovery import worker_log

LEARNERS = 50
DISTINCT = 1800
RETRIED = 120  # sends repeated with the same event_id
# how long a SIGKILLed worker holds its partitions; Faust's default is 60 s (the app
# sets 10 s itself today, and its own setting wins over this environment variable)
SESSION_TIMEOUT_S = 10
WAIT_S = 90.0  # for any one condition; they take seconds
PACED_CHUNKS, PACED_PAUSE_S = 20, 0.4  # the middle part flows in for about 8 s


def _log() -> list[dict[str, Any]]:
    """The bench workload (every folded kind) for LEARNERS learners over 30 days in three
    zones; lessons and quizzes within courses, some content completed twice (the
    per-course piece of state); and RETRIED sends repeated with the same event_id."""
    rng = random.Random(42)
    events = workload.events(
        DISTINCT,
        users=LEARNERS,
        seed=17,
        days=30,
        zones=("UTC", "Europe/Paris", "America/Chicago"),
        drills=("d1", "d2", "d3"),
    )
    for event in events:
        if event["event_type"] in ("lesson_completed", "quiz_completed"):
            event["properties"]["course_id"] = f"course-{rng.randrange(2)}"
            event["properties"]["content_id"] = f"content-{rng.randrange(6)}"
    events += [dict(e) for e in rng.sample(events, RETRIED)]
    rng.shuffle(events)
    return events


# -- the consumer group, as the broker sees it ------------------------------------------


async def _committed_and_ends(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """(where the group resumes, the log's end) per events.raw partition."""
    raw = settings.topic(EVENTS_RAW)
    tps = [TopicPartition(raw, p) for p in range(settings.topic_partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group_id(settings, 1), partitions=tps)
    finally:
        await consumer.stop()
        await admin.close()
    at = {tp.partition: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    return (
        {p: at.get(p, 0) for p in range(settings.topic_partitions)},
        {tp.partition: offset for tp, offset in ends.items()},
    )


async def _owners(settings: Settings) -> dict[str, set[int]] | None:
    """Each member of the group (by client id: the worker's label) and its events.raw
    partitions; None while the group is not Stable (rebalancing)."""
    members = await group_members(
        settings.kafka_bootstrap, processors_group(settings), settings.topic(EVENTS_RAW)
    )
    if members is None:
        return None
    owned: dict[str, set[int]] = defaultdict(set)
    for member in members:
        owned[member.client_id] |= member.partitions
    if len(owned) < len(members):
        owned[f"{len(members)} members, {len(owned)} client ids"] = set()  # never "split"
    return dict(owned)


def _asked(check: Callable[[], bool]) -> bool:
    """``check()``; False while the broker cannot answer yet (a fresh broker creates its
    offsets topic, and so a group coordinator, when the first group asks for one)."""
    try:
        return check()
    except KafkaError:
        return False


class Workers:
    """The workers' service groups; counts the restarts they asked for (a worker that
    notices a stalled partition exits for its supervisor to start it again)."""

    def __init__(self, settings: Settings, log: IO[str], folder: Path) -> None:
        self.settings, self.log, self.folder = settings, log, folder
        self.running: dict[str, ServiceGroup] = {}
        self.restarts = 0

    def start(self, label: str) -> ServiceGroup:
        """A worker as on a machine of its own: its own data folder and health port."""
        own = self.settings.model_copy(
            update={"data_dir": self.folder / label, "processors_health_port": free_port()}
        )
        env = {
            **own.as_env(),
            # Faust's own settings: its Kafka client id names the worker in the group
            "BROKER_CLIENT_ID": label,
            "BROKER_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S),
        }
        group = ServiceGroup(env=env, out=self.log)
        group.start("processors", label)
        self.running[label] = group
        return group

    def leave(self, label: str, how: str) -> int:
        """Stop a worker (SIGTERM) or crash it (SIGKILL); its exit code."""
        group = self.running.pop(label)
        if how == "sigkill":
            group.kill(label)
        else:
            group.stop(label)
        code = group.processes[label].returncode
        assert isinstance(code, int)
        return code

    def wait(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not _asked(check):
            for group in self.running.values():
                self.restarts += len(group.restart_asked())
                assert not group.exited(), f"a worker stopped while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {check!r}"
            time.sleep(0.5)

    def stop_all(self) -> dict[str, int | None]:
        codes = {}
        for label, group in self.running.items():
            group.stop_all()
            codes[label] = group.processes[label].returncode
        self.running.clear()
        return codes


class Split:
    """A condition: the group is Stable with exactly the workers ``labels``, each owning
    some events.raw partitions and all of them owned; ``owned`` is what it saw last."""

    def __init__(self, settings: Settings, *labels: str) -> None:
        self.settings, self.labels = settings, set(labels)
        self.owned: dict[str, set[int]] = {}

    def __call__(self) -> bool:
        owned = asyncio.run(_owners(self.settings))
        if owned is None:
            return False
        self.owned = owned
        everything = set(range(self.settings.topic_partitions))
        return (
            set(owned) == self.labels
            and all(owned.values())
            and set().union(*owned.values()) == everything
        )

    def __repr__(self) -> str:
        return f"events.raw partitions by worker, last seen: {self.owned}"


class Progress:
    """A condition on the group's committed offsets on events.raw: at the log's end on
    every partition (no ``behind``), or past ``behind`` on one of ``partitions``."""

    def __init__(
        self,
        settings: Settings,
        behind: dict[int, int] | None = None,
        partitions: set[int] | None = None,
    ) -> None:
        self.settings, self.behind, self.partitions = settings, behind, partitions
        self.committed: dict[int, int] = {}
        self.ends: dict[int, int] = {}

    def __call__(self) -> bool:
        self.committed, self.ends = asyncio.run(_committed_and_ends(self.settings))
        if self.behind is None:
            return self.committed == self.ends
        return any(self.committed[p] > self.behind[p] for p in self.partitions or ())

    def __repr__(self) -> str:
        return f"committed {self.committed}, log ends {self.ends}"


# -- the scenario -----------------------------------------------------------------------


class Paced(threading.Thread):
    """Puts ``events`` on events.raw a chunk at a time, so the log is still flowing
    while workers come and go; ``join`` raises what producing raised."""

    def __init__(self, settings: Settings, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.settings, self.events = settings, events
        self.failure: BaseException | None = None

    def run(self) -> None:
        size = -(-len(self.events) // PACED_CHUNKS)
        try:
            for start in range(0, len(self.events), size):
                asyncio.run(produce(self.settings, self.events[start : start + size]))
                time.sleep(PACED_PAUSE_S)
        except BaseException as exc:
            self.failure = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.failure is not None:
            raise self.failure


def _run_scale_out(settings: Settings, events: list[dict[str, Any]], leave: str, tmp: Path) -> int:
    """The log in three parts: worker A alone works through the first; B joins, and once
    the group has split the partitions between them the second part flows in; as soon
    as B has committed progress it leaves (``leave``: sigterm or sigkill) while records
    still flow; once A owns every partition again the third part goes in, and A works
    to the end of the log. Each step waits on what the broker says (group assignment,
    committed offsets). Returns how many restarts the workers asked for on their own."""
    cut1, cut2 = len(events) * 35 // 100, len(events) * 70 // 100
    first, second, third = events[:cut1], events[cut1:cut2], events[cut2:]

    asyncio.run(produce(settings, first))
    with worker_log(tmp) as log:
        workers = Workers(settings, log, tmp)
        try:
            workers.start("worker-a")
            workers.wait("worker A to own every partition", Split(settings, "worker-a"))
            workers.wait("worker A to work through the first part", Progress(settings))

            workers.start("worker-b")
            split = Split(settings, "worker-a", "worker-b")
            workers.wait("A and B to split the partitions", split)
            b_part = split.owned["worker-b"]
            at_join, _ = asyncio.run(_committed_and_ends(settings))

            # the log flows while B works, and on after it left
            flowing = Paced(settings, second)
            flowing.start()
            try:
                workers.wait("worker B to commit progress", Progress(settings, at_join, b_part))
                code = workers.leave("worker-b", leave)
                assert leave == "sigkill" or code == 0, f"B exited {code} on SIGTERM"
            finally:
                flowing.join()
            workers.wait("worker A to take B's partitions over", Split(settings, "worker-a"))
            asyncio.run(produce(settings, third))
            workers.wait("every record to be processed", Progress(settings))
        finally:
            codes = workers.stop_all()
        # A stopped cleanly: everything it sent is on the topics now
        assert codes == {"worker-a": 0}, f"A exited {codes} on SIGTERM"
    return workers.restarts


# -- what must be on the topics ---------------------------------------------------------


def _fold_cli(events: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    path = folder / "log.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    done = subprocess.run(
        [sys.executable, "-m", "projections", "fold", "--input", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    users: dict[str, Any] = json.loads(done.stdout)["users"]
    return users


class Record(NamedTuple):
    event_id: str
    event_type: str
    value: bytes


def _records(settings: Settings, topic: str) -> list[Record]:
    """Every record on ``topic``, read up to its end offsets."""
    records = []
    for m in read_all(settings.kafka_bootstrap, settings.topic(topic)):
        datum = decode(REGISTRY, m.value)
        records.append(Record(str(datum["event_id"]), str(datum["event_type"]), m.value))
    return records


def _each_once(
    name: str, records: list[Record], expected: dict[str, str], crashed: bool
) -> list[str]:
    """What is wrong with ``records`` if they are not exactly the ``expected`` ids (id ->
    event type). A record twice is allowed only after partitions changed hands (the
    worker taking over re-sends what was processed past the last commit, by design:
    delivery to events.clean and events.derived is at-least-once), and then it is the
    very same record, so the sink and any consumer keep one."""
    problems = []
    ids = Counter(r.event_id for r in records)
    missing = Counter(kind for event_id, kind in expected.items() if event_id not in ids)
    unexpected = Counter(r.event_type for r in records if r.event_id not in expected)
    if missing or unexpected:
        problems.append(f"{name}: missing {dict(missing)}, unexpected {dict(unexpected)}")
    copied = Counter(r.event_type for r in records if ids[r.event_id] > 1)
    if copied and not crashed:
        problems.append(f"{name}: records twice without a handover: {dict(copied)}")
    values: dict[str, set[bytes]] = defaultdict(set)
    for r in records:
        values[r.event_id].add(r.value)
    if any(len(v) > 1 for v in values.values()):
        problems.append(f"{name}: copies of an event_id that differ")
    return problems


def _differences(name: str, published: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The keys where ``published`` is not ``expected``, the first one shown (for a
    record, the fields that differ: published, fold)."""
    wrong = sorted(
        k for k in published.keys() | expected.keys() if published.get(k) != expected.get(k)
    )
    if not wrong:
        return []
    first = wrong[0]
    mine, theirs = published.get(first), expected.get(first)
    if isinstance(mine, dict) and isinstance(theirs, dict):
        shown: Any = {
            f: (mine.get(f), theirs.get(f))
            for f in mine.keys() | theirs.keys()
            if mine.get(f) != theirs.get(f)
        }
    else:
        shown = (mine, theirs)
    return [f"{name}: {len(wrong)} of {len(expected)} keys differ from the fold, {first}: {shown}"]


def _by_user(snapshots: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Snapshots keyed ``user:thing`` as {user: {thing: snapshot}}."""
    grouped: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for key, snapshot in snapshots.items():
        user, thing = key.split(":", 1)
        grouped[user][thing] = snapshot
    return grouped


def _assert_equal_to_the_fold(
    settings: Settings,
    events: list[dict[str, Any]],
    expected_progress: dict[str, dict[str, Any]],
    crashed: bool,
    folder: Path,
) -> None:
    """Everything checked, every difference reported at once (one run is expensive)."""
    folded = fold_log((Event.from_envelope(e) for e in events), POLICY)
    distinct = {str(e["event_id"]): str(e["event_type"]) for e in events}
    assert len(distinct) == DISTINCT and folded.duplicates == RETRIED
    derived = {derived_event_id(d): d.kind for d in folded.derived}
    # the workload's kinds are learning progress: never sampled, all kept
    problems = _each_once("events.clean", _records(settings, EVENTS_CLEAN), distinct, crashed)
    problems += _each_once("events.derived", _records(settings, EVENTS_DERIVED), derived, crashed)

    progress = published_progress(settings)
    problems += _differences("projections.user_progress", progress, expected_progress)
    published = published_mastery_and_modes(settings)
    expected = expected_mastery_and_modes(events)
    for name in ("mastery", "modes"):
        problems += _differences(f"projections {name}", published[name], expected[name])

    # the fold's documented command says the same of every learner
    cli = _fold_cli(events, folder)
    assert len(cli) == LEARNERS
    applied = Counter(e["user_id"] for e in {e["event_id"]: e for e in events}.values())
    xp = latest_by_key(settings.kafka_bootstrap, settings.topic(PROJECTIONS_XP))
    problems += _differences(
        "projections.xp",
        xp,
        {u: {"user_id": u, "xp": s["xp"], "events_applied": applied[u]} for u, s in cli.items()},
    )
    problems += _differences(
        "user_progress vs fold CLI",
        {u: (p["xp"], p["level"], p["longest_streak"]) for u, p in progress.items()},
        {u: (s["xp"], s["level"], s["longest_streak"]) for u, s in cli.items()},
    )
    mastery, modes = _by_user(published["mastery"]), _by_user(published["modes"])
    problems += _differences(
        "topic_mastery vs fold CLI",
        {u: {t: (m["p_mastery"], m["mastered"]) for t, m in mastery[u].items()} for u in cli},
        {u: {t: (p, t in s["mastered"]) for t, p in s["mastery"].items()} for u, s in cli.items()},
    )
    problems += _differences(
        "mode_progress vs fold CLI",
        {
            u: {m: {f: v[f] for f in s["modes"].get(m, {})} for m, v in modes[u].items()}
            for u, s in cli.items()
        },
        {u: s["modes"] for u, s in cli.items()},
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("leave", ["sigterm", "sigkill"])
def test_two_workers_give_exactly_the_single_worker_result(
    settings: Settings, tmp_path: Path, leave: str
) -> None:
    """events.clean holds each event once, events.derived exactly the derived events the
    fold makes (UUIDv5 ids), and the latest snapshot per key on the projection topics is
    the fold's. A record may be there twice, identical, since partitions change hands:
    whatever was processed past the last commit before a handover is processed again
    (the state is not: it remembers the position it applied)."""
    assert settings.topic_partitions >= 6, "too few partitions for both workers to get several"
    events = _log()
    # the fold of the whole log: what one worker alone publishes; nothing produced yet
    expected = produce_and_expect(settings, events, produce_only=[])
    restarts = _run_scale_out(settings, events, leave, tmp_path)
    assert restarts >= 0
    _assert_equal_to_the_fold(settings, events, expected, True, tmp_path)
