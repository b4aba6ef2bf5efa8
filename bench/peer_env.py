"""The bench-only tools (pyproject's ``bench`` extra) in a virtualenv of their own.

quixstreams pins pydantic and pydantic-settings below the versions learnstream runs
on, so installing it into ``.venv`` would change the product's own dependencies.
Instead the extra goes into ``.venv/bench-peer`` (inside ``.venv``, so git ignores it
and ``rm -rf .venv`` removes it), with the same fastavro as the product so the peer
decodes the records with the same code. Only the peer job and py-spy run from there;
the learnstream services keep running from ``.venv``.

``python -m bench.peer_env`` creates or updates it (``make bench`` does this first).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER_VENV = Path(sys.prefix) / "bench-peer"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PY_SPY = PEER_VENV / "bin" / "py-spy"


def requirements() -> list[str]:
    """The ``bench`` extra of pyproject.toml, plus the product's exact fastavro."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra: list[str] = project["optional-dependencies"]["bench"]
    return [*extra, f"fastavro=={importlib.metadata.version('fastavro')}"]


def ready() -> bool:
    if not PEER_PYTHON.exists():
        return False
    probe = [str(PEER_PYTHON), "-c", "import quixstreams, fastavro"]
    return subprocess.run(probe, capture_output=True).returncode == 0 and PY_SPY.exists()


def ensure(quiet: bool = True) -> None:
    """Create the peer virtualenv and install the extra into it (a no-op when current)."""
    if not PEER_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_PYTHON), "-m", "pip", "install", *(["--quiet"] if quiet else [])]
    subprocess.run([*pip, *requirements()], check=True)


if __name__ == "__main__":
    ensure()
    print(f"bench peer environment ready: {PEER_VENV}")
