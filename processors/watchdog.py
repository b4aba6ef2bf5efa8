"""Notice a partition that has work waiting but makes no progress.

Faust has known ways to stop fetching a partition after a rebalance while the worker
otherwise looks healthy (faust-streaming issues #629, #166): nothing crashes, the lag
just grows. A worker that sees this on one of its own partitions exits, so that its
supervisor restarts it; restarting is safe because every effect is already tied to
a source offset (the crash tests kill workers at random to prove it).

Before that, at half the timeout, it reports the partition as not advancing: a warning
in the log, and ``StallWatch.unready`` for the readiness endpoint (processors.health),
so operators and orchestrators see it coming.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from processors.offsets import OffsetProbe

log = logging.getLogger(__name__)
EX_TEMPFAIL = 75  # sysexits.h: exit for the supervisor to restart the worker


@dataclass(frozen=True)
class Stall:
    partition: int
    next_offset: int | None  # the next offset this worker would process
    highwater: int
    idle_s: float


@dataclass(frozen=True)
class NotAdvancing:
    """A partition with records waiting and no progress for a while: not yet a stall."""

    partition: int
    committed: int | None  # where the group resumes (its committed offset)
    end: int  # the partition's end offset
    since: float  # monotonic time of its last progress (or assignment)

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "since_s": round(now - self.since, 1),
        }


@dataclass
class StallWatch:
    timeout_s: float
    # Recovery or a rebalance pauses processing legitimately, but Faust's recovery can
    # also hang (faust-streaming #21, #155): past this long it is a stall too.
    recovery_grace_factor: float = 5.0
    _next: dict[int, int | None] = field(default_factory=dict)  # partition -> next offset
    _since: dict[int, float] = field(default_factory=dict)  # partition -> last progress
    _recovering_since: float | None = None
    # partition -> (the group's committed offset, since when it has not moved)
    _commits: dict[int, tuple[int, float]] = field(default_factory=dict)
    # what the last check found not advancing, for readiness
    _not_advancing: dict[int, NotAdvancing] = field(default_factory=dict)
    # the worker's event loop writes, the watchdog thread reads
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def partitions(self) -> set[int]:
        with self._lock:
            return set(self._since)

    def recovering(self, now: float) -> bool:
        """The worker is recovering tables or rebalancing: not a stall, for a while.
        True while that grace lasts (the clocks are held); False once it is over."""
        with self._lock:
            if self._recovering_since is None:
                self._recovering_since = now
            if now - self._recovering_since < self.timeout_s * self.recovery_grace_factor:
                self._since = dict.fromkeys(self._since, now)
                self._commits = {}
                self._not_advancing = {}
                return True
            return False

    def flowing(self) -> None:
        with self._lock:
            self._recovering_since = None

    def assigned(self, partitions: set[int], now: float) -> None:
        """(Re)assignment: the clock starts now for each partition, progress unknown."""
        with self._lock:
            self._next = {p: None for p in partitions}
            self._since = dict.fromkeys(partitions, now)
            self._commits = {}
            self._not_advancing = {}

    def idle(self, now: float) -> None:
        """Time the worker spends recovering or rebalancing is not a stall."""
        with self._lock:
            self._since = dict.fromkeys(self._since, now)

    def processed(self, partition: int, offset: int, now: float) -> None:
        with self._lock:
            self._next[partition] = offset + 1
            self._since[partition] = now

    def idle_for(self, now: float) -> float:
        """How long since any partition last made progress (or was assigned)."""
        with self._lock:
            return now - max(self._since.values(), default=now)

    def waiting(
        self,
        highwaters: dict[int, int],
        committed: dict[int, int | None],
        now: float,
        min_idle_s: float,
    ) -> list[Stall]:
        """Partitions with records past what was processed, idle at least ``min_idle_s``."""
        with self._lock:
            return [stall for stall, _ in self._waiting(highwaters, committed, now, min_idle_s)]

    def _waiting(
        self,
        highwaters: dict[int, int],
        committed: dict[int, int | None],
        now: float,
        min_idle_s: float,
    ) -> list[tuple[Stall, float]]:
        """(stall, time of the partition's last progress); the caller holds the lock."""
        found = []
        for partition, since in self._since.items():
            highwater = highwaters.get(partition)
            if highwater is None or now - since < min_idle_s:
                continue
            next_offset = self._next.get(partition)
            if next_offset is None:
                next_offset = committed.get(partition)
            if next_offset is not None and highwater > next_offset:
                found.append((Stall(partition, next_offset, highwater, now - since), since))
        return found

    def not_advancing(
        self, highwaters: dict[int, int], committed: dict[int, int | None], now: float
    ) -> list[NotAdvancing]:
        """Record the partitions with records waiting and no progress for half the
        timeout (what ``unready`` reports); return those that just became so, to be
        reported once per stall rather than on every check."""
        with self._lock:
            found = {
                stall.partition: NotAdvancing(
                    stall.partition, committed.get(stall.partition), stall.highwater, since
                )
                for stall, since in self._waiting(highwaters, committed, now, self.timeout_s / 2)
            }
            before, self._not_advancing = self._not_advancing, found
        # the same partition with a later last progress moved in between: a new stall
        return [
            lag for p, lag in found.items() if before.get(p) is None or before[p].since != lag.since
        ]

    def unready(self, now: float) -> list[dict[str, Any]]:
        """The partitions the last check found not advancing, for a readiness answer."""
        with self._lock:
            lagging = sorted(self._not_advancing.values(), key=lambda lag: lag.partition)
        return [lag.as_json(now) for lag in lagging]

    def commit_stalls(self, committed: dict[int, int | None], now: float) -> list[Stall]:
        """Partitions processed past their committed offset, whose commit has not moved
        for the timeout. Faust commits only up to the first offset it has not acked, so
        one message never acked holds the commit back for good while records flow: a
        restart resumes from the commit and processes the rest again, idempotently."""
        found = []
        with self._lock:
            for partition, next_offset in self._next.items():
                offset = committed.get(partition)
                if next_offset is None or offset is None or offset >= next_offset:
                    self._commits.pop(partition, None)
                    continue
                held = self._commits.get(partition)
                if held is None or held[0] != offset:
                    self._commits[partition] = (offset, now)
                elif now - held[1] >= self.timeout_s:
                    found.append(Stall(partition, offset, next_offset, now - held[1]))
        return found

    def stalls(
        self, highwaters: dict[int, int], committed: dict[int, int | None], now: float
    ) -> list[Stall]:
        """Partitions with records past what was processed, idle longer than the timeout.

        Before its first record since assignment, a partition's starting point is the
        group's committed offset, so a caught-up, quiet partition just after a restart
        is not mistaken for a stalled one.
        """
        return self.waiting(highwaters, committed, now, min_idle_s=self.timeout_s)


def warn_not_advancing(
    watch: StallWatch, highwaters: dict[int, int], committed: dict[int, int | None], now: float
) -> None:
    """A warning, once per stall, for each partition not advancing for half the timeout."""
    for lag in watch.not_advancing(highwaters, committed, now):
        log.warning(
            "partition %d is not advancing: committed offset %s, end offset %d, no progress "
            "for %.0fs; the worker exits for a restart at %.0fs",
            lag.partition,
            lag.committed,
            lag.end,
            now - lag.since,
            watch.timeout_s,
        )


class WatchdogThread(threading.Thread):
    """Runs the stall check beside the worker, on its own thread and event loop.

    Nothing the worker's event loop does, a hung Kafka call or a blocked callback
    included, can stop it: a watchdog must not depend on the health of what it
    watches. When its own probe of the broker fails again and again while no
    partition makes progress, that is treated as a stall too."""

    def __init__(
        self,
        watch: StallWatch,
        make_probe: Callable[[], OffsetProbe],
        is_recovering: Callable[[], bool],
        interval_s: float = 10.0,
        probe_timeout_s: float = 5.0,
        on_offsets: Callable[[dict[int, int], dict[int, int | None]], None] | None = None,
        recovery_remaining: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(name="stall-watchdog", daemon=True)
        self._watch = watch
        self._make_probe = make_probe
        self._is_recovering = is_recovering
        self._interval_s = interval_s
        self._probe_timeout_s = probe_timeout_s
        self._on_offsets = on_offsets  # metrics: what each probe saw
        # changelog records table recovery still has to read; a count that stays put
        # while records remain is a recovery that hangs (faust-streaming #21, #74: seen
        # in the two-worker tests as "No event received for active tp" for minutes)
        self._recovery_remaining = recovery_remaining
        self._recovery_seen: tuple[int, float] | None = None  # (remaining, since when)
        self._closing: set[asyncio.Future[None]] = set()  # abandoned probes being closed

    def run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        probe = self._make_probe()
        blind_since: float | None = None
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            if self._is_recovering():
                self._check_recovery_moves(now)
                if self._watch.recovering(now):
                    continue
            else:
                self._recovery_seen = None
                self._watch.flowing()
            partitions = self._watch.partitions
            if not partitions:
                continue
            check = asyncio.ensure_future(probe.snapshot(partitions))
            done, _ = await asyncio.wait({check}, timeout=self._probe_timeout_s)
            error = None if not done else check.exception()
            if not done or error is not None:
                if not done:  # abandon it: a call that ignores cancellation must not hang us
                    check.cancel()
                # a fresh probe next time; the old one's clients are closed in the
                # background, not awaited, for the same reason
                self._closing.add(asyncio.ensure_future(probe.stop()))
                self._closing = {task for task in self._closing if not task.done()}
                probe = self._make_probe()
                blind_since = blind_since or now
                blind_s = now - blind_since
                log.warning("stall check skipped (%r); blind for %.0fs", error, blind_s)
                if blind_s >= 3 * self._watch.timeout_s and self._watch.idle_for(now) >= blind_s:
                    self._exit(f"no progress and no answer from the broker for {blind_s:.0f}s")
                continue
            blind_since = None
            highwaters, committed = check.result()
            if self._on_offsets is not None:
                self._on_offsets(highwaters, committed)
            warn_not_advancing(self._watch, highwaters, committed, now)  # first: explains an exit
            found = self._watch.stalls(highwaters, committed, now)
            if found:
                self._exit(f"partitions stalled: {found}")
            held = self._watch.commit_stalls(committed, now)
            if held:
                self._exit(f"commits stuck behind processed records: {held}")
            self._report(highwaters, committed, now)

    def _report(
        self, highwaters: dict[int, int], committed: dict[int, int | None], now: float
    ) -> None:
        """Say what it sees while records wait without progress, so a stall it does not
        act on can still be explained from the log."""
        waiting = self._watch.waiting(highwaters, committed, now, min_idle_s=self._interval_s)
        if waiting:
            log.info("watchdog: waiting, not yet a stall: %s", waiting)

    def _check_recovery_moves(self, now: float) -> None:
        """Exit for a restart when table recovery has records left to read and has read
        none of them for the stall timeout; a long recovery that moves goes on."""
        if self._recovery_remaining is None:
            return
        try:
            remaining = self._recovery_remaining()
        except RuntimeError:  # Faust's counters changed size while being read: next time
            return
        seen = self._recovery_seen
        if remaining <= 0 or seen is None or seen[0] != remaining:
            self._recovery_seen = (remaining, now)
            return
        if now - seen[1] >= self._watch.timeout_s:
            self._exit(
                f"table recovery read nothing for {now - seen[1]:.0f}s with {remaining} "
                "changelog records left"
            )

    @staticmethod
    def _exit(reason: str) -> NoReturn:
        exit_for_restart("%s; exiting for a restart", reason)


def exit_for_restart(message: str, *args: object, exc_info: bool = False) -> NoReturn:
    """Log ``message`` and exit with 75 at once, committing nothing, so the supervisor
    restarts the worker from its committed offsets. Safe because every effect is tied to
    its source offset (the SIGKILL tests prove it)."""
    log.critical(message, *args, exc_info=exc_info)
    logging.shutdown()
    os._exit(EX_TEMPFAIL)
