"""``python -m devstack``: the local real stack.

run            Kafka + collector + processors + sink in the foreground; Ctrl-C stops all
kafka start    start (or reuse) the local broker and provision topics
kafka stop     stop the local broker

LEARNSTREAM_DEVSTACK_BROKERS=3 makes "the local broker" a three-broker KRaft cluster
(devstack.cluster) on ports kafka_port..kafka_port+5, topics replicated 3 ways.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time

from devstack import kafka
from devstack.cluster import KafkaCluster
from devstack.services import EX_TEMPFAIL, RestartBudget, ServiceGroup
from learnstream.logs import configure_logging
from learnstream.settings import Settings
from learnstream.startup import settings_or_exit
from learnstream.topics import ensure_topics

log = logging.getLogger("devstack")


def kafka_paths(settings: Settings) -> kafka.KafkaPaths:
    # absolute: Maven resolves relative paths against the pom's folder, not ours
    return kafka.KafkaPaths(
        home=settings.devstack_home.resolve(), data=(settings.data_dir / "kafka").resolve()
    )


def kafka_cluster(settings: Settings) -> KafkaCluster:
    return KafkaCluster.from_base_port(
        settings.devstack_home.resolve(),
        (settings.data_dir / "kafka-cluster").resolve(),
        settings.kafka_port,
    )


def stack_settings(settings: Settings) -> Settings:
    """The settings the services run with: with three brokers, a bootstrap naming all
    three (any one may be down) and topics replicated 3 ways unless set otherwise."""
    if settings.devstack_brokers == 1:
        return settings
    cluster = kafka_cluster(settings)
    update: dict[str, object] = {"kafka_bootstrap": cluster.bootstrap}
    if "topic_replication" not in settings.model_fields_set:
        update["topic_replication"] = cluster.replication
    return settings.model_copy(update=update)


def start_kafka(settings: Settings) -> bool:
    """Start (or reuse) the broker or cluster and provision topics; True if started now."""
    if settings.devstack_brokers == 1:
        port = settings.kafka_port
        _, started = kafka.start(kafka_paths(settings), port, port + 1)
    else:
        started = kafka_cluster(settings).start()
    asyncio.run(ensure_topics(stack_settings(settings)))
    return started


def stop_kafka(settings: Settings) -> None:
    if settings.devstack_brokers == 1:
        kafka.stop(kafka_paths(settings))
    else:
        kafka_cluster(settings).stop()


def service_env(settings: Settings) -> dict[str, str]:
    """What the services need beyond the environment they inherit: where the cluster is."""
    if settings.devstack_brokers == 1:
        return {}
    stack = stack_settings(settings)
    return {
        "LEARNSTREAM_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "LEARNSTREAM_TOPIC_REPLICATION": str(stack.topic_replication),
    }


def banner(settings: Settings) -> str:
    return f"""
learnstream is up.
  collector  {settings.collector_url}/v1/events   (OpenAPI: {settings.collector_url}/docs)
  queries    {settings.query_url}/v1/query?sql=...
  kafka      {stack_settings(settings).kafka_bootstrap}

Try (README.md, "Try it", has a curl that posts an event):
  .venv/bin/learnstream query "SELECT event_type, count() FROM events GROUP BY event_type"
Ctrl-C stops everything.
"""


def _how(code: int) -> str:
    if code == EX_TEMPFAIL:
        return "asked to be restarted (75)"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def supervise(group: ServiceGroup, budget: RestartBudget, stop: threading.Event) -> int:
    """Restart every service that stops, however it stopped, while Kafka stays up; 1 once
    a service spent its restart budget, 0 when asked to stop."""
    waiting: dict[str, float] = {}  # label -> when it starts again
    while not stop.wait(0.5):
        now = time.monotonic()
        for label, code in group.exited().items():
            if label in waiting:
                continue
            when = budget.next_start(label, now)
            if when is None:
                log.error(
                    "%s %s and was restarted %d times in %.0f s: not restarting it again; "
                    "stopping the rest",
                    label,
                    _how(code),
                    budget.used(label, now),
                    budget.window_s,
                )
                return 1
            waiting[label] = when
            log.warning(
                "%s %s; restarting it in %.1f s (restart %d of at most %d in %.0f s)",
                label,
                _how(code),
                when - now,
                budget.used(label, now),
                budget.max_restarts,
                budget.window_s,
            )
        for label, when in list(waiting.items()):
            if now >= when:
                group.restart(label)
                del waiting[label]
    return 0


def run(settings: Settings) -> int:
    started_kafka = start_kafka(settings)
    # one collector process per core, as in production (the tests start one)
    env = {"LEARNSTREAM_COLLECTOR_WORKERS": os.environ.get("LEARNSTREAM_COLLECTOR_WORKERS", "auto")}
    group = ServiceGroup(env={**env, **service_env(settings)})
    stop_requested = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_requested.set())
    code = 0
    try:
        group.start_all()
        print(banner(settings), flush=True)
        code = supervise(group, RestartBudget(), stop_requested)
    finally:
        log.info("stopping services...")
        group.stop_all()
        if started_kafka:
            log.info("stopping Kafka...")
            stop_kafka(settings)
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
    settings = settings_or_exit("devstack")
    configure_logging("devstack", settings.log_level)
    try:
        if args.command == "run":
            return run(settings)
        if args.action == "start":
            start_kafka(settings)
        elif args.action == "stop":
            stop_kafka(settings)
        else:
            kafka.fetch(kafka_paths(settings))
    except kafka.DevstackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
