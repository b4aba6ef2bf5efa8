"""Settings handed to child processes come back identical; a value a setting cannot take
stops a service at start-up with one line naming the allowed values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from learnstream.settings import Settings
from learnstream.startup import EX_CONFIG, settings_or_exit
from tests.conftest import REPO


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


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("LEARNSTREAM_ENVIRONMENT", "prod", "'development', 'staging' or 'production'"),
        ("LEARNSTREAM_LOG_LEVEL", "verbose", "'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ("LEARNSTREAM_CLIENT_IP", "keep", "'truncate' or 'drop'"),
        ("LEARNSTREAM_TABLE_STORE", "redis://", "'memory://' or 'rocksdb://'"),
    ],
)
def test_an_enumerated_setting_refuses_other_values_naming_the_allowed_ones(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    allowed: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        settings_or_exit("sink")
    assert exited.value.code == EX_CONFIG
    assert capsys.readouterr().err == (
        f"sink: refusing to start: {variable} must be {allowed}, not {value!r}\n"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEARNSTREAM_TOPIC_REPLICATION", "s3cret"),
        ("LEARNSTREAM_WRITE_KEYS", '{"wk_live_s3cret": '),  # not JSON
    ],
)
def test_a_refused_value_that_is_not_enumerated_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    """It may be a secret pasted into the wrong variable: the line names the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        settings_or_exit("collector")
    assert exited.value.code == EX_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("collector: refusing to start: ") and err.count("\n") == 1
    assert variable.removeprefix("LEARNSTREAM_").lower() in err.lower()
    assert "s3cret" not in err


# every entry point we own that reads the settings, started as an operator would
ENTRY_POINTS = [
    ["-m", "sinks"],
    ["-m", "devstack", "kafka", "stop"],
    ["-m", "learnstream.cli", "query", "SELECT 1"],
]


@pytest.mark.parametrize("argv", ENTRY_POINTS, ids=lambda argv: " ".join(argv[1:3]))
def test_a_service_started_with_an_unknown_environment_exits_with_one_line(
    tmp_path: Path, argv: list[str]
) -> None:
    env = {
        **os.environ,
        "LEARNSTREAM_ENVIRONMENT": "prod",
        "LEARNSTREAM_DATA_DIR": str(tmp_path),  # nothing of a real run is touched
        "LEARNSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == EX_CONFIG, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.endswith(
        "refusing to start: LEARNSTREAM_ENVIRONMENT must be "
        "'development', 'staging' or 'production', not 'prod'"
    )
