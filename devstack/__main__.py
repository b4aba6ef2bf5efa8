"""``python -m devstack``: the local real stack.

run            Kafka + collector + processors + sink in the foreground; Ctrl-C stops all
kafka start    start (or reuse) the local broker and provision topics
kafka stop     stop the local broker
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading

from devstack import kafka
from devstack.services import ServiceGroup
from learnstream.logs import configure_logging
from learnstream.settings import Settings
from learnstream.topics import ensure_topics

log = logging.getLogger("devstack")


def kafka_paths(settings: Settings) -> kafka.KafkaPaths:
    # absolute: Maven resolves relative paths against the pom's folder, not ours
    return kafka.KafkaPaths(
        home=settings.devstack_home.resolve(), data=(settings.data_dir / "kafka").resolve()
    )


def start_kafka(settings: Settings) -> bool:
    port = settings.kafka_port
    _, started = kafka.start(kafka_paths(settings), port, port + 1)
    asyncio.run(ensure_topics(settings))
    return started


def banner(settings: Settings) -> str:
    return f"""
learnstream is up.
  collector  {settings.collector_url}/v1/events   (OpenAPI: {settings.collector_url}/docs)
  queries    {settings.query_url}/v1/query?sql=...
  kafka      {settings.kafka_bootstrap}

Try (README.md, "Try it", has a curl that posts an event):
  .venv/bin/learnstream query "SELECT event_type, count() FROM events GROUP BY event_type"
Ctrl-C stops everything.
"""


def run(settings: Settings) -> int:
    started_kafka = start_kafka(settings)
    group = ServiceGroup(env={})
    stop_requested = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_requested.set())
    code = 0
    try:
        group.start_all()
        print(banner(settings), flush=True)
        while not stop_requested.wait(0.5):
            for label in group.restart_asked():
                log.warning("%s asked to be restarted; restarted it", label)
            if exited := group.exited():
                log.error("service stopped unexpectedly: %s; stopping the rest", exited)
                code = 1
                break
    finally:
        log.info("stopping services...")
        group.stop_all()
        if started_kafka:
            log.info("stopping Kafka...")
            kafka.stop(kafka_paths(settings))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run")
    kafka_cmd = commands.add_parser("kafka")
    kafka_cmd.add_argument("action", choices=["start", "stop", "fetch"])
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging("devstack", settings.log_level)
    try:
        if args.command == "run":
            return run(settings)
        if args.action == "start":
            start_kafka(settings)
        elif args.action == "stop":
            kafka.stop(kafka_paths(settings))
        else:
            kafka.fetch(kafka_paths(settings))
    except kafka.DevstackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
