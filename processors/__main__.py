"""``python -m processors``: run a Faust worker with settings from the environment."""

from __future__ import annotations

import asyncio
import sys

from learnstream.settings import Settings
from learnstream.topics import ensure_topics
from processors.app import create_app
from schemas.catalog import default_catalog
from schemas.registry import registry_for


def main() -> None:
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    settings.faust_data_dir.mkdir(parents=True, exist_ok=True)  # Faust will not create it
    app = create_app(settings, registry_for(settings.schema_registry_url), default_catalog())
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower(), "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
