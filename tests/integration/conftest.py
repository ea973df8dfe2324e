"""Fixtures for tests against the running sandbox (`make test` brings it up first)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import ROOT, SANDBOX_DIR


@pytest.fixture(scope="session", autouse=True)
def sandbox_up() -> None:
    proc = subprocess.run([str(ROOT / "sandbox/bin/sandbox"), "status"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.exit(f"the sandbox is not up (run `make sandbox`):\n{proc.stdout}{proc.stderr}", returncode=3)


@pytest.fixture
def nginx_log() -> Iterator[Callable[[], list[str]]]:
    """Lines that nginx logs from now on."""
    path = Path(SANDBOX_DIR / "logs" / "nginx-access.log")
    start = path.stat().st_size if path.exists() else 0

    def lines() -> list[str]:
        with path.open() as fh:
            fh.seek(start)
            return fh.read().splitlines()

    yield lines
