"""The verification gate and automatic rollback on the production path of the sandbox.

A release is given a passing staging record (as if its fault showed only under production
traffic), then deployed with playbooks/production_deployment.yml: the guarded rollout, the
smoke tests and the soak gate decide.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import CA_FILE, PROD_URL, SANDBOX_DIR, build_release, serving_version
from loadgen import Load

pytestmark = pytest.mark.slow


def test_a_release_failing_30_percent_is_rolled_back_by_itself(production) -> None:
    build_release("6.0.0")
    build_release("6.6.6", "ERROR_RATE=0.3")
    run, _ = production("6.0.0")
    assert run.rc == 0, run.output[-4000:]
    with Load(PROD_URL + "/", rate=20, max_seconds=240, verify=CA_FILE) as load:
        run, report = production("6.6.6")
    assert run.rc != 0
    assert report["outcome"] == "rolled_back"
    assert serving_version() == "6.0.0"
    rb = report["rollback"]
    assert rb["triggered"] is True and rb["detected_at"] and rb["restored_at"]
    assert 0 < rb["seconds"] <= 30, rb
    # what clients saw: errors only in a bounded window, none after the restore
    errors = [s for s in load.samples if s.status >= 500]
    assert errors, "the bad release never served a client: the test proves nothing"
    assert errors[-1].t - errors[0].t <= 30
    assert load.samples[-1].status == 200
    state = json.loads((SANDBOX_DIR / "deploy" / "production" / "state.json").read_text())
    assert state["release"] == "6.0.0"
    md = (Path(report["directory"]) / "report.md").read_text()
    assert "## Incident: rollback" in md


def test_a_release_that_starts_slowly_but_serves_well_is_deployed(production) -> None:
    build_release("6.1.0", "STARTUP_DELAY_S=8")
    run, report = production("6.1.0")
    assert run.rc == 0, run.output[-4000:]
    assert report["outcome"] == "deployed"
    assert serving_version() == "6.1.0"
    assert report["rollback"]["triggered"] is False
