"""The whole pipeline at -vvv with every sandbox secret and a planted one: no secret value
appears in its output, in the reports and records it writes, in the notifications it sent, or
in the logs of the servers it talked to."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from helpers import ROOT, SANDBOX_DIR, build_release, run_playbook

pytestmark = pytest.mark.slow

PLANTED = "Planted-LiteLLM-Key-7f3a9c2e5b8d1046"
# Secrets of any printable characters, each as a vault variable passed to the service: they must
# reach the container intact, and no piece of 8 characters or more of them may show anywhere.
ODD = {
    "vault_odd_backslash": "Odd-ends-in-backslash-91c4\\",
    "vault_odd_quotes": "Odd-it's-\"quoted\"-5e2a'tail-77d0",
    "vault_odd_dollar": "Odd-$HOME-${PATH}-$$-3b8f",
    "vault_odd_spaces": "Odd spaces # hash = eq 6c1d",
    "vault_odd_unicode": "Odd-ünïcødé-密码-✓-2f9e",
}


def secret_values() -> dict[str, str]:
    """Every secret the sandbox generated (tokens, passwords, keys), by file name."""
    out = {}
    for f in sorted((SANDBOX_DIR / "secrets").iterdir()):
        value = f.read_text().strip()
        if f.name != "rotation.yml" and len(value) >= 8:
            out[f.name] = value
    out["planted"] = PLANTED
    return out


def occurrences(text: str, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value in text]


def pieces(text: str, window: int = 8) -> list[str]:
    """The odd secrets of which some piece of `window` characters shows in `text`."""
    return [name for name, value in ODD.items()
            if any(value[i:i + window] in text for i in range(len(value) - window + 1))]


def secret_environment() -> dict[str, str]:
    """The sandbox's secret environment with the odd secrets added, as an extra variable."""
    env = yaml.safe_load((ROOT / "inventories/sandbox/group_vars/production/vars.yml").read_text())
    return {**env["app_secret_environment"], **{name[6:].upper(): "{{ " + name + " }}" for name in ODD}}


def test_no_secret_reaches_output_reports_notifications_or_logs(tmp_path: Path) -> None:
    build_release("8.5.0")
    records, reports = tmp_path / "records", tmp_path / "reports"
    sink_before = len(requests.get("http://127.0.0.1:9099/messages", timeout=5).json())
    # the servers' logs as they were: only what this run adds is looked at
    log_sizes = {log: log.stat().st_size for log in (SANDBOX_DIR / "logs").glob("*.log")}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run = run_playbook("deploy.yml", "-vvv", "-e", "release_version=8.5.0", "-e", "soak_enabled=false",
                       "-e", f"vault_litellm_api_key={PLANTED}",
                       "-e", json.dumps({**ODD, "app_secret_environment": secret_environment()}),
                       env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(reports)}, timeout=900)
    assert run.rc == 0, run.output[-4000:]
    values = {**secret_values(), **ODD}
    # the planted key really went through the run: it is in the serving colour's 0600 env file
    state = json.loads((SANDBOX_DIR / "deploy" / "production" / "state.json").read_text())
    env_file = SANDBOX_DIR / "deploy" / "production" / state["colour"] / "app.env"
    assert f'LITELLM_API_KEY="{PLANTED}"' in env_file.read_text()
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    # the odd ones reached the service's process exactly
    inspect = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}",
                              f"erni-ki-production-{state['colour']}"], capture_output=True, text=True, check=True)
    env = dict(item.split("=", 1) for item in json.loads(inspect.stdout))
    assert {name: env.get(name[6:].upper()) for name in ODD} == ODD

    found = {"output": occurrences(run.output, values) + pieces(run.output)}
    for where in (reports, records):
        for f in where.rglob("*"):
            if f.is_file() and f.suffix != ".png":
                text = f.read_text(errors="replace")
                hit = occurrences(text, values) + pieces(text)
                if hit:
                    found[str(f)] = hit
    sent = requests.get("http://127.0.0.1:9099/messages", timeout=5).json()[sink_before:]
    assert sent, "the run sent no notification: nothing to check"
    found["notifications"] = occurrences(json.dumps(sent), values)
    for log in (SANDBOX_DIR / "logs").glob("*.log"):
        with open(log, "rb") as fh:
            fh.seek(log_sizes.get(log, 0))
            found[log.name] = occurrences(fh.read().decode(errors="replace"), values)
    containers = subprocess.run(["docker", "ps", "-q", "--filter", "label=erni-deploy.environment"],
                                capture_output=True, text=True, check=True).stdout.split()
    for cid in containers:
        logs = subprocess.run(["docker", "logs", "--since", started, cid], capture_output=True, text=True,
                              check=False)
        found[f"container {cid}"] = occurrences(logs.stdout + logs.stderr, values)
    leaks = {where: names for where, names in found.items() if names}
    assert leaks == {}, leaks
    assert len(run.output) > 100_000, "-vvv output was expected to be long"
