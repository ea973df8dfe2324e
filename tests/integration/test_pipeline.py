"""The whole checklist on the sandbox: deploy.yml through every phase, and what it refuses.

Asserts on what really happened: the versions nginx answers with in both environments,
the report on disk, the staging record, the chats in PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from helpers import (
    CA_FILE,
    PROD_URL,
    ROOT,
    SANDBOX_DIR,
    auth,
    build_release,
    chats_fingerprint,
    image_digest,
    run_playbook,
    serving_version,
)

pytestmark = pytest.mark.slow
STAGING_URL = "https://127.0.0.1:8444"
PHASES = ["Pre-deployment", "Staging", "Production preparation", "Production deployment", "Post-deployment"]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("records")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


def play(playbook: str, release: str, records: Path, reports: Path, *extra: str):
    return run_playbook(playbook, "-i", "inventories/sandbox", "-e", f"release_version={release}", *extra,
                        env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(reports)})


def latest_report(reports: Path) -> dict:
    return json.loads((reports / "latest" / "report.json").read_text())


def chat_through(url: str, env: str) -> None:
    r = requests.post(url + "/api/v1/chats", json={"title": "kept across deploys", "model": "llama3.2:3b"},
                      headers=auth(env), verify=CA_FILE, timeout=5)
    assert r.status_code == 200, r.text


def test_deploy_runs_every_phase_and_leaves_a_report(records: Path, reports: Path) -> None:
    build_release("2.1.0")
    run = play("deploy.yml", "2.1.0", records, reports)
    assert run.rc == 0, run.output[-6000:]
    assert serving_version() == "2.1.0"
    assert serving_version(STAGING_URL) == "2.1.0"
    record = json.loads((records / "2.1.0" / "staging.json").read_text())
    assert record["passed"] is True
    baseline = (records / "2.1.0" / "staging-baseline.yml").read_text()
    assert "Baselines (Staging):" in baseline and "api_latency_p95:" in baseline
    report = latest_report(reports)
    assert report["outcome"] == "deployed" and report["release"] == "2.1.0"
    names = [p["name"] for p in report["phases"]]
    assert names == PHASES, names
    for phase in report["phases"]:
        assert phase["status"] == "passed", phase
        assert phase["checks"], f"phase {phase['name']} recorded no checks"
    assert report["backup"]["verified"] is True and len(report["backup"]["sha256"]) == 64
    assert Path(report["backup"]["file"]).exists()
    assert any(row["metric"] == "api_latency_p95" for row in report["baseline_comparison"])
    for name in ("report.md", "junit.xml"):
        assert (reports / "latest" / name).stat().st_size > 0


def test_production_refuses_a_release_without_a_passing_staging_record(records: Path, reports: Path) -> None:
    build_release("2.2.0")
    before = serving_version()
    run = play("playbooks/production_deployment.yml", "2.2.0", records, reports)
    assert run.rc != 0
    assert "2.2.0 has no staging record" in run.output
    assert serving_version() == before


def test_a_failing_migration_in_production_restores_the_snapshot_and_keeps_serving(
        records: Path, reports: Path) -> None:
    chat_through(PROD_URL, "production")
    before = chats_fingerprint("production")
    serving = serving_version()
    build_release("2.3.0", "MIGRATION_FAIL=1")
    # as if 2.3.0 had passed staging: the migration breaks only on production's data
    (records / "2.3.0").mkdir(exist_ok=True)
    shutil.copy(records / "2.1.0" / "staging.json", records / "2.3.0" / "staging.json")
    record = json.loads((records / "2.3.0" / "staging.json").read_text())
    record["release"], record["digest"] = "2.3.0", image_digest("2.3.0")
    (records / "2.3.0" / "staging.json").write_text(json.dumps(record))
    run = play("playbooks/production_deployment.yml", "2.3.0", records, reports)
    assert run.rc != 0
    assert "migration" in run.output.lower()
    assert chats_fingerprint("production") == before
    assert serving_version() == serving
    report = latest_report(reports)
    assert report["outcome"] == "aborted"


def test_a_failing_migration_stops_at_staging(records: Path, reports: Path) -> None:
    chat_through(STAGING_URL, "staging")
    before_staging = chats_fingerprint("staging")
    before_prod = chats_fingerprint("production")
    build_release("2.4.0", "MIGRATION_FAIL=1")
    run = play("deploy.yml", "2.4.0", records, reports)
    assert run.rc != 0
    assert chats_fingerprint("staging") == before_staging
    assert chats_fingerprint("production") == before_prod
    assert not (records / "2.4.0" / "staging.json").exists()
    assert serving_version(STAGING_URL) == "2.1.0"


def test_manual_rollback_goes_back_to_the_previous_release(records: Path, reports: Path) -> None:
    before = serving_version()
    build_release("2.5.0")
    # the rollout alone puts 2.5.0 in front of whatever served, which becomes the previous release
    run = run_playbook("tests/playbooks/rollout.yml", "-i", "inventories/sandbox", "-e", "release_version=2.5.0")
    assert run.rc == 0, run.output[-3000:]
    state = json.loads((SANDBOX_DIR / "deploy" / "production" / "state.json").read_text())
    previous = state["previous_release"]
    assert (state["release"], previous) == ("2.5.0", before)
    run = play("playbooks/rollback.yml", state["release"], records, reports, "-e", "rollback_reason=test")
    assert run.rc == 0, run.output[-4000:]
    assert serving_version() == previous
    report = latest_report(reports)
    assert report["outcome"] == "rolled_back" and report["release"] == previous


def test_reports_hold_no_secret(reports: Path) -> None:
    secrets = [(SANDBOX_DIR / "secrets" / f).read_text().strip()
               for f in ("production_db_password", "production_webhook_secret", "production_jwt_secret",
                         "production_admin_token", "registry_password")]
    for path in reports.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for value in secrets:
                assert value not in text, f"a secret appears in {path.relative_to(reports)}"
    assert any(reports.rglob("report.json")), f"no report under {reports} ({ROOT})"
