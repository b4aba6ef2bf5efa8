"""Run learnstream's services as child processes with prefixed, interleaved logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO

import httpx

SERVICES: Mapping[str, list[str]] = {
    "collector": [sys.executable, "-m", "collector"],
    "processors": [sys.executable, "-m", "processors"],
    "sink": [sys.executable, "-m", "sinks"],
}


EX_TEMPFAIL = 75  # sysexits.h: "try again later"


def _service_of(process: subprocess.Popen[bytes]) -> str:
    command = list(process.args)  # type: ignore[arg-type]
    return next(name for name, argv in SERVICES.items() if argv == command)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    """True once a service's health or readiness URL answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _pump(name: str, stream: IO[bytes], out: IO[str]) -> None:
    for line in iter(stream.readline, b""):
        out.write(f"[{name:<10}] {line.decode(errors='replace')}")
        out.flush()


@dataclass
class ServiceGroup:
    """Start, watch and stop a set of services sharing one environment."""

    env: Mapping[str, str]
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, instance: str | None = None) -> subprocess.Popen[bytes]:
        """Start service ``name``; ``instance`` names a second copy (e.g. another worker)."""
        label = instance or name
        env = {**os.environ, **self.env}
        if name == "processors":  # each worker its own static member (see Settings)
            env.setdefault("LEARNSTREAM_PROCESSORS_INSTANCE_ID", label)
        process = subprocess.Popen(
            SERVICES[name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the group decides when children stop
        )
        assert process.stdout is not None
        threading.Thread(target=_pump, args=(label, process.stdout, self.out), daemon=True).start()
        self.processes[label] = process
        return process

    def start_all(self) -> None:
        for name in SERVICES:
            self.start(name)

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}

    def supervise(self) -> dict[str, int]:
        """Restart what asked for it; the services that stopped otherwise, with codes."""
        self.restart_asked()
        return self.exited()

    def restart_asked(self) -> list[str]:
        """Restart every service that exited asking for it (EX_TEMPFAIL, as a processors
        worker does when it notices a stalled partition); returns their names."""
        restarted = []
        for label, code in self.exited().items():
            if code == EX_TEMPFAIL:
                self.start(_service_of(self.processes[label]), label)
                restarted.append(label)
        return restarted

    def restart(self, label: str) -> subprocess.Popen[bytes]:
        """Start the service that ran as ``label`` again, under the same label."""
        return self.start(_service_of(self.processes[label]), label)

    def kill(self, name: str) -> None:
        """SIGKILL: the crash case, no chance to flush or commit."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self, name: str, timeout_s: float = 20.0) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self, timeout_s: float = 20.0) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name, timeout_s)

    def wait_any_exit(self, poll_s: float = 0.5) -> dict[str, int]:
        while not (done := self.exited()):
            time.sleep(poll_s)
        return done


@dataclass
class RestartBudget:
    """When a service that stopped may start again, as a supervisor decides it: after a
    pause that doubles with each restart in the window (a crash loop does not spin), and
    not at all once ``max_restarts`` fell within ``window_s`` (something is broken that a
    restart cannot mend; say so and stop, rather than hide it)."""

    max_restarts: int = 10
    window_s: float = 300.0
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    _restarts: dict[str, list[float]] = field(default_factory=dict)

    def next_start(self, label: str, now: float) -> float | None:
        """When ``label``, which stopped at ``now``, may start again; None: budget spent."""
        recent = [t for t in self._restarts.get(label, []) if now - t < self.window_s]
        if len(recent) >= self.max_restarts:
            self._restarts[label] = recent
            return None
        recent.append(now)
        self._restarts[label] = recent
        delay: float = min(self.base_delay_s * 2.0 ** (len(recent) - 1), self.max_delay_s)
        return now + delay

    def used(self, label: str, now: float) -> int:
        return sum(1 for t in self._restarts.get(label, []) if now - t < self.window_s)
