"""deploy_state: the record of what serves is read checked; a damaged one is named with its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules_harness import run_module

GOOD = {"release": "1.1.0", "colour": "green", "image": "r/erni-ki:1.1.0", "digest": "sha256:ab",
        "previous_release": "1.0.0", "previous_colour": "blue", "updated": "2026-12-01T00:00:00Z"}


def test_a_good_file_is_returned_as_written(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(GOOD))
    res = run_module("deploy_state", {"path": str(path)}, check_mode=True)
    assert res.get("failed") is not True and res["changed"] is False
    assert res["exists"] is True and res["state"] == GOOD


def test_a_missing_file_is_the_first_deploy_unless_required(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    res = run_module("deploy_state", {"path": str(path)})
    assert res.get("failed") is not True and res["exists"] is False and res["state"] == {}
    res = run_module("deploy_state", {"path": str(path), "required": True})
    assert res["failed"] is True and str(path) in res["msg"] and "does not exist" in res["msg"]


@pytest.mark.parametrize(("text", "expected"), [
    (json.dumps(GOOD)[:25], "is not valid JSON (Unterminated string"),
    ("", "is not valid JSON (Expecting value"),
    ("[1, 2]", "holds a JSON list, not an object"),
    (json.dumps({**GOOD, "colour": 3}), "colour=3 is not a string"),
    (json.dumps({**GOOD, "previous_release": ["1.0.0"]}), "previous_release=['1.0.0'] is not a string or null"),
], ids=["truncated", "empty", "a list", "colour a number", "previous release a list"])
def test_a_damaged_file_is_named_with_what_to_do(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    res = run_module("deploy_state", {"path": str(path)})
    assert res["failed"] is True
    assert res["msg"].startswith(f"the deploy state file {path} ")
    assert expected in res["msg"], res["msg"]
    assert "write the file again" in res["msg"] and "move it aside" in res["msg"]
    assert path.read_text() == text                    # read-only, even when it is wrong


SERVERS = {"blue": "127.0.0.1:18001", "green": "127.0.0.1:18002"}


def upstream_check(tmp_path: Path, upstream: str | None, state: dict | None = None) -> dict:
    (tmp_path / "state.json").write_text(json.dumps(state or GOOD))
    conf = tmp_path / "upstream.conf"
    if upstream is not None:
        conf.write_text(upstream)
    return run_module("deploy_state", {"path": str(tmp_path / "state.json"), "upstream_file": str(conf),
                                       "upstream_name": "erni_production", "upstream_servers": SERVERS})


def test_an_upstream_that_sends_traffic_where_the_state_says_passes(tmp_path: Path) -> None:
    res = upstream_check(tmp_path, "# managed\nupstream erni_production {\n    server 127.0.0.1:18002;\n"
                                   "    keepalive 16;\n}\n")
    assert res.get("failed") is not True, res.get("msg")
    assert res["upstream_servers"] == ["127.0.0.1:18002"]


@pytest.mark.parametrize(("upstream", "expected"), [
    ("upstream erni_production {\n    server 127.0.0.1:19999;\n}\n",
     "sends traffic to 127.0.0.1:19999, while"),
    ("upstream erni_production {\n    server 127.0.0.1:18002 weight=100;\n    server 127.0.0.1:18001 weight=900;\n}",
     "sends traffic to 127.0.0.1:18002, 127.0.0.1:18001, while"),
    ("# server 127.0.0.1:18002;\nupstream erni_staging {\n    server 127.0.0.1:18002;\n}\n",
     "has no upstream 'erni_production' block"),
    (None, "cannot be read"),
], ids=["a dead port", "a canary left half-way", "another upstream", "no file"])
def test_an_upstream_that_disagrees_with_the_state_is_refused_with_both_sides(
        tmp_path: Path, upstream: str | None, expected: str) -> None:
    res = upstream_check(tmp_path, upstream)
    assert res["failed"] is True and expected in res["msg"], res["msg"]
    assert "1.1.0 serves on green (127.0.0.1:18002)" in res["msg"]
    assert str(tmp_path / "state.json") in res["msg"]


def test_the_upstream_is_not_checked_before_the_first_deploy(tmp_path: Path) -> None:
    res = run_module("deploy_state", {"path": str(tmp_path / "state.json"), "upstream_file": str(tmp_path / "none"),
                                      "upstream_name": "erni_production", "upstream_servers": SERVERS})
    assert res.get("failed") is not True and res["exists"] is False and "upstream_servers" not in res
