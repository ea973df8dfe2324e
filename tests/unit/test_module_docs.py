"""Every module documents itself: ansible-doc renders it, and its documentation parses."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from helpers import ROOT, VENV_BIN
from modules_harness import load_module

MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py"))


def test_the_project_has_its_modules() -> None:
    assert {"http_probe", "prometheus_query", "prometheus_gate"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders(name: str) -> None:
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-M", str(ROOT / "plugins" / "modules"), name],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "OPTIONS" in proc.stdout and "RETURN VALUES" in proc.stdout
    assert "[WARNING]" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", MODULES)
def test_documentation_examples_and_return_are_yaml(name: str) -> None:
    mod = load_module(name)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert doc["module"] == name
    assert doc["short_description"] and doc["options"]
    for opt, spec in doc["options"].items():
        assert "type" in spec, f"{name}: option {opt} has no type"
        assert spec.get("description"), f"{name}: option {opt} has no description"
    assert isinstance(yaml.safe_load(mod.EXAMPLES), list)
    assert isinstance(yaml.safe_load(mod.RETURN), dict)
