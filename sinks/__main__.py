"""``python -m sinks``: stream events into ClickHouse and serve the query endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn
from aiokafka import AIOKafkaProducer

from learnstream.erasure import ErasureRequest
from learnstream.logs import configure_logging
from learnstream.settings import Settings
from learnstream.startup import settings_or_exit
from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_DERIVED,
    EVENTS_INVALID,
    REQUESTS_ERASURE,
    ensure_topics_or_exit,
)
from schemas.catalog import default_catalog
from schemas.registry import registry_for
from schemas.registry_api import SCHEMA_REGISTRY_PATH, registry_router_for
from sinks.clickhouse import connect, migrate
from sinks.event_sink import EventSink
from sinks.gc_tuning import settle_after_start_up
from sinks.metrics import SinkMetrics, serve_metrics
from sinks.projection_rows import PROJECTION_TABLES, projection_route
from sinks.query_api import create_query_app
from sinks.read_sessions import ReadSessions
from sinks.routes import Route, event_route, invalid_route
from sinks.rows import UuidsAsText
from sinks.writer import ClickHouseWriter

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn sharing the process: our handlers own SIGINT/SIGTERM, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def sink_routes(settings: Settings) -> dict[str, Route]:
    """Every topic the sink stores, and its table."""
    registry = registry_for(settings.schema_registry_url)
    events = event_route(default_catalog(), UuidsAsText(registry))
    routes = {
        settings.topic(EVENTS_CLEAN): events,
        settings.topic(EVENTS_DERIVED): events,
        settings.topic(EVENTS_INVALID): invalid_route(),
    }
    for topic, spec in PROJECTION_TABLES.items():
        routes[settings.topic(topic)] = projection_route(spec, registry)
    return routes


async def serve(settings: Settings) -> None:
    if settings.environment == "production" and not settings.reader_token_secret:
        raise SystemExit(
            "production needs LEARNSTREAM_READER_TOKEN_SECRET: an open read API shows everyone "
            "everything"
        )
    if settings.clickhouse_cluster and not settings.clickhouse_url:
        raise SystemExit(
            "LEARNSTREAM_CLICKHOUSE_CLUSTER needs LEARNSTREAM_CLICKHOUSE_URL: embedded chdb is "
            "one node, not a cluster"
        )
    client = connect(settings)
    migrate(client, settings.clickhouse_database, settings.clickhouse_cluster)
    writer = ClickHouseWriter(client, settings.clickhouse_database)
    routes = sink_routes(settings)
    metrics = SinkMetrics()
    sink = EventSink.create(
        settings.kafka_bootstrap,
        routes,
        settings.topic("learnstream-sink"),
        writer,
        settings.sink_batch_max_rows,
        settings.sink_batch_max_wait_s,
        erasure_topic=settings.topic(REQUESTS_ERASURE),
        observer=metrics,
    )
    metrics_server = serve_metrics(
        settings.query_host, settings.sink_metrics_port, metrics, sink.unready_reason
    )
    sessions = ReadSessions.open(settings)  # after migrate: reads never migrate
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()

    async def request_erasure(request: ErasureRequest) -> None:
        # keyed like the learner's events: the same partition, so the same worker
        await producer.send_and_wait(
            settings.topic(REQUESTS_ERASURE), request.to_json(), key=request.user_id.encode()
        )

    server = _EmbeddedServer(
        uvicorn.Config(
            create_query_app(
                writer,
                sessions,
                settings.reader_token_secret,
                request_erasure,
                unready_reason=sink.unready_reason,
                schema_registry=registry_router_for(
                    settings.topic, settings.schema_registry_url, SCHEMA_REGISTRY_PATH
                ),
            ),
            host=settings.query_host,
            port=settings.query_port,
            log_config=None,
        )
    )

    def shutdown() -> None:
        sink.stop()
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown)
    log.info(
        "sink writing to %s; queries on %s",
        settings.clickhouse_url or settings.chdb_path,
        settings.query_url,
    )
    lag = asyncio.create_task(metrics.track_lag(sink.consumer))  # runs until cancelled
    # what start-up built out of the collector's sight (issue 14: +40-50 % rows/s), and
    # automatic collections rarer (session 8: +30-60 % rows/s)
    settle_after_start_up()
    try:
        async with asyncio.TaskGroup() as group:  # one failing stops the other
            group.create_task(sink.run())
            group.create_task(server.serve())
    finally:
        lag.cancel()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        await producer.stop()
        sessions.close()
        writer.close()


def main() -> None:
    settings = settings_or_exit("sink")
    configure_logging("sink", settings.log_level)
    ensure_topics_or_exit(settings)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
