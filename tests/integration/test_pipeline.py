"""The whole checklist on the sandbox: deploy.yml through every phase, and what it refuses.

Asserts on what really happened: the versions nginx answers with in both environments,
the report on disk, the staging record, the chats in PostgreSQL.
"""

from __future__ import annotations

import json
import time
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
    db_connect,
    run_playbook,
    serving_version,
)
from loadgen import Writer

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


def chats_by_id(env: str = "production") -> dict[int, str]:
    with db_connect(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, title FROM chats")
        return dict(cur.fetchall())


def assert_nothing_lost(writer: Writer, serving: str | None, env: str = "production") -> None:
    """Every acknowledged write is in the database, under the id it was acknowledged with;
    every other answer was the hold's 503 with Retry-After; a known release serves."""
    assert len(writer.writes) >= 30, f"the writer made only {len(writer.writes)} writes"
    others = [w for w in writer.writes if w.status != 200 and not (w.status == 503 and w.retry_after)]
    assert not others, f"writes answered neither 200 nor 503 with Retry-After: {others[:5]}"
    rows = chats_by_id(env)
    lost = {i: t for i, t in writer.acknowledged.items() if rows.get(i) != t}
    assert not lost, f"{len(lost)} of {len(writer.acknowledged)} acknowledged writes are not in the database: " \
                     f"{sorted(lost.items())[:5]}"
    assert "lost in migration" not in rows.values()
    assert serving_version() == serving
    chat_through(PROD_URL, env)          # the hold is over: writes are answered again


def test_a_migration_failing_only_on_production_data_is_undone_without_losing_a_write(
        records: Path, reports: Path) -> None:
    """The classic production failure, through the whole pipeline: the migration passes on
    staging (a passing record, the same digest) and fails on production after damaging data,
    while users keep writing."""
    chat_through(PROD_URL, "production")
    serving = serving_version()
    digest = build_release("2.3.0", "MIGRATION_FAIL=1", "MIGRATION_FAIL_IN=production")
    with Writer(PROD_URL, auth("production"), f"pipeline-2.3.0-{time.time_ns()}", verify=CA_FILE) as writer:
        run = play("deploy.yml", "2.3.0", records, reports)
    assert run.rc != 0
    record = json.loads((records / "2.3.0" / "staging.json").read_text())
    assert record["passed"] is True and record["digest"] == digest.split("@", 1)[1]
    assert serving_version(STAGING_URL) == "2.3.0"
    assert "2.3.0's migrations failed (Run the release's migrations (database migration): exited with 1: " \
           "migration 9020300_reshape_chats failed" in run.output, run.output[-4000:]
    assert "The snapshot taken just before them was restored" in run.output, run.output[-4000:]
    migration = latest_report(reports)["published"]["migration"]["production"]
    assert migration["held"] and migration["failed"] and migration["undo"]["restored"]
    assert "public.chats" in migration["undo"]["changed_tables"]
    assert 0 < float(migration["hold_seconds"]) < 60
    assert writer.held, "no write was answered 503 with Retry-After during the hold"
    assert writer.acknowledged, "no write was acknowledged"
    assert_nothing_lost(writer, serving)


def test_a_migration_that_fails_inside_its_transaction_restores_nothing_and_loses_no_write(
        production, tmp_path: Path) -> None:
    serving = serving_version()
    build_release("2.3.1", "MIGRATION_FAIL=clean")
    with Writer(PROD_URL, auth("production"), f"clean-2.3.1-{time.time_ns()}", verify=CA_FILE) as writer:
        run, report = production("2.3.1")
    assert run.rc != 0
    assert "the failure undid itself, nothing was restored" in run.output, run.output[-4000:]
    migration = report["published"]["migration"]["production"]
    assert migration["held"] and migration["failed"]
    assert migration["undo"]["restored"] is False and migration["undo"]["changed_tables"] == []
    assert report["outcome"] == "aborted"
    assert_nothing_lost(writer, serving)


def test_a_failing_migration_stops_at_staging(records: Path, reports: Path) -> None:
    chat_through(STAGING_URL, "staging")
    serving_staging = serving_version(STAGING_URL)
    before_staging = chats_fingerprint("staging")
    before_prod = chats_fingerprint("production")
    build_release("2.4.0", "MIGRATION_FAIL=1")
    run = play("deploy.yml", "2.4.0", records, reports)
    assert run.rc != 0
    assert chats_fingerprint("staging") == before_staging
    assert chats_fingerprint("production") == before_prod
    assert not (records / "2.4.0" / "staging.json").exists()
    assert serving_version(STAGING_URL) == serving_staging


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
