"""Notice a partition that has work waiting but makes no progress.

Faust has known ways to stop fetching a partition after a rebalance while the worker
otherwise looks healthy (faust-streaming issues #629, #166): nothing crashes, the lag
just grows. A worker that sees this on one of its own partitions exits, so that its
supervisor restarts it; restarting is safe because every effect is already tied to
a source offset (the crash tests kill workers at random to prove it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stall:
    partition: int
    next_offset: int | None  # the next offset this worker would process
    highwater: int
    idle_s: float


@dataclass
class StallWatch:
    timeout_s: float
    # Recovery or a rebalance pauses processing legitimately, but Faust's recovery can
    # also hang (faust-streaming #21, #155): past this long it is a stall too.
    recovery_grace_factor: float = 5.0
    _next: dict[int, int | None] = field(default_factory=dict)  # partition -> next offset
    _since: dict[int, float] = field(default_factory=dict)  # partition -> last progress
    _recovering_since: float | None = None

    @property
    def partitions(self) -> set[int]:
        return set(self._since)

    def recovering(self, now: float) -> bool:
        """The worker is recovering tables or rebalancing: not a stall, for a while.
        True while that grace lasts (the clocks are held); False once it is over."""
        if self._recovering_since is None:
            self._recovering_since = now
        if now - self._recovering_since < self.timeout_s * self.recovery_grace_factor:
            self.idle(now)
            return True
        return False

    def flowing(self) -> None:
        self._recovering_since = None

    def assigned(self, partitions: set[int], now: float) -> None:
        """(Re)assignment: the clock starts now for each partition, progress unknown."""
        self._next = {p: None for p in partitions}
        self._since = dict.fromkeys(partitions, now)

    def idle(self, now: float) -> None:
        """Time the worker spends recovering or rebalancing is not a stall."""
        self._since = dict.fromkeys(self._since, now)

    def processed(self, partition: int, offset: int, now: float) -> None:
        self._next[partition] = offset + 1
        self._since[partition] = now

    def stalls(
        self, highwaters: dict[int, int], committed: dict[int, int | None], now: float
    ) -> list[Stall]:
        """Partitions with records past what was processed, idle longer than the timeout.

        Before its first record since assignment, a partition's starting point is the
        group's committed offset, so a caught-up, quiet partition just after a restart
        is not mistaken for a stalled one.
        """
        found = []
        for partition, since in self._since.items():
            highwater = highwaters.get(partition)
            if highwater is None or now - since < self.timeout_s:
                continue
            next_offset = self._next.get(partition)
            if next_offset is None:
                next_offset = committed.get(partition)
            if next_offset is not None and highwater > next_offset:
                found.append(Stall(partition, next_offset, highwater, now - since))
        return found
