"""The SDK's offline queue: events wait in SQLite until the collector has taken them.

An event is written here by ``track`` before anything is sent, and removed only when
the collector has answered for it, so a crash or restart of the app loses nothing;
it may send an event again, which the pipeline's dedup by event_id absorbs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # one connection shared by the app's threads and the flusher, behind the lock
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of the process (the case here); FULL
        # would add an fsync per event to survive power loss as well
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox "
            "(seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, event TEXT NOT NULL)"
        )

    def put(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (event_id, event) VALUES (?, ?)",
                (event["event_id"], json.dumps(event, separators=(",", ":"))),
            )

    def oldest(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(int(seq), json.loads(text)) for seq, text in rows]

    def remove(self, seqs: list[int]) -> None:
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        with self._lock:
            self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", seqs)

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
