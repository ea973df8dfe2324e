"""Every inventory parses and every playbook passes Ansible's syntax check with each of them."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import ROOT, VENV_BIN

INVENTORIES = ["sandbox", "staging", "prod"]
PLAYBOOKS = ["deploy.yml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "playbooks").glob("*.yml"))]
ENV = {"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{VENV_BIN}:/usr/bin:/bin"}


def ansible(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / tool), *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_inventory_graph(inventory: str) -> None:
    proc = ansible("ansible-inventory", "-i", f"inventories/{inventory}", "--list")
    assert proc.returncode == 0, proc.stderr
    groups = json.loads(proc.stdout)["all"]["children"]
    expected = {"staging"} if inventory == "staging" else {"staging", "production"}
    assert expected <= set(groups), groups
    if inventory == "staging":
        assert "production" not in groups


def test_the_staging_inventory_cannot_read_production_secrets() -> None:
    files = [p for p in (ROOT / "inventories" / "staging").rglob("*") if p.is_file()]
    assert not [p for p in files if "production" in p.parts]


@pytest.mark.parametrize("inventory", INVENTORIES)
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(inventory: str, playbook: str) -> None:
    proc = ansible("ansible-playbook", "--syntax-check", "-i", f"inventories/{inventory}", playbook,
                   "-e", "release_version=1.0.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_phase_playbook_is_in_deploy_yml() -> None:
    text = (ROOT / "deploy.yml").read_text()
    for phase in ("pre_deployment", "staging", "production_preparation", "production_deployment",
                  "post_deployment"):
        assert f"playbooks/{phase}.yml" in text
