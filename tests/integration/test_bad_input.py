"""Bad input is refused before anything changes, with the variable named (production path on
the sandbox): nothing is backed up, nothing is pulled or started, the state file is untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import ROOT, SANDBOX_DIR, PlaybookRun, build_release, run_playbook, serving_version, staging_passed

pytestmark = pytest.mark.slow

STATE = SANDBOX_DIR / "deploy" / "production" / "state.json"


def deploy(tmp_path: Path, release: str, *extra: str, inventory: str = "inventories/sandbox",
           baseline: str | None = None) -> PlaybookRun:
    records = tmp_path / "records"
    staging_passed(records, release)
    if baseline is not None:
        (records / release / "staging-baseline.yml").write_text(baseline)
    return run_playbook("playbooks/production_deployment.yml", "-i", inventory, "-e", f"release_version={release}",
                        *extra, env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(tmp_path / "reports"),
                                     "SANDBOX_DIR": str(SANDBOX_DIR)}, timeout=300)


@pytest.fixture
def unchanged() -> object:
    """The state file and what serves are the same after the refused run."""
    before = STATE.read_text() if STATE.exists() else None
    serving = serving_version()
    yield
    assert (STATE.read_text() if STATE.exists() else None) == before
    assert serving_version() == serving


def refused_early(run: PlaybookRun, *expected: str) -> None:
    assert run.rc != 0
    for text in expected:
        assert text in run.output, run.output[-3000:]
    for later in ("TASK [backup_db", "TASK [compose_rollout", "TASK [notify"):
        assert later not in run.output, f"{later} ran before the bad input was refused"


@pytest.mark.parametrize(("extra", "expected"), [
    (["-e", "deploy_target=canary"], ["deploy_target is canary, not compose or kubernetes"]),
    (["-e", "public_url=ftp//wrong"], ["public_url is not an http(s) URL"]),
    (["-e", "prometheus_url=127.0.0.1:9090"], ["prometheus_url is not an http(s) URL"]),
    (["-e", "soak_interval=nan"], ["Bad soak settings", "soak_interval=nan"]),
    (["-e", "soak_failure_limit=-1"], ["soak_failure_limit=-1"]),
    (["-e", json.dumps({"monitor_metrics": [{"name": "error_rate", "query": "up", "limit": -0.05}]})],
     ["metric 'error_rate': limit=-0.05 must not be negative"]),
    (["-e", json.dumps({"monitor_metrics": [{"name": "p95", "query": "up", "limit": 5, "tolerance": "NaN"}]})],
     ["metric 'p95': tolerance=nan is not a finite number"]),
    (["-e", json.dumps({"canary_steps": [50, 10, 100]})],
     ["canary_steps[1]=10 is not larger than the step before it (50)"]),
    (["-e", json.dumps({"canary_steps": [10, 50]})], ["canary_steps must end in 100"]),
    (["-e", json.dumps({"canary_steps": [0, 100]})], ["canary_steps[0]=0 is outside (0, 100]"]),
    (["-e", "canary_step_max_seconds=1"], ["max_seconds=1 must be at least step_seconds"]),
], ids=["unknown target", "malformed public URL", "URL without scheme", "NaN interval", "negative limit count",
        "negative metric limit", "NaN tolerance", "canary steps not increasing", "canary steps not ending in 100",
        "canary step of 0", "canary step limit below its length"])
def test_bad_settings_are_refused_naming_the_variable(tmp_path: Path, unchanged, extra, expected) -> None:
    build_release("8.0.0")
    refused_early(deploy(tmp_path, "8.0.0", *extra), *expected)


def test_a_missing_vault_variable_is_named(tmp_path: Path, unchanged) -> None:
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "sandbox", inventory)
    vault = inventory / "group_vars" / "production" / "vault.yml"
    vault.write_text("".join(line for line in vault.read_text().splitlines(keepends=True)
                             if not line.startswith("vault_jwt_secret:")))
    refused_early(deploy(tmp_path, "8.0.0", inventory=str(inventory)), "Missing secret variables: jwt_secret")


@pytest.mark.parametrize(("baseline", "expected"), [
    ("Baselines (Staging):\n  api_latency_p95: fast\n", "api_latency_p95: 'fast' is not a number"),
    ("Baselines (Staging): [unclosed\n", "is not valid YAML"),
    ("- just\n- a list\n", "must map metric names to values"),
], ids=["not a number", "not YAML", "not a mapping"])
def test_a_malformed_baseline_file_is_refused(tmp_path: Path, unchanged, baseline, expected) -> None:
    refused_early(deploy(tmp_path, "8.0.0", baseline=baseline), "staging-baseline.yml", expected)


def test_a_release_not_in_the_registry_changes_nothing(tmp_path: Path, unchanged) -> None:
    run = deploy(tmp_path, "0.0.405")
    assert run.rc != 0
    assert "127.0.0.1:5000/erni-ki:0.0.405" in run.output
    assert "TASK [compose_rollout : Start the colour]" not in run.output


@pytest.mark.parametrize("name", ["../../etc", "1.1.0;touch x", "1" * 300, "1.1", "1.1.0 "],
                         ids=["path", "command", "300 characters", "not semver", "trailing space"])
def test_a_bad_release_name_is_refused_by_the_first_task(tmp_path: Path, unchanged, name) -> None:
    """The whole pipeline, from its first play: the name never reaches the registry, a path or a
    command (no CHANGELOG read, no record looked up, no quality command started)."""
    run = run_playbook("deploy.yml", "-i", "inventories/sandbox", "-e", json.dumps({"release_version": name}),
                       env={"ERNI_RECORDS_DIR": str(tmp_path / "records"), "ERNI_REPORT_DIR": str(tmp_path / "reports"),
                            "SANDBOX_DIR": str(SANDBOX_DIR)}, timeout=120)
    assert run.rc != 0
    assert "is not a release name: it must match release_version_pattern" in run.output, run.output[-3000:]
    assert f"({len(name)} characters)" in run.output
    tasks = [line for line in run.output.splitlines() if line.startswith("TASK [")]
    assert len(tasks) <= 2 and "release" in tasks[-1], tasks   # an include and the check itself
    assert "invalid reference format" not in run.output
    assert not (ROOT / "x").exists() and not (tmp_path / "records").exists()


def test_a_damaged_state_file_is_named_before_anything_changes(tmp_path: Path) -> None:
    build_release("8.0.0")
    if not STATE.exists():
        assert deploy(tmp_path, "8.0.0").rc == 0
    good, serving = STATE.read_text(), serving_version()
    try:
        STATE.write_text(good[: len(good) // 2])              # a write cut short (a full disk)
        run = deploy(tmp_path, "8.0.0")
    finally:
        STATE.write_text(good)
    refused_early(run, f"the deploy state file {STATE} is not valid JSON", "write the file again", "move it aside")
    assert serving_version() == serving


def test_a_tag_pushed_again_after_staging_is_refused_naming_both_digests(tmp_path: Path, unchanged) -> None:
    """Staging tested one image; the tag now names another (pushed again, as the per-phase AWX
    templates allow between the two phases): production refuses it and nothing that serves changes."""
    tested = build_release("8.7.0")
    records = tmp_path / "records"
    staging_passed(records, "8.7.0", digest=tested.split("@")[-1])
    pushed_again = build_release("8.7.0", "EXTRA_LATENCY_MS=1")
    assert pushed_again != tested
    run = run_playbook("playbooks/production_deployment.yml", "-i", "inventories/sandbox",
                       "-e", "release_version=8.7.0", timeout=300,
                       env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(tmp_path / "reports")})
    assert run.rc != 0
    assert "the tag was pushed again after staging passed" in run.output, run.output[-3000:]
    assert tested.split("@")[-1] in run.output and pushed_again.split("@")[-1] in run.output
    assert "TASK [compose_rollout : Create the colour's directory]" not in run.output
    assert "TASK [compose_rollout : Run the release's migrations" not in run.output


def test_an_upstream_that_disagrees_with_the_state_file_is_refused_showing_both(tmp_path: Path) -> None:
    """An upstream edited by hand to a dead port: the deploy says so before the backup, the
    pull or any container, and changes nothing; the operator decides which side is right."""
    build_release("8.0.0")
    if not STATE.exists():
        assert deploy(tmp_path, "8.0.0").rc == 0
    upstream = SANDBOX_DIR / "nginx" / "upstreams" / "production.conf"
    good, state = upstream.read_text(), STATE.read_text()
    recorded = json.loads(state)
    try:
        upstream.write_text(good.replace(f"127.0.0.1:{18001 if recorded['colour'] == 'blue' else 18002}",
                                         "127.0.0.1:19999"))
        run = deploy(tmp_path, "8.0.0")
        assert upstream.read_text() != good       # not repaired behind the operator's back
    finally:
        upstream.write_text(good)
    assert run.rc != 0
    for text in ("the load balancer and the deploy state disagree", "sends traffic to 127.0.0.1:19999",
                 f"says {recorded['release']} serves on {recorded['colour']}"):
        assert text in run.output, run.output[-3000:]
    for later in ("TASK [backup_db", "TASK [compose_rollout : Pull", "TASK [notify"):
        assert later not in run.output, f"{later} ran before the upstream was refused"
    assert STATE.read_text() == state
