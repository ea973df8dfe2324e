"""Run one of our modules in-process, as Ansible's own module tests do.

Arguments go in through ansible.module_utils.testing.patch_module_args (ansible-core's
supported way); the module's JSON answer is read from stdout. Nothing in the module is
patched: it talks to real servers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from typing import Any

import ansible.module_utils
from ansible.module_utils.testing import patch_module_args

from helpers import ROOT

_UTILS = str(ROOT / "plugins" / "module_utils")
if _UTILS not in ansible.module_utils.__path__:
    # Ansible ships playbook-adjacent module_utils inside the module's payload; in-process,
    # the package path has to include them.
    ansible.module_utils.__path__.append(_UTILS)


def load_module(name: str):
    path = ROOT / "plugins" / "modules" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"erni_modules.{name}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_module(name: str, args: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """The module's result; result['failed'] is True when it called fail_json."""
    mod = load_module(name)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            mod.main()
        except SystemExit:
            pass
    text = out.getvalue()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        sys.stderr.write(text)
        raise
