"""Fault scenarios on the sandbox: every one ends with the chats intact and a known release
serving (DESIGN.md: nothing lost, always a known state)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import (
    ROOT,
    SANDBOX_DIR,
    build_release,
    chat_rows,
    run_playbook,
    serving_version,
    staging_passed,
    start_playbook,
)

pytestmark = pytest.mark.slow

STATE = SANDBOX_DIR / "deploy" / "production" / "state.json"
LOCK = SANDBOX_DIR / "deploy" / "production" / "deploy.lock"


@pytest.fixture
def records(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """A passing staging record for a release; returns the environment pointing runs at it."""
    rec, rep = tmp_path / "records", tmp_path / "reports"

    def passed(release: str) -> dict[str, str]:
        staging_passed(rec, release)
        return {"ERNI_RECORDS_DIR": str(rec), "ERNI_REPORT_DIR": str(rep)}

    return passed


@pytest.fixture
def known_release(records) -> Iterator[str]:
    """Production serves 8.0.0 before the scenario; the chats are the same after it."""
    build_release("8.0.0")
    if serving_version() != "8.0.0":
        run = run_playbook("playbooks/production_deployment.yml", "-e", "release_version=8.0.0",
                           "-e", "soak_enabled=false", env=records("8.0.0"))
        assert run.rc == 0, run.output[-4000:]
    before = chat_rows()
    yield "8.0.0"
    missing = before - chat_rows()
    assert not missing, f"the scenario lost chats or messages: {sorted(missing)[:5]}"
    assert serving_version() in {"8.0.0", "8.1.0", "8.2.0"}, "no known release serves"


def deploy_args(release: str) -> list[str]:
    return ["playbooks/production_deployment.yml", "-e", f"release_version={release}", "-e", "soak_enabled=false"]


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def nginx_config_valid() -> bool:
    cmd = ["nginx", "-t", "-q", "-c", str(SANDBOX_DIR / "nginx" / "nginx.conf"), "-p", str(SANDBOX_DIR / "nginx"),
           "-e", str(SANDBOX_DIR / "logs" / "nginx-error.log")]
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


def upstream_colour_port() -> int:
    text = (SANDBOX_DIR / "nginx" / "upstreams" / "production.conf").read_text()
    ports = re.findall(r"server 127\.0\.0\.1:(\d+);", text)
    assert len(ports) == 1, f"nginx should send production to one colour: {text}"
    return int(ports[0])


def test_a_second_deploy_at_once_is_refused_naming_the_holder(known_release, records, tmp_path: Path) -> None:
    build_release("8.1.0")
    env = records("8.1.0")
    first = start_playbook(*deploy_args("8.1.0"), log=tmp_path / "first.log", env=env)
    try:
        wait_for(LOCK.exists, 120, "the first deploy to take the lock")
        second = run_playbook(*deploy_args("8.1.0"), env=env, timeout=300)
        assert second.rc != 0
        assert "another deploy holds the lock" in second.output
        holder = json.loads(LOCK.read_text())
        assert f"pid {holder['pid']}" in second.output and holder["run_id"] in second.output
        # it stopped before changing anything: no backup, no rollout task ran
        assert "TASK [backup_db" not in second.output and "compose_rollout" not in second.output
    finally:
        assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-4000:]
    assert serving_version() == "8.1.0"
    assert not LOCK.exists(), "the finished deploy left its lock behind"


def test_a_deploy_killed_mid_rollout_is_converged_by_the_next_run(known_release, records, tmp_path: Path) -> None:
    build_release("8.2.0")
    env = records("8.2.0")
    log = tmp_path / "killed.log"
    victim = start_playbook(*deploy_args("8.2.0"), log=log, env=env)
    try:
        wait_for(lambda: "TASK [compose_rollout : Start the colour]" in log.read_text(errors="replace"), 240,
                 "the rollout to start the new colour")
        time.sleep(1.0)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    assert LOCK.exists(), "the killed run should have left its lock"
    assert serving_version() in {"8.0.0", "8.2.0"}
    again = run_playbook(*deploy_args("8.2.0"), env=env, timeout=600)
    assert again.rc == 0, again.output[-4000:]
    assert "took over the deploy lock" in again.output and "no longer exists" in again.output
    report = json.loads((Path(env["ERNI_REPORT_DIR"]) / "latest" / "report.json").read_text())
    assert any("took over the deploy lock" in w for w in map(str, report["warnings"])), report["warnings"]
    assert serving_version() == "8.2.0"
    state = json.loads(STATE.read_text())
    assert state["release"] == "8.2.0"
    ports = {"blue": 18001, "green": 18002}
    assert upstream_colour_port() == ports[state["colour"]]
    assert nginx_config_valid()
    names = subprocess.run(["docker", "ps", "--format", "{{.Names}} {{.Image}}", "--filter",
                            "label=erni-deploy.environment=production"], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout
    serving = [line for line in names.splitlines() if line.endswith(":8.2.0")]
    assert len(serving) == 1, names


# --- parts of the platform failing -------------------------------------------------------------

def stop_part(part: str) -> None:
    """Stop one sandbox server the way a crash would leave it: its process gone."""
    if part == "postgres":
        subprocess.run(["runuser", "-u", "postgres", "--", *pg_ctl(), "-m", "fast", "-w", "stop"],
                       check=True, capture_output=True, timeout=60)
        return
    pid = int((SANDBOX_DIR / "run" / f"{part}.pid").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, f"{part} to stop")


def pg_ctl() -> list[str]:
    binary = next(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return [str(binary), "-D", str(SANDBOX_DIR / "postgres" / "data")]


@pytest.fixture
def restore_sandbox() -> Iterator[None]:
    """Whatever a scenario stops, `sandbox up` (idempotent) starts again afterwards."""
    yield
    up = subprocess.run([str(ROOT / "sandbox" / "bin" / "sandbox"), "up"], capture_output=True, text=True,
                        timeout=300, check=False)
    assert up.returncode == 0, up.stdout + up.stderr


def colour_release(colour: str) -> str | None:
    """The release the production colour's container runs (its label), or None when there is none."""
    proc = subprocess.run(["docker", "inspect", "--format", '{{index .Config.Labels "erni-deploy.release"}}',
                           f"erni-ki-production-{colour}"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def rollout_started(output: str) -> bool:
    return "TASK [compose_rollout : Start the colour]" in output or "TASK [compose_rollout : Switch" in output


def test_an_unreachable_database_stops_the_run_before_any_rollout(known_release, records, restore_sandbox) -> None:
    build_release("8.1.0")
    before = STATE.read_text()
    stop_part("postgres")
    run = run_playbook(*deploy_args("8.1.0"), env=records("8.1.0"), timeout=300)
    assert run.rc != 0
    assert "backup_db" in run.output and "Connection refused" in run.output
    assert not rollout_started(run.output)
    assert STATE.read_text() == before and serving_version() == known_release
    assert not LOCK.exists(), "the failed run left its lock behind"


def test_a_prometheus_that_goes_down_during_verification_never_passes(known_release, records, restore_sandbox,
                                                                     tmp_path: Path) -> None:
    build_release("8.1.0")
    env = records("8.1.0")
    log = tmp_path / "run.log"
    run = start_playbook("playbooks/production_deployment.yml", "-e", "release_version=8.1.0",
                         "-e", "soak_count=3", log=log, env=env)
    wait_for(lambda: "TASK [Smoke tests]" in log.read_text(errors="replace") or run.poll() is not None, 300,
             "the switch and the smoke tests")
    stop_part("prometheus")
    assert run.wait(timeout=300) != 0
    output = log.read_text(errors="replace")
    report = json.loads((Path(env["ERNI_REPORT_DIR"]) / "latest" / "report.json").read_text())
    assert report["outcome"] == "rolled_back", output[-3000:]
    assert "inconclusive" in json.dumps(report["rollback"]) or "Connection refused" in report["rollback"]["reason"]
    assert serving_version() == known_release


def test_a_missing_image_or_a_registry_that_is_down_stops_at_pre_deployment(known_release, restore_sandbox) -> None:
    before = STATE.read_text()
    missing = run_playbook("playbooks/pre_deployment.yml", "--limit", "production", "-e", "release_version=0.0.404",
                           timeout=300)
    assert missing.rc != 0
    assert "Cannot read the CHANGELOG from the release image 127.0.0.1:5000/erni-ki:0.0.404" in missing.output
    assert "manifest unknown" in missing.output
    build_release("8.1.0")
    subprocess.run(["docker", "image", "rm", "-f", "127.0.0.1:5000/erni-ki:8.1.0"], capture_output=True, check=False)
    stop_part("registry")
    down = run_playbook("playbooks/pre_deployment.yml", "--limit", "production", "-e", "release_version=8.1.0",
                        timeout=300)
    assert down.rc != 0
    assert "127.0.0.1:5000" in down.output
    assert STATE.read_text() == before and serving_version() == known_release


def test_a_release_that_crashes_on_start_never_serves(known_release, records) -> None:
    build_release("8.3.0", "CRASH_ON_START=1")
    run = run_playbook(*deploy_args("8.3.0"), env=records("8.3.0"), timeout=300)
    assert run.rc != 0
    assert serving_version() == known_release
    state = json.loads(STATE.read_text())
    assert state["release"] == known_release
    assert not LOCK.exists(), "the failed run left its lock behind"
    # the idle colour now holds the crashed release: the state names no rollback target there
    if state.get("previous_colour"):
        assert colour_release(state["previous_colour"]) == state["previous_release"], state


def test_alertmanager_down_fails_the_alert_routing_check_clearly(restore_sandbox, tmp_path: Path) -> None:
    build_release("8.4.0")
    before = chat_rows("staging")
    stop_part("alertmanager")
    run = run_playbook("playbooks/staging.yml", "-e", "release_version=8.4.0", "-e", "soak_enabled=false",
                       env={"ERNI_RECORDS_DIR": str(tmp_path / "records"), "ERNI_REPORT_DIR": str(tmp_path / "rep")},
                       timeout=600)
    assert run.rc != 0
    assert "Fire a test alert through Alertmanager" in run.output
    assert "127.0.0.1:9093" in run.output
    assert not (tmp_path / "records" / "8.4.0" / "staging.json").exists(), "a failed staging wrote a pass"
    assert not before - chat_rows("staging"), "staging lost chats or messages"
    assert serving_version("https://127.0.0.1:8444") == "8.4.0", "staging should serve the release it deployed"


def test_a_full_backup_directory_stops_the_run_before_rollout_and_says_why(known_release, records,
                                                                          tmp_path: Path) -> None:
    build_release("8.1.0")
    small = tmp_path / "backups"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True, timeout=30)
    try:
        before = STATE.read_text()
        run = run_playbook(*deploy_args("8.1.0"), "-e", f"backup_db_dir={small}", env=records("8.1.0"),
                           timeout=300)
        assert run.rc != 0
        assert "not enough free space in" in run.output and str(small) in run.output
        assert not rollout_started(run.output)
        assert STATE.read_text() == before and serving_version() == known_release
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False, timeout=30)
