"""The env_check filter: the checklist's environment variables, under the platform's names too."""

from __future__ import annotations

import importlib.util

import pytest

from helpers import ROOT

_spec = importlib.util.spec_from_file_location("env_check_filter", ROOT / "plugins" / "filter" / "env_check.py")
assert _spec and _spec.loader
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
env_check = _module.env_check

ALIASES = {"JWT_SECRET": ["WEBUI_SECRET_KEY", "WEBUI_JWT_SECRET_KEY"], "LOG_LEVEL": ["GLOBAL_LOG_LEVEL"]}


def test_the_checklists_names_set_as_themselves() -> None:
    got = env_check({"JWT_SECRET": "x", "LOG_LEVEL": "INFO"}, ["JWT_SECRET", "LOG_LEVEL"], [], ALIASES)
    assert got == {"missing": [], "empty": [], "via": {}, "ok": True, "summary": "all 2 set"}


def test_the_platforms_names_answer_the_checklist_and_are_said() -> None:
    got = env_check({"WEBUI_SECRET_KEY": "x", "GLOBAL_LOG_LEVEL": "INFO"}, ["JWT_SECRET", "LOG_LEVEL"], [], ALIASES)
    assert got["ok"] and got["via"] == {"JWT_SECRET": "WEBUI_SECRET_KEY", "LOG_LEVEL": "GLOBAL_LOG_LEVEL"}
    assert got["summary"] == ("all 2 set; the platform's names: JWT_SECRET as WEBUI_SECRET_KEY, "
                              "LOG_LEVEL as GLOBAL_LOG_LEVEL")


def test_missing_and_empty_are_named_with_the_names_that_would_do() -> None:
    got = env_check({"LOG_LEVEL": "", "SLACK_WEBHOOK_URL": ""}, ["JWT_SECRET", "LOG_LEVEL", "SLACK_WEBHOOK_URL"],
                    ["SLACK_WEBHOOK_URL"], ALIASES)
    assert not got["ok"]
    assert got["missing"] == ["JWT_SECRET (or WEBUI_SECRET_KEY, WEBUI_JWT_SECRET_KEY)"]
    assert got["empty"] == ["LOG_LEVEL"]
    assert got["summary"] == "not set: JWT_SECRET (or WEBUI_SECRET_KEY, WEBUI_JWT_SECRET_KEY); empty: LOG_LEVEL"


def test_an_empty_checklist_name_is_answered_by_a_filled_alias() -> None:
    got = env_check({"LOG_LEVEL": "", "GLOBAL_LOG_LEVEL": "INFO"}, ["LOG_LEVEL"], [], ALIASES)
    assert got["ok"] and got["via"] == {"LOG_LEVEL": "GLOBAL_LOG_LEVEL"}


def test_values_never_reach_the_result() -> None:
    got = env_check({"WEBUI_SECRET_KEY": "s3cret-value-0123456789"}, ["JWT_SECRET"], [], ALIASES)
    assert "s3cret" not in str(got)


def test_an_environment_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a mapping, not list"):
        env_check(["JWT_SECRET=x"], ["JWT_SECRET"])
