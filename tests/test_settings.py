"""Settings handed to child processes come back identical."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from learnstream.settings import Settings


def test_settings_survive_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = Settings(
        data_dir=tmp_path,
        topic_prefix="x.",
        clickhouse_url="http://default:secret@host:8123",
        dedup_window_hours=0.5,
        sample_rate_overrides={"page_view": 0.05, "mouse_movement": 1.0},
    )
    for name, value in original.as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


@pytest.mark.parametrize("spelled", ["prod", "Production", "live", ""])
def test_an_unknown_environment_is_refused_not_run_as_development(
    monkeypatch: pytest.MonkeyPatch, spelled: str
) -> None:
    """ "prod" once ran as development: 100 % sampling, debug events kept."""
    monkeypatch.setenv("LEARNSTREAM_ENVIRONMENT", spelled)
    with pytest.raises(ValidationError, match="development"):
        Settings()
