"""README.md stays true: every setting is documented, and the two commands are there."""

from __future__ import annotations

from learnstream.settings import Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [n for n in Settings.model_fields if f"`LEARNSTREAM_{n.upper()}`" not in README]
    assert missing == []


def test_the_two_commands_are_documented_and_ci_runs_the_test_one() -> None:
    assert "make run" in README and "make test" in README
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
