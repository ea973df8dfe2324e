"""Fixtures for tests against the running sandbox (`make test` brings it up first)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import ROOT, SANDBOX_DIR, run_playbook, staging_passed


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


@pytest.fixture
def production(tmp_path: Path) -> Callable[..., tuple[object, dict]]:
    """Deploy a release with playbooks/production_deployment.yml, as if it had passed staging
    (its fault shows only under production traffic); returns the run and its report."""
    records, reports = tmp_path / "records", tmp_path / "reports"

    def deploy(release: str, *extra: str) -> tuple[object, dict]:
        staging_passed(records, release)
        run = run_playbook("playbooks/production_deployment.yml", "-i", "inventories/sandbox",
                           "-e", f"release_version={release}", *extra,
                           env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(reports)})
        return run, json.loads((reports / "latest" / "report.json").read_text())

    return deploy
