"""How the sink process runs Python's cyclic garbage collector once it has started.

The sink builds and drops tens of thousands of containers per batch (decoded records,
rows, planning tuples), none of them in a cycle: reference counting frees them all.
The collector's automatic runs still walked them: with the default thresholds, a young
collection every 700 allocations, and, as the rows of the batches in flight survived
those, older collections over all of them again. Measured on the sink bench
(BENCHMARKS.md, session 8): rows/s 34-36k with the defaults, 45-57k with a young
collection every 100 000 allocations, 49-56k with no automatic collection at all.

Automatic collection stays on, only rarer: the read API in the same process makes
cycles at every request (about 90 objects, 2 000 for a refused query: exception
tracebacks), and a collector driven by allocations keeps up with a burst of those
where one on a timer would let them pile up.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 100_000  # container allocations, against 700 by default
MIDDLE_COLLECTION_EVERY = 20  # young collections (10 by default)
OLDEST_COLLECTION_EVERY = 100  # middle collections (10 by default)


def settle_after_start_up() -> None:
    """Keep what start-up built (catalog, schemas, app, clients: it lives as long as the
    process) out of every later collection, and collect rarely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, OLDEST_COLLECTION_EVERY)
    gc.enable()
