"""Erasure requests: forget a learner at once, then tombstone their projection keys.

The forgetting has no await in it and runs under the lock the batches hold, so no batch
folds this learner in between: any snapshot published after it holds only later events.
The keys to tombstone are kept in the ``erased`` table, so a crash before the tombstones
are out repeats them when the request is redelivered, even though the state is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from learnstream.erasure import ErasureRequest, projection_keys
from processors.batch import delivered
from processors.record_batches import RecordBatches
from processors.state_tables import StateTables
from projections.rulebook import (
    CONSENT,
    COURSE,
    DRILLS,
    ERASED,
    LEARNER,
    SEEN,
    TOPIC,
    Erasure,
    LearnerEntry,
    split_key,
)

log = logging.getLogger(__name__)


class Eraser:
    def __init__(self, app: Any, state: StateTables, projection_topics: Mapping[str, str]) -> None:
        self._app = app
        self._state = state
        self._topics = projection_topics  # unprefixed name -> full topic name

    async def erase(self, request: ErasureRequest, event: Any) -> None:
        user = request.user_id
        partition = event.message.partition
        self._state.use_partition_of(event)
        writes = self._forget(user, request, partition)
        out = RecordBatches.of(self._app)
        # not whole: a learner with many pieces may not fit one record batch, and an
        # erasure cut short by a crash is simply done again (never retried for ever)
        self._state.store(writes, {partition: event}, out, whole=False)
        erasure: Erasure = writes[(ERASED, user)][0]
        for topic, keys in projection_keys(user, erasure.topics, erasure.modes).items():
            for key in keys:  # no value: compaction removes the key, the sink marks it deleted
                await out.add(self._topics[topic], key.encode(), None)
        futures = await out.send()
        self._state.on_sent(futures)
        await delivered([future for _, future in futures])
        log.info("erased learner %s (request %s)", user, request.request_id)

    def _forget(
        self, user: str, request: ErasureRequest, partition: int
    ) -> dict[tuple[str, str], tuple[Any, int]]:
        state = self._state
        entry: LearnerEntry | None = state.load(LEARNER, user)
        before: Erasure | None = state.load(ERASED, user)
        topic_keys = [key for key, _ in state.items(TOPIC) if split_key(key)[0] == user]
        topics = {split_key(key)[1] for key in topic_keys}
        modes = set(entry.summary.modes) if entry is not None else set()
        if before is not None:
            topics |= set(before.topics)
            modes |= set(before.modes)
        gone: list[tuple[str, str]] = [(LEARNER, user), (CONSENT, user), (DRILLS, user)]
        gone += [(TOPIC, key) for key in topic_keys]
        gone += [(COURSE, key) for key, _ in state.items(COURSE) if split_key(key)[0] == user]
        gone += [(SEEN, key) for key, seen in state.items(SEEN) if seen.user_id == user]
        writes: dict[tuple[str, str], tuple[Any, int]] = {
            slot: (None, partition) for slot in gone if state.load(*slot) is not None
        }
        at = max(before.at_ms if before else 0, request.requested_at_ms)
        writes[(ERASED, user)] = (Erasure(at, sorted(topics), sorted(modes)), partition)
        return writes
