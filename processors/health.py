"""``/healthz`` and ``/readyz`` for a processors worker, for operators and orchestrators.

Faust's own web server is off (it would bring a second framework for two answers), so
this is the standard library's ``ThreadingHTTPServer`` on a daemon thread of its own:
like the watchdog, it keeps answering whatever the worker's event loop is doing, and it
reads nothing but what the watchdog last saw (``StallWatch.unready``).

- ``/healthz``: 200 while the process is alive.
- ``/readyz``: 503 ``{"status": "unready", "stalled": [...]}`` while a partition has had
  records waiting and no progress for half the stall timeout; 200 otherwise.
- ``/metrics``: Prometheus text (``processors.metrics``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from processors.metrics import ProcessorMetrics
from processors.watchdog import StallWatch

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


def readiness(watch: StallWatch, now: float) -> tuple[HTTPStatus, dict[str, Any]]:
    stalled = watch.unready(now)
    if stalled:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unready", "stalled": stalled}
    return HTTPStatus.OK, {"status": "ready"}


def _handler(watch: StallWatch, metrics: ProcessorMetrics | None) -> type[BaseHTTPRequestHandler]:
    answers: dict[str, Callable[[], tuple[HTTPStatus, dict[str, Any]]]] = {
        "/healthz": lambda: (HTTPStatus.OK, {"status": "ok"}),
        "/readyz": lambda: readiness(watch, time.monotonic()),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and metrics is not None:
                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, metrics.render())
                return
            answer = answers.get(path)
            status, body = answer() if answer else (HTTPStatus.NOT_FOUND, {"status": "unknown"})
            self._send(status, "application/json", json.dumps(body).encode())

        def _send(self, status: HTTPStatus, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health: " + format, *args)  # probes every few seconds: not INFO

    return Handler


def serve_health(
    port: int, watch: StallWatch, metrics: ProcessorMetrics | None = None
) -> ThreadingHTTPServer | None:
    """Serve on ``127.0.0.1:port`` until the process ends; port 0 means off.

    A port that is taken is logged, not fatal: the endpoint reports on processing and
    must never be the reason processing stops."""
    if port == 0:
        return None
    try:
        server = ThreadingHTTPServer((HOST, port), _handler(watch, metrics))
    except OSError as exc:
        log.error("health endpoint not served: cannot listen on %s:%d (%s)", HOST, port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("health endpoint on http://%s:%d (/healthz, /readyz, /metrics)", HOST, port)
    return server
