"""The sink's garbage collector settings: rarer automatic collections, still on."""

from __future__ import annotations

import gc
import weakref

from sinks.gc_tuning import YOUNG_COLLECTION_EVERY, settle_after_start_up


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_a_cycle_is_freed_by_automatic_collection_after_settling() -> None:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    try:
        settle_after_start_up()
        first, second = Node(), Node()
        first.other, second.other = second, first
        watched = weakref.ref(first)
        del first, second
        assert watched() is not None  # nothing but a collection frees a cycle
        kept: list[list[int]] = [[] for _ in range(2 * YOUNG_COLLECTION_EVERY)]  # one runs
        assert watched() is None
        del kept
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if not enabled:
            gc.disable()
