"""``Tracker``: queue events durably, send them in batches, never lose one.

Seed 004's client rules: flush every 30 s or at 100 queued events; retry server and
network failures 3 times with exponential backoff and jitter; never retry a 4xx (the
request itself is wrong, and sending it again cannot help; the reason is logged).
What a flush cannot deliver stays in the on-disk outbox for the next one, so the
queue drains by itself once the collector is reachable again, even after a restart.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from learnstream_sdk.ids import uuid7
from learnstream_sdk.outbox import Outbox

log = logging.getLogger("learnstream_sdk")

USER_AGENT = "learnstream-python-sdk/1"
BATCH_LIMIT = 500  # the collector's per-request maximum


@dataclass
class FlushResult:
    accepted: int = 0
    rejected: int = 0  # refused by the collector (4xx or per-event), logged, not retried
    pending: int = 0  # still in the outbox: the collector could not be reached


class _Unreachable(Exception):
    """5xx or a network failure after every retry: keep the events for later."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Tracker:
    def __init__(
        self,
        endpoint: str,
        outbox_path: Path,
        *,
        write_key: str | None = None,
        user_token: str | None = None,
        flush_interval_s: float = 30.0,
        flush_at: int = 100,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 10.0,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        background: bool = True,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if write_key:
            headers["Authorization"] = f"Bearer {write_key}"
        if user_token:
            headers["X-User-Token"] = user_token
        self._owns_http = http is None  # an injected client is its owner's to close
        self._http = http or httpx.Client(base_url=endpoint, timeout=timeout_s)
        self._http.headers.update(headers)
        self._outbox = Outbox(outbox_path)
        self._flush_at = min(flush_at, BATCH_LIMIT)
        self._interval_s = flush_interval_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._sending = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        if background:
            self._flusher = threading.Thread(
                target=self._run, name="learnstream-flush", daemon=True
            )
            self._flusher.start()

    # --- the app's side -------------------------------------------------------------

    def track(
        self,
        event_type: str,
        properties: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        organization_id: str | None = None,
        timestamp: datetime | None = None,
        privacy_level: str | None = None,
        device_info: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue one event (on disk before this returns); returns its event_id."""
        if self._closed.is_set():
            raise RuntimeError("track() after close()")
        event: dict[str, Any] = {
            "event_id": event_id or str(uuid7()),
            "event_type": event_type,
            "timestamp": _iso(timestamp or self._clock()),
            "properties": properties or {},
        }
        optional = {
            "user_id": user_id,
            "session_id": session_id,
            "organization_id": organization_id,
            "privacy_level": privacy_level,
            "device_info": device_info,
            "context": context,
        }
        event.update({k: v for k, v in optional.items() if v is not None})
        self._outbox.put(event)
        if len(self._outbox) >= self._flush_at:
            self._wake.set()
        return str(event["event_id"])

    def flush(self) -> FlushResult:
        """Send everything queued now; what cannot be delivered stays queued."""
        result = FlushResult()
        with self._sending:
            while True:
                batch = self._outbox.oldest(self._flush_at)
                if not batch:
                    break
                try:
                    self._deliver(batch, result)
                except _Unreachable as exc:
                    log.warning(
                        "collector unreachable, %d events kept for later: %s", len(batch), exc
                    )
                    break
            result.pending = len(self._outbox)
        return result

    def close(self) -> FlushResult:
        """Stop the background flusher and flush one last time."""
        self._closed.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join()
        result = self.flush()
        self._outbox.close()
        if self._owns_http:
            self._http.close()
        return result

    @property
    def pending(self) -> int:
        return len(self._outbox)

    # --- sending --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self.flush()
            except Exception:  # the flusher must outlive any one bad flush
                log.exception("background flush failed; events stay queued")

    def _deliver(self, batch: list[tuple[int, dict[str, Any]]], result: FlushResult) -> None:
        response = self._post_with_retries([event for _, event in batch])
        seqs = [seq for seq, _ in batch]
        if response.status_code == 413 and len(batch) > 1:  # too big together: halve it
            half = len(batch) // 2
            self._deliver(batch[:half], result)
            self._deliver(batch[half:], result)
            return
        if response.status_code >= 400:  # 4xx: retrying the same request cannot help
            log.error(
                "collector refused %d events with %d, not retrying: %s",
                len(batch),
                response.status_code,
                response.text[:1000],
            )
            result.rejected += len(batch)
        else:
            answer = response.json()
            for refused in answer.get("rejected", []):
                log.error(
                    "collector rejected event %s: %s",
                    refused.get("event_id"),
                    refused.get("errors"),
                )
            result.accepted += int(answer.get("accepted", 0))
            result.rejected += len(answer.get("rejected", []))
        self._outbox.remove(seqs)

    def _post_with_retries(self, events: list[dict[str, Any]]) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.post(
                    "/v1/events/batch", json={"sent_at": _iso(self._clock()), "events": events}
                )
                if response.status_code < 500:
                    return response
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                failure = repr(exc)
            if attempt >= self._max_retries:
                raise _Unreachable(failure)
            self._sleep(self._backoff(attempt))
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Exponential with full jitter: many clients back from one outage don't all
        come back in the same instant."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2**attempt)
        return self._rng.uniform(0, ceiling)
