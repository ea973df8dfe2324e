"""record_checks: computed values become checks, and a failing one fails the task."""

from __future__ import annotations

from modules_harness import run_module


def test_passing_checks_are_returned_with_a_summary() -> None:
    res = run_module("record_checks", {"checks": [
        {"name": "unit tests", "status": "pass", "value": "17 passed", "limit": "rc 0"},
        {"name": "lint", "status": "warn", "value": 3}]})
    assert not res.get("failed")
    assert res["changed"] is False
    assert res["summary"]["total"] == 2 and res["summary"]["pass"] == 1 and res["summary"]["warn"] == 1
    assert res["checks"][0]["reason"] is None


def test_a_failing_check_fails_the_task_naming_it() -> None:
    res = run_module("record_checks", {"checks": [
        {"name": "lint", "status": "fail", "reason": "E501 line too long"},
        {"name": "types", "status": "pass"}]})
    assert res["failed"] is True
    assert res["msg"] == "lint: E501 line too long"
    assert len(res["checks"]) == 2


def test_fail_on_can_include_warnings_and_rejects_unknown_statuses() -> None:
    res = run_module("record_checks", {"checks": [{"name": "x", "status": "warn"}], "fail_on": ["fail", "warn"]})
    assert res["failed"] is True and res["msg"] == "x: warn"
    res = run_module("record_checks", {"checks": [{"name": "x", "status": "pass"}], "fail_on": ["broken"]})
    assert res["failed"] is True and "unknown statuses ['broken']" in res["msg"]
    res = run_module("record_checks", {"checks": [{"name": "x", "status": "great"}]})
    assert res["failed"] is True and "status" in res["msg"]
