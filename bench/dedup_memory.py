"""What remembering one event_id for the dedup window costs.

Memory store (development, tests): the processors keep the dedup table (the rulebook's
``seen``) as a Faust memory-store table of bytes: the event_id as the key, the msgpack
``FirstSeen`` (partition, offset, arrival, user) as the value, plus one ``ExpiryQueue``
heap entry per id. Both are measured with tracemalloc while one million UUID ids are
remembered, exactly as the agent does.

RocksDB store (production): the same key and value bytes, written to a rocksdict
database; measured as bytes on disk after a flush and compaction. RocksDB keeps only its
block cache and memtables in memory.
"""

from __future__ import annotations

import tempfile
import tracemalloc
import uuid
from pathlib import Path

import faust
from rocksdict import Rdict

from processors.dedup_window import ExpiryQueue
from projections.rulebook import FirstSeen, encode

ARRIVAL_MS = 1_767_000_000_000


def _ids(count: int) -> list[str]:
    return [
        str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128), version=4)) for i in range(count)
    ]


def memory_store_bytes_per_id(count: int, partitions: int = 3) -> dict[str, float]:
    app = faust.App("dedup-memory-bench", store="memory://")
    table = app.Table("dedup-first-seen", default=None, partitions=partitions)
    expiry = ExpiryQueue(window_ms=24 * 3600 * 1000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for offset, event_id in enumerate(_ids(count)):
        partition = offset % partitions
        seen = FirstSeen(partition, offset, ARRIVAL_MS + offset, f"u{offset % 2000}")
        table.data[event_id.encode()] = encode(seen)
        expiry.remember(partition, event_id, ARRIVAL_MS + offset)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"memory_store_bytes_per_id": (after - before) / count}


def rocksdb_bytes_per_id(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="dedup-rocksdb-") as folder:
        db = Rdict(folder)
        for offset, event_id in enumerate(_ids(count)):
            seen = FirstSeen(offset % 3, offset, ARRIVAL_MS + offset, f"u{offset % 2000}")
            db[event_id.encode()] = encode(seen)
        db.flush()
        db.compact_range(None, None)
        db.close()
        on_disk = sum(f.stat().st_size for f in Path(folder).rglob("*.sst"))
    return {"rocksdb_sst_bytes_per_id": on_disk / count}


def measure(count: int) -> dict[str, float]:
    return {**memory_store_bytes_per_id(count), **rocksdb_bytes_per_id(count)}
