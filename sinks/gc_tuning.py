"""How the sink process runs Python's cyclic garbage collector once it has started.

The sink builds and drops tens of thousands of containers per batch (decoded records,
rows, planning tuples), none of them in a cycle: reference counting frees them all.
The collector's automatic runs still walked them: a young collection every 700
allocations and, as the rows of the batches in flight survived, older ones over all of
them. Measured on the sink bench (BENCHMARKS.md, session 8): rows/s +15-25 % with
automatic collection off against a young collection every 50 000 allocations, more
against the default. So automatic collection is off after start-up, and a full
collection runs on a timer instead: whatever cycles the process does make (an
exception's traceback, asyncio's bookkeeping) are freed within a minute.
"""

from __future__ import annotations

import asyncio
import gc

COLLECT_EVERY_S = 60.0


def settle_after_start_up() -> None:
    """Keep what start-up built (catalog, schemas, app, clients: it lives as long as the
    process) out of every later collection, and stop automatic collections."""
    gc.collect()
    gc.freeze()
    gc.disable()


async def collect_periodically(every_s: float = COLLECT_EVERY_S) -> None:
    """A full collection every ``every_s`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        gc.collect()
