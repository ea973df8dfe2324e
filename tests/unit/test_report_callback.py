"""The erni_report callback, through real ansible-playbook runs of tests/playbooks/report_*.yml.

Each test writes its own inventory (two local hosts, planted secrets) and report directory
under tmp_path, runs the playbook with the callback enabled, and reads what it wrote.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, VENV_BIN, run_playbook
from servers import LocalServer, json_route

PLAYBOOKS = ROOT / "tests" / "playbooks"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
RUN_DIR = re.compile(r"^\d{8}T\d{6}Z-production-1\.1\.0$")


def callback_env(report_dir: Path | None) -> dict[str, str]:
    env = {"ANSIBLE_CALLBACKS_ENABLED": "erni_report",
           "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "plugins" / "callback")}
    if report_dir is not None:
        env["ERNI_REPORT_DIR"] = str(report_dir)
    return env


def make_inventory(directory: Path, planted: dict[str, str] | None = None) -> Path:
    """Two local hosts in group production; planted secrets in group, nested and host vars."""
    planted = planted or {}
    inv = directory / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.yml").write_text("production:\n  hosts:\n    web1:\n    web2:\n")
    group_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "deploy_environment": "production",
        "api_key_name": "deploy-bot",
        # secret by its name; only the URL whole and its token are secret, not its host
        "slack_webhook_url": "https://hooks.example.test/services/T0AAA/B0BBB/" + planted.get("url", "url-token-value"),
        # A dictionary key, not a secret: its value must not be masked in the report.
        "compose_rollout_version_key": "version",
        "vault_api_token": "{{ 'vt-' ~ '" + planted.get("group", "group-token-value") + "' }}",
        "app_settings": {"mail": {"smtp_password": planted.get("nested", "nested-password-value")}},
    }
    (inv / "group_vars" / "all" / "vars.yml").write_text(json.dumps(group_vars))
    (inv / "host_vars" / "web1.yml").write_text(json.dumps({"db_password": planted.get("host", "host-pw-value")}))
    return inv


def only_run_dir(report_dir: Path) -> Path:
    runs = [p for p in report_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, sorted(p.name for p in report_dir.iterdir())
    return runs[0]


def load(run_dir: Path) -> tuple[dict[str, Any], str, ET.Element]:
    report = json.loads((run_dir / "report.json").read_text())
    markdown = (run_dir / "report.md").read_text()
    junit = ET.fromstring((run_dir / "junit.xml").read_bytes())  # noqa: S314 - our own file, just written
    return report, markdown, junit


def checks_by_name(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["name"], c["host"]): {**c, "phase": p["name"]} for p in report["phases"] for c in p["checks"]}


@pytest.fixture
def probe_server() -> Iterator[LocalServer]:
    srv = LocalServer(routes={"/health": json_route(200, {"status": "healthy"}),
                              "/api/v1/models": json_route(200, {"models": ["llama3.2:3b"]})})
    yield srv
    srv.close()


def test_a_passing_run_is_reported_phase_by_phase(tmp_path: Path, probe_server: LocalServer) -> None:
    inv = make_inventory(tmp_path)
    reports = tmp_path / "reports"
    confirmations = {"oncall_notified": "Anna Meier, 2026-11-27", "devops_signoff": "Boris Keller, 2026-11-27"}
    run = run_playbook("-i", str(inv), str(PLAYBOOKS / "report_success.yml"), "-e", "release_version=1.1.0",
                       "-e", json.dumps({"probe_url": probe_server.url, "confirmations": confirmations}),
                       env=callback_env(reports))
    assert run.rc == 0, run.output[-3000:]
    run_dir = only_run_dir(reports)
    assert RUN_DIR.match(run_dir.name), run_dir.name
    latest = reports / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()
    assert f"erni_report: evidence in {run_dir}" in run.output

    report, markdown, junit = load(run_dir)
    assert (report["environment"], report["release"], report["previous_release"], report["outcome"]) == \
        ("production", "1.1.0", "1.0.0", "deployed")
    assert report["playbook"] == "tests/playbooks/report_success.yml"
    assert ISO_Z.match(report["started"]) and ISO_Z.match(report["ended"])
    assert report["started"] <= report["ended"] and 0 < report["duration_s"] < run.seconds
    assert report["interrupted"] is None and report["check_mode"] is False

    # Two plays of the same phase make one phase; the rollback play ran no task.
    assert [(p["name"], p["status"]) for p in report["phases"]] == [
        ("Pre-deployment", "passed"), ("Staging", "passed"), ("Rollback", "skipped")]
    assert report["phases"][0]["plays"] == ["Pre-deployment: code quality gate", "Pre-deployment: security"]

    checks = checks_by_name(report)
    for host in ("web1", "web2"):
        coverage = checks[("code coverage", host)]
        assert (coverage["status"], coverage["value"], coverage["limit"], coverage["reason"]) == \
            ("pass", 91.5, 85, None)
        assert coverage["play"] == "code quality gate" and coverage["task"] == "Check: code coverage"
        assert ISO_Z.match(coverage["started"]) and coverage["started"] <= coverage["ended"]
        assert coverage["duration_s"] >= 0
        # A `checks` list: one check per item, the task itself not listed.
        assert checks[("quality gate: lint", host)]["status"] == "pass"
        typing = checks[("quality gate: type checking", host)]
        assert (typing["status"], typing["value"], typing["reason"]) == ("warn", 2, "2 notes in mypy")
        assert checks[("quality gate: audit", host)]["status"] == "pass"  # from ok: true
        assert ("quality gate", host) not in checks
        assert checks[("TLS certificates are valid", host)]["status"] == "skipped"
        assert checks[("endpoints per service: api", host)]["status"] == "pass"
        assert checks[("endpoints per service: webhook", host)]["status"] == "pass"
        assert checks[("the image names its release", host)]["detail"] == "image version is 1.1.0"
    # The real http_probe module's checks, against a real server.
    assert checks[("staging endpoints respond: health", "web1")]["status"] == "pass"
    assert checks[("staging endpoints respond: models", "web1")]["phase"] == "Staging"
    assert [r[1] for r in probe_server.requests].count("/health") == 1

    assert report["backup"] == {"file": "/backups/openwebui-20261127.sql.gz", "sha256": "0" * 64, "verified": True}
    assert report["rollback"]["triggered"] is False
    assert [(r["metric"], r["staging"], r["production"], r["status"]) for r in report["baseline_comparison"]] == [
        ("API Latency (p95)", 1200, 1100, "pass"), ("Error rate", 0.01, 0.012, "pass"), ("CPU Usage", 45, 43, "pass")]
    assert report["confirmations"]["oncall_notified"]["confirmed_by"] == "Anna Meier"
    assert report["confirmations"]["oncall_notified"]["confirmed_at"] == "2026-11-27"
    assert report["confirmations"]["qa_sign_off"] == {
        "what": "QA sign-off", "confirmed_by": "Quinn Adams", "confirmed_at": "2026-11-27T11:00:00Z",
        "source": "task", "host": "web1"}
    assert report["failures"] == []
    assert report["hosts"]["web1"]["failed"] == 0 and report["hosts"]["web1"]["ok"] >= 8
    assert report["hosts"]["web2"]["skipped"] == 2
    assert report["published"]["image"]["name"] == "registry.example/erni-ki:1.1.0"
    # Not a secret by its name: shown as it is.
    assert "image version is" in json.dumps(report) and "********" not in json.dumps(report)

    assert markdown.startswith("# Deployment report: production 1.1.0 — DEPLOYED\n")
    assert "## Pre-deployment — passed" in markdown and "## Rollback — skipped" in markdown
    assert "- [x] code coverage [web1] — 91.5 (limit 85)" in markdown
    assert "- [x] quality gate: type checking [web2] — 2 (limit 0) — WARN: 2 notes in mypy" in markdown
    assert "- [ ] TLS certificates are valid [web1] — skipped" in markdown
    assert "| Metric | Staging | Production | Status |" in markdown
    assert "| API Latency (p95) | 1200ms | 1100ms | PASS |" in markdown
    assert "| Error rate | 1% | 1.2% | PASS |" in markdown
    assert "- [x] QA Engineer: All tests passed: Quinn Adams, 2026-11-27T11:00:00Z" in markdown
    assert "- [x] DevOps Engineer: Infrastructure stable: Boris Keller, 2026-11-27" in markdown
    assert "- [ ] Tech Lead: Code review approved: not signed" in markdown
    assert "- [x] Deployment completed successfully" in markdown
    assert "- [x] Performance baselines met" in markdown
    assert "- [x] oncall_notified: Anna Meier, 2026-11-27" in markdown
    assert "Incident" not in markdown
    assert f"`{run_dir.resolve()}/report.json`" in markdown and f"`{run_dir.resolve()}/junit.xml`" in markdown

    suites = junit.findall("testsuite")
    assert [s.get("name") for s in suites] == ["Pre-deployment", "Staging", "Rollback"]
    pre = suites[0]
    assert int(pre.get("tests") or 0) == len(report["phases"][0]["checks"]) == 18
    assert (pre.get("failures"), pre.get("skipped")) == ("0", "2")
    skipped = [str(c.get("name")) for c in pre.iter("testcase") if c.find("skipped") is not None]
    assert sorted(skipped) == ["TLS certificates are valid [web1]", "TLS certificates are valid [web2]"]
    assert (junit.get("tests"), junit.get("failures"), junit.get("skipped")) == ("22", "0", "4")


def test_a_failed_check_survives_the_rescue_that_rolls_back(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    reports = tmp_path / "reports"
    run = run_playbook("-i", str(inv), str(PLAYBOOKS / "report_failure.yml"), "-e", "release_version=1.1.0",
                       env=callback_env(reports))
    assert run.rc == 2, run.output[-3000:]
    report, markdown, junit = load(only_run_dir(reports))

    assert report["outcome"] == "rolled_back" and report["previous_release"] == "1.0.0"
    # The play after the failed one never started: no phase for it.
    assert [(p["name"], p["status"]) for p in report["phases"]] == [("Production deployment", "failed")]
    checks = checks_by_name(report)
    smoke = checks[("smoke test creates a chat", "web1")]
    assert (smoke["status"], smoke["value"], smoke["limit"], smoke["reason"]) == \
        ("fail", 500, 200, "POST /api/v1/chats answered 500")
    assert checks[("the previous release serves again", "web1")]["status"] == "pass"

    rollback = report["rollback"]
    assert rollback["triggered"] is True and rollback["reason"] == "POST /api/v1/chats answered 500"
    detected = rollback["detected_at"].replace("Z", "+00:00")
    restored = rollback["restored_at"].replace("Z", "+00:00")
    assert detected < restored and 0 < rollback["seconds"] < 30
    assert [(f["task"], f["host"], f["ignored"]) for f in report["failures"]] == [
        ("Check: smoke test creates a chat", "web1", False), ("Stop the deployment", "web1", False)]
    assert report["failures"][1]["message"] == "Rolled back to 1.0.0: POST /api/v1/chats answered 500"
    assert report["hosts"]["web1"]["rescued"] == 1 and report["hosts"]["web1"]["failed"] == 1

    assert markdown.startswith("# Deployment report: production 1.1.0 — ROLLED BACK\n")
    assert ("- [ ] smoke test creates a chat — FAILED: POST /api/v1/chats answered 500 (value 500, limit 200)"
            in markdown)
    assert "## Incident: rollback" in markdown and "(within the 5-minute target)" in markdown
    assert "- Serving again: 1.0.0" in markdown
    assert "- [ ] Deployment completed successfully" in markdown

    (suite,) = junit.findall("testsuite")
    assert suite.get("name") == "Production deployment"
    failed = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    smoke_failure = failed["smoke test creates a chat [web1]"]
    assert smoke_failure is not None and smoke_failure.get("message") == "POST /api/v1/chats answered 500"
    assert failed["the previous release serves again [web1]"] is None
    # The task that stopped the play is no check, but CI must see it.
    stop = failed["task failed: Stop the deployment [web1]"]
    assert stop is not None and "Rolled back to 1.0.0" in (stop.text or "")


def test_a_run_that_stops_half_way_is_aborted_and_still_reported(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    reports = tmp_path / "reports"
    run = run_playbook("-i", str(inv), str(PLAYBOOKS / "report_aborted.yml"), "-e", "release_version=1.1.0",
                       env=callback_env(reports))
    assert run.rc == 2, run.output[-3000:]
    run_dir = only_run_dir(reports)
    report, markdown, junit = load(run_dir)

    assert report["outcome"] == "aborted"
    assert [(p["name"], p["status"]) for p in report["phases"]] == [
        ("Pre-deployment", "failed"), ("Production preparation", "failed"), ("Production deployment", "skipped")]
    checks = checks_by_name(report)
    # ignore_errors does not turn a failed check into a passed one.
    vuln = checks[("no critical vulnerabilities", "web1")]
    assert (vuln["status"], vuln["value"], vuln["limit"]) == ("fail", 3, 0)
    # A failed task whose items show no failure is a failed check of its own.
    assert checks[("performance gate: p95 latency", "web1")]["status"] == "pass"
    assert checks[("performance gate: p95 latency", "web1")]["unit"] == "ms"
    assert checks[("performance gate: error rate", "web1")]["status"] == "inconclusive"
    gate = checks[("performance gate", "web1")]
    assert (gate["status"], gate["reason"]) == ("fail", "verdict inconclusive: no data for error rate")
    # An include named "Check: ...": decided by the tasks it ran, per host.
    assert checks[("the release passed staging", "web1")]["status"] == "pass"
    group = checks[("the release passed staging", "web2")]
    assert group["status"] == "fail"
    assert group["reason"] == "Refuse a release without a staging record: no staging record for 1.1.0"
    failures = {(f["task"], f["host"]): f for f in report["failures"]}
    assert failures[("Check: no critical vulnerabilities", "web2")]["ignored"] is True
    assert failures[("Refuse a release without a staging record", "web2")]["check"] == "the release passed staging"
    pull = failures[("Pull the image", "web1")]
    assert pull["message"] == "pull failed: manifest unknown"  # colour codes removed
    assert pull["check"] is None and pull["phase"] == "Production preparation"

    assert "\x1b" not in (run_dir / "junit.xml").read_text()
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    vuln_failure = cases["no critical vulnerabilities [web1]"].find("failure")
    assert vuln_failure is not None
    assert vuln_failure.get("message") == '3 HIGH vulnerabilities <openssl> & "curl"'
    assert cases["task failed: Pull the image [web1]"].find("failure") is not None
    not_measured = cases["performance gate: error rate [web2]"].find("error")
    assert not_measured is not None and not_measured.get("message") == "inconclusive: no data"
    assert "- [x] performance gate: p95 latency [web1] — 812ms (limit 2000ms)" in markdown
    assert "- [ ] performance gate: error rate [web1] — INCONCLUSIVE: no data" in markdown
    assert "task failed: Refuse a release without a staging record [web2]" not in cases  # it is in its check
    assert "- [ ] no critical vulnerabilities [web1] — FAILED: 3 HIGH vulnerabilities \\<openssl\\>" in markdown
    assert "- Production preparation / Pull the image on web1: pull failed: manifest unknown" in markdown


def test_no_secret_reaches_the_report(tmp_path: Path) -> None:
    planted = {name: f"{name}-{secrets.token_urlsafe(12)}"
               for name in ("group", "nested", "host", "extra", "hidden", "url")}
    inv = make_inventory(tmp_path, planted)
    reports = tmp_path / "reports"
    run = run_playbook("-i", str(inv), str(PLAYBOOKS / "report_secrets.yml"), "-e", "release_version=1.1.0",
                       "-e", f"deploy_token={planted['extra']}", "-e", f"session_cookie={planted['hidden']}",
                       env=callback_env(reports))
    assert run.rc == 0, run.output[-3000:]
    # The playbook really put them into results: the output (which has no redaction) shows them.
    assert planted["extra"] in run.output and planted["group"] in run.output
    run_dir = only_run_dir(reports)
    texts = {name: (run_dir / name).read_text() for name in ("report.json", "report.md", "junit.xml")}
    for name, text in texts.items():
        for kind, value in planted.items():
            assert value not in text, f"{kind} secret in {name}"
            assert value.lower() not in text.lower(), f"{kind} secret (any case) in {name}"
        assert "********" in text, name

    report, _markdown, _junit = load(run_dir)
    checks = checks_by_name(report)
    echo = checks[("a result that echoes secrets", "web1")]
    assert echo["value"] == "db ******** token ********"
    assert echo["limit"] == "smtp=********"
    assert echo["reason"] == "deploy token ******** and bot deploy-bot"  # api_key_name is no secret
    assert checks[("a result that echoes secrets", "web2")]["value"] == "db - token ********"
    # a secret URL is masked whole and by its token, never by its scheme or host
    chat = checks[("a result that names the chat host and a webhook URL", "web1")]
    assert chat["value"] == "see https://hooks.example.test/status; sent to ********"
    assert chat["reason"] == "token ********"
    # pieces of 8 characters or more are masked too: a tail, an upper-cased cut, a split at a quote
    pieces = checks[("a result that shows pieces of a secret", "web1")]
    assert (pieces["value"], pieces["limit"]) == ("tail ********", "********")
    assert pieces["reason"] == "cut by a quote: ********'********"
    assert checks[("a failure that prints a secret", "web2")]["reason"] == "login refused for token ********/********"
    hidden = checks[("a no_log task whose result holds an unnamed secret", "web1")]
    assert (hidden["status"], hidden["reason"], hidden["value"]) == ("fail", "the output was hidden (no_log)", None)
    assert checks[("a no_log loop: item 1", "web1")]["status"] == "pass"
    assert report["backup"]["file"] == "/backups/********.sql.gz"
    assert report["phases"][1]["plays"] == ["Production deployment: confirm with ********"]
    assert report["confirmations"]["db_password_checked_for"]["confirmed_by"] == "Ops ********"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_still_leaves_its_report(tmp_path: Path, signum: signal.Signals) -> None:
    inv = make_inventory(tmp_path)
    reports = tmp_path / "reports"
    marker = tmp_path / "long-step-started"
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", **callback_env(reports)}
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(inv),
                             str(PLAYBOOKS / "report_interrupt.yml"), "-e", "release_version=1.1.0",
                             "-e", f"marker_file={marker}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the playbook never reached its long step"
            time.sleep(0.1)
        time.sleep(1.0)  # let the worker start the sleep
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, output
    run_dir = only_run_dir(reports)
    assert f"erni_report: evidence in {run_dir}" in output
    report, markdown, junit = load(run_dir)
    assert report["outcome"] == "aborted"
    assert report["interrupted"] == signum.name
    checks = checks_by_name(report)
    assert checks[("the first step passed", "web1")]["status"] == "pass"
    never = checks[("a step that never ends", "web1")]
    assert never["status"] == "fail" and never["reason"] == f"interrupted ({signum.name}) before it finished"
    assert [(p["name"], p["status"]) for p in report["phases"]] == [("Production deployment", "failed")]
    assert f"(interrupted: {signum.name})" in markdown
    assert junit.find("testsuite/testcase/failure") is not None


def test_reports_go_next_to_the_playbook_by_default_and_latest_follows(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    playbook = tmp_path / "site" / "deploy.yml"
    playbook.parent.mkdir()
    playbook.write_text(
        '- name: "Post-deployment: compare"\n  hosts: web1\n  gather_facts: false\n  tasks:\n'
        '    - name: "Check: something"\n      ansible.builtin.debug:\n        msg: fine\n')
    # the plugin's own default, without the project's ansible.cfg (which names reports/)
    cfg = tmp_path / "plain.cfg"
    cfg.write_text("[defaults]\n")
    env = {**callback_env(None), "ANSIBLE_CONFIG": str(cfg)}
    first = run_playbook("-i", str(inv), str(playbook), "-e", "release_version=1.1.0", env=env)
    second = run_playbook("-i", str(inv), str(playbook), "-e", "release_version=1.1.0", env=env)
    assert first.rc == 0 and second.rc == 0, second.output[-2000:]
    reports = tmp_path / "site" / "reports"
    runs = sorted((p for p in reports.iterdir() if not p.is_symlink()), key=lambda p: p.stat().st_mtime_ns)
    assert len(runs) == 2 and all(RUN_DIR.match(p.name.removesuffix("-2")) for p in runs)
    assert (reports / "latest").resolve() == runs[1].resolve()
    assert os.readlink(reports / "latest") == runs[1].name  # relative: the tree can be moved
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]  # no temporary link left


def test_ansible_doc_renders_the_plugin() -> None:
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", "callback", "-M", str(ROOT / "plugins" / "callback"),
                           "--json", "erni_report"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)["erni_report"]["doc"]
    assert doc["type"] == "notification"
    option = doc["options"]["report_dir"]
    assert option["env"] == [{"name": "ERNI_REPORT_DIR"}]
    assert option["ini"] == [{"section": "erni_report", "key": "report_dir"}]
