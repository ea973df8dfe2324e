"""--check --diff on the sandbox: the whole pipeline previews a release and changes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import SANDBOX_DIR, build_release, run_playbook, serving_version

pytestmark = pytest.mark.slow


def snapshot() -> dict[str, object]:
    """Everything a deploy would change: state files, nginx upstreams, containers, backups, records."""
    def files(pattern: str) -> dict[str, str]:
        return {str(p): p.read_text() for p in sorted(SANDBOX_DIR.glob(pattern)) if p.is_file()}
    containers = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}} {{.Image}} {{.ID}}"],
                                capture_output=True, text=True, check=True).stdout
    return {"state": files("deploy/*/state.json"), "upstreams": files("nginx/upstreams/*.conf"),
            "containers": sorted(containers.splitlines()),
            "backups": sorted(str(p) for p in (SANDBOX_DIR / "backups").rglob("*")),
            "locks": sorted(str(p) for p in SANDBOX_DIR.glob("deploy/*/deploy.lock"))}


def test_check_diff_previews_the_whole_pipeline_and_changes_nothing(tmp_path: Path) -> None:
    build_release("8.6.0")
    before, serving = snapshot(), serving_version()
    run = run_playbook("deploy.yml", "--check", "--diff", "-e", "release_version=8.6.0", "-e", "soak_enabled=false",
                       env={"ERNI_RECORDS_DIR": str(tmp_path / "records"), "ERNI_REPORT_DIR": str(tmp_path / "rep")},
                       timeout=900)
    assert run.rc == 0, run.output[-5000:]
    assert snapshot() == before and serving_version() == serving
    assert not (tmp_path / "records" / "8.6.0" / "staging.json").exists()
    # it shows what it would do: the upstream switch and the compose files, as diffs
    assert "--- before" in run.output and "+++ after" in run.output
    assert "127.0.0.1:5000/erni-ki:8.6.0" in run.output
    assert "DRY RUN: 8.6.0 has no staging record" in run.output
    # the canary steps are previewed with the weight the switch would set, and nothing is judged
    assert "dry run: the switch would give 8.6.0 10% of traffic, then 100%" in run.output
    assert "weight=100;" in run.output and "weight=900;" in run.output
    report = json.loads((tmp_path / "rep" / "latest" / "report.json").read_text())
    assert report["check_mode"] is True and report["outcome"] == "dry_run"
