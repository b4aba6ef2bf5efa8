"""``python -m processors``: run a Faust worker with settings from the environment.

``python -m processors replay`` starts the next generation instead: fresh tables, the
raw log folded again from its earliest record (see processors.generations). Once it has
caught up, set ``LEARNSTREAM_PROCESSORS_GENERATION`` to the generation it names."""

from __future__ import annotations

import asyncio
import sys

from learnstream.logs import bound_repeats
from learnstream.startup import settings_or_exit
from learnstream.topics import ensure_topics_or_exit
from processors.app import create_app
from processors.generations import PreviousGenerationRunning, group_id, handover
from processors.state_tables import changelog_topics
from schemas.catalog import default_catalog
from schemas.registry import registry_for


def _say(line: str) -> None:
    # Faust's worker sets up logging only when it starts, so straight to stderr
    print(f"processors: {line}", file=sys.stderr, flush=True)


def main() -> None:
    settings = settings_or_exit("processors")
    if sys.argv[1:] == ["replay"]:
        generation = settings.processors_generation + 1
        settings = settings.model_copy(update={"processors_generation": generation})
        _say(
            f"replaying the raw log into generation {generation}; once it has caught up, "
            f"run with LEARNSTREAM_PROCESSORS_GENERATION={generation}"
        )
    ensure_topics_or_exit(
        settings, changelog_topics(group_id(settings, settings.processors_generation))
    )
    try:
        emits_from = asyncio.run(handover(settings, settings.processors_generation))
    except PreviousGenerationRunning as exc:
        raise SystemExit(f"processors: {exc}") from None
    _say(f"generation {settings.processors_generation} emits events from offsets {emits_from}")
    settings.faust_data_dir.mkdir(parents=True, exist_ok=True)  # Faust will not create it
    bound_repeats()  # aiokafka inside Faust, while a broker is down
    registry = registry_for(settings.schema_registry_url)
    app = create_app(settings, registry, default_catalog(), emits_from)
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower(), "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
