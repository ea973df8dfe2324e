"""A real phase run the way AWX runs it: ansible-runner with the project in a private data
directory, the sandbox inventory, extra variables from a survey."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import ansible_runner
import pytest

from helpers import ROOT, VENV_BIN, build_release, run_playbook, staging_passed

pytestmark = pytest.mark.slow


def test_production_preparation_runs_through_ansible_runner(tmp_path: Path) -> None:
    build_release("1.1.0")
    # the phase inspects what serves: make sure something does
    rollout = run_playbook("tests/playbooks/rollout.yml", "-i", "inventories/sandbox", "-e", "release_version=1.1.0")
    assert rollout.rc == 0, rollout.output[-3000:]
    staging_passed(tmp_path / "records", "1.1.0")
    pdd = tmp_path / "job"
    project = pdd / "project"
    # AWX checks the project out into the job's private data directory; a copy does the same
    shutil.copytree(ROOT, project, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".venv", ".sandbox", "reports", "__pycache__"))
    reports = tmp_path / "reports"
    runner = ansible_runner.run(
        private_data_dir=str(pdd), playbook="playbooks/production_preparation.yml",
        inventory=str(project / "inventories" / "sandbox"),
        extravars={"release_version": "1.1.0", "confirm_oncall_notified": "Anna Muster, 2026-11-27"},
        envvars={"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
                 "SANDBOX_DIR": str(ROOT / ".sandbox"), "ERNI_RECORDS_DIR": str(tmp_path / "records"),
                 "ERNI_REPORT_DIR": str(reports), "ANSIBLE_NOCOLOR": "1"},
        quiet=True, timeout=300)
    assert runner.status == "successful", runner.stdout.read()[-4000:]
    checks = [e["event_data"]["task"] for e in runner.events
              if e.get("event") == "runner_on_ok" and e["event_data"].get("task", "").startswith("Check: ")]
    assert "Check: the release passed staging" in checks
    assert "Check: TLS certificate valid" in checks
    report = json.loads((reports / "latest" / "report.json").read_text())
    assert report["release"] == "1.1.0" and report["outcome"] == "deployed"
    assert report["confirmations"]["oncall_notified"]
