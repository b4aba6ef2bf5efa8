"""A collector worker process that does not outlive the process that started it."""

from __future__ import annotations

import os
import signal
import threading

PARENT_CHECK_S = 1.0


def exit_with_parent(check_every_s: float = PARENT_CHECK_S) -> None:
    """Stop this process (SIGTERM to itself: uvicorn's graceful shutdown, so the producer
    flushes what it holds) once its parent is gone. uvicorn's supervisor stops its workers
    on SIGTERM, but a supervisor killed outright cannot, and its orphaned workers would
    keep taking requests on the shared socket after a restart started new ones."""
    parent = os.getppid()

    def watch() -> None:
        stopped = threading.Event()
        while not stopped.wait(check_every_s):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
