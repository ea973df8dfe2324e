"""deploy_lock: one deploy at a time per target; stale locks of killed runs are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modules_harness import run_module


def take(path: Path, run_id: str, **extra: Any) -> dict[str, Any]:
    return run_module("deploy_lock", {"path": str(path), "run_id": run_id, "owner": f"op-{run_id}",
                                      "controller": socket.gethostname(), "pid": os.getpid(), **extra})


def test_a_free_lock_is_taken_and_names_its_holder(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    res = take(lock, "run-a", purpose="production deployment", ttl=60)
    assert res["changed"] is True and res["recovered"] is None
    held = json.loads(lock.read_text())
    assert held["run_id"] == "run-a" and held["owner"] == "op-run-a" and held["purpose"] == "production deployment"
    assert 59 <= held["expires_t"] - time.time() <= 60
    assert oct(lock.stat().st_mode & 0o777) == "0o640"


def test_a_second_run_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    take(lock, "run-a", purpose="staging")
    res = take(lock, "run-b")
    assert res["failed"] is True
    assert "another deploy holds the lock" in res["msg"] and "op-run-a" in res["msg"] and "run-a" in res["msg"]
    assert json.loads(lock.read_text())["run_id"] == "run-a"


def test_the_same_run_takes_it_again_and_extends_it(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    take(lock, "run-a", ttl=5)
    first = json.loads(lock.read_text())
    res = take(lock, "run-a", ttl=600)
    again = json.loads(lock.read_text())
    assert res["changed"] is False and not res.get("failed")
    assert again["started_at"] == first["started_at"] and again["expires_t"] > first["expires_t"] + 500


def test_an_expired_lock_is_taken_over_and_reported(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    lock.write_text(json.dumps({"run_id": "old", "owner": "someone", "controller": "elsewhere", "pid": 1,
                                "expires_t": time.time() - 1, "expires_at": "2026-01-01T00:00:00Z"}))
    res = take(lock, "run-b")
    assert res["changed"] is True and res["recovered"]["run_id"] == "old"
    assert "expired" in res["recovered"]["stale_because"]
    warned = json.dumps(res["warnings"])
    assert "took over the deploy lock" in warned and "someone" in warned
    assert json.loads(lock.read_text())["run_id"] == "run-b"


def test_a_lock_whose_process_is_gone_on_this_machine_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "deploy.lock"
    lock.write_text(json.dumps({"run_id": "killed", "owner": "x", "controller": socket.gethostname(),
                                "pid": dead.pid, "expires_t": time.time() + 3600}))
    res = take(lock, "run-b")
    assert res["recovered"]["stale_because"] == f"its run (pid {dead.pid} on {socket.gethostname()}) no longer exists"
    assert json.loads(lock.read_text())["run_id"] == "run-b"


def test_a_live_holder_on_another_machine_is_respected_until_expiry(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    lock.write_text(json.dumps({"run_id": "remote", "owner": "awx", "controller": "awx-node-1", "pid": 999999,
                                "expires_t": time.time() + 3600}))
    assert take(lock, "run-b")["failed"] is True


def test_release_removes_only_its_own_lock(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    take(lock, "run-a")
    other = take(lock, "run-b", state="absent")
    assert other["changed"] is False and lock.exists()
    mine = take(lock, "run-a", state="absent")
    assert mine["changed"] is True and not lock.exists()
    assert take(lock, "run-a", state="absent")["changed"] is False


def test_check_mode_changes_nothing(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    res = run_module("deploy_lock", {"path": str(lock), "run_id": "r"}, check_mode=True)
    assert res["changed"] is True and not lock.exists()


def test_bad_input_is_named(tmp_path: Path) -> None:
    assert "ttl must be a positive" in take(tmp_path / "l", "r", ttl=-5)["msg"]
    assert "ttl must be a positive" in take(tmp_path / "l", "r", ttl=float("nan"))["msg"]
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    res = take(blocked / "l", "r")
    assert res["failed"] is True and "cannot make the lock's directory" in res["msg"]


def test_a_missing_directory_is_made(tmp_path: Path) -> None:
    res = take(tmp_path / "deploy" / "production" / "deploy.lock", "r")
    assert res["changed"] is True and (tmp_path / "deploy" / "production" / "deploy.lock").exists()
    assert oct((tmp_path / "deploy" / "production").stat().st_mode & 0o777) == "0o750"


def test_a_garbage_lock_file_is_replaced(tmp_path: Path) -> None:
    lock = tmp_path / "deploy.lock"
    lock.write_text("{half a json")
    res = take(lock, "run-b")
    assert res["recovered"]["stale_because"] == "the lock file is unreadable or not a deploy lock"
    assert json.loads(lock.read_text())["run_id"] == "run-b"


def test_an_infinite_ttl_is_refused(tmp_path: Path) -> None:
    assert "ttl must be a positive" in take(tmp_path / "l", "r", ttl=float("inf"))["msg"]


RACER = """
import json, sys
sys.path.insert(0, {tests!r})
import pytest

from modules_harness import run_module
res = run_module("deploy_lock", {{"path": {path!r}, "run_id": sys.argv[1], "owner": sys.argv[1]}})
print(json.dumps({{"failed": bool(res.get("failed")), "recovered": res.get("recovered")}}))
"""


@pytest.mark.parametrize("stale", [False, True], ids=["free lock", "stale lock"])
def test_of_runs_racing_for_the_lock_exactly_one_gets_it(tmp_path: Path, stale: bool) -> None:
    lock = tmp_path / "deploy.lock"
    if stale:
        lock.write_text(json.dumps({"run_id": "old", "expires_t": time.time() - 1}))
    script = RACER.format(tests=str(Path(__file__).resolve().parent.parent), path=str(lock))
    racers = [subprocess.Popen([sys.executable, "-c", script, f"run-{n}"], stdout=subprocess.PIPE, text=True)
              for n in range(8)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in racers]
    winners = [n for n, r in enumerate(results) if not r["failed"]]
    assert len(winners) == 1, results
    assert json.loads(lock.read_text())["run_id"] == f"run-{winners[0]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.lock"], "temporary files were left"
