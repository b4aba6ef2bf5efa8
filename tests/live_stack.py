"""The whole pipeline running as processes, as ``make run`` starts them, for the suites
that talk to it only from outside: over HTTP (collector, read API) and Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from devstack.services import ServiceGroup, http_ok
from learnstream.settings import Settings

STARTUP_TIMEOUT_S = 120


@dataclass
class LiveStack:
    settings: Settings
    group: ServiceGroup
    reader_token: str | None = None  # sent to the read API when it checks tokens
    arrival_timeout_s: float = 90.0
    collector: httpx.Client = field(init=False)
    reads: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.collector = httpx.Client(base_url=self.settings.collector_url, timeout=30)
        headers = {"authorization": f"Bearer {self.reader_token}"} if self.reader_token else {}
        self.reads = httpx.Client(base_url=self.settings.query_url, timeout=30, headers=headers)

    def analyst(self, query: bytes | str) -> httpx.Response:
        body = query.encode() if isinstance(query, str) else query
        return self.reads.post("/v1/query", content=body, headers={"content-type": "text/plain"})

    def sql(self, query: str, **params: str) -> list[list[Any]]:
        """Rows of ``query``; ``{name}`` placeholders take our own literals, quoted."""
        for name, value in params.items():
            query = query.replace("{" + name + "}", "'" + value.replace("'", "\\'") + "'")
        response = self.analyst(query)
        assert response.status_code == 200, response.text
        rows: list[list[Any]] = response.json()["rows"]
        return rows

    def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.arrival_timeout_s
        while time.monotonic() < deadline:
            exited = self.group.exited()
            assert not exited, f"a service stopped while waiting for {what}: {exited}"
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    def close(self) -> None:
        self.collector.close()
        self.reads.close()


@contextmanager
def live_stack(settings: Settings, reader_token: str | None = None) -> Iterator[LiveStack]:
    """Collector, processors and sink on ``settings``, ready to take events and queries."""
    group = ServiceGroup(env=settings.as_env())
    group.start_all()
    stack = LiveStack(settings, group, reader_token)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for url in (f"{settings.collector_url}/readyz", f"{settings.query_url}/healthz"):
            while not http_ok(url):
                assert not group.exited(), f"a service stopped at start: {group.exited()}"
                assert time.monotonic() < deadline, f"{url} never answered"
                time.sleep(0.3)
        yield stack
    finally:
        group.stop_all()
        stack.close()
