"""The first real deploys: blue-green with Docker Compose behind nginx, on the sandbox.

One story, in order: 1.0.0 goes out; chats are written; 1.1.0 goes out under steady load
without a failed request and without losing a chat; the same release again changes
nothing; a release that never becomes healthy is refused and never receives traffic.
"""

from __future__ import annotations

import json
import re

import pytest
import requests

from helpers import (
    CA_FILE,
    PROD_URL,
    SANDBOX_DIR,
    auth,
    build_release,
    chats_fingerprint,
    run_playbook,
    serving_version,
)
from loadgen import Load

pytestmark = pytest.mark.slow
STATE_FILE = SANDBOX_DIR / "deploy" / "production" / "state.json"
PORTS = {"blue": 18001, "green": 18002}


def deploy(version: str, *extra: str):
    return run_playbook("tests/playbooks/rollout.yml", "-i", "inventories/sandbox",
                        "-e", f"release_version={version}", *extra)


def state() -> dict:
    return json.loads(STATE_FILE.read_text())


@pytest.fixture(scope="module", autouse=True)
def releases() -> None:
    build_release("1.0.0")
    build_release("1.1.0")
    build_release("7.7.7", "HEALTH_FAIL=1")


def test_deploy_1_0_0_serves_it_through_nginx() -> None:
    run = deploy("1.0.0")
    assert run.rc == 0, run.output[-4000:]
    assert serving_version() == "1.0.0"
    assert state()["release"] == "1.0.0"


def test_chats_can_be_written_through_the_load_balancer() -> None:
    headers = auth()
    for i in range(3):
        r = requests.post(PROD_URL + "/api/v1/chats", json={"title": f"before deploy {i}", "model": "llama3.2:3b"},
                          headers=headers, verify=CA_FILE, timeout=5)
        assert r.status_code == 200, r.text
        m = requests.post(f"{PROD_URL}/api/v1/chats/{r.json()['id']}/messages", json={"content": f"message {i}"},
                          headers=headers, verify=CA_FILE, timeout=5)
        assert m.status_code == 200, m.text
    count, _ = chats_fingerprint()
    assert count >= 3


def test_a_good_release_goes_out_under_load_without_a_failed_request() -> None:
    before = chats_fingerprint()
    old = state()
    with Load(PROD_URL + "/api/version", rate=50, max_seconds=120, verify=CA_FILE) as load:
        run = deploy("1.1.0")
    assert run.rc == 0, run.output[-4000:]
    assert len(load.samples) >= 100, "the load did not run long enough to mean anything"
    assert load.achieved_rate() >= 40
    assert load.failures == [], load.failures[:5]
    versions = [json.loads(s.body)["version"] for s in load.samples]
    assert set(versions) == {"1.0.0", "1.1.0"}
    assert versions[-1] == "1.1.0"
    assert serving_version() == "1.1.0"
    # the old colour stays up for rollback, on its own port
    new = state()
    assert (new["release"], new["previous_release"]) == ("1.1.0", "1.0.0")
    assert new["colour"] != old["colour"] and new["previous_colour"] == old["colour"]
    r = requests.get(f"http://127.0.0.1:{PORTS[old['colour']]}/api/version", timeout=5)
    assert r.json()["version"] == "1.0.0"
    # nothing lost
    assert chats_fingerprint() == before


def test_deploying_the_serving_release_again_changes_nothing() -> None:
    before = STATE_FILE.read_text()
    with Load(PROD_URL + "/api/version", rate=20, max_seconds=120, verify=CA_FILE) as load:
        run = deploy("1.1.0")
    assert run.rc == 0, run.output[-4000:]
    assert run.recap()["changed"] == 0, run.output[-4000:]
    assert STATE_FILE.read_text() == before
    assert serving_version() == "1.1.0"
    # and no downtime: every request during the second run was answered by the same release
    assert len(load.samples) >= 20 and load.failures == [], load.failures[:5]
    assert {json.loads(s.body)["version"] for s in load.samples} == {"1.1.0"}


def test_a_release_that_never_becomes_healthy_is_refused_and_never_serves(nginx_log) -> None:
    before = chats_fingerprint()
    serving = state()
    idle_port = PORTS["green" if serving["colour"] == "blue" else "blue"]
    with Load(PROD_URL + "/api/version", rate=20, max_seconds=180, verify=CA_FILE) as load:
        run = deploy("7.7.7")
    assert run.rc != 0
    assert "7.7.7 did not become ready" in run.output
    assert "1.1.0 on" in run.output and "still" in run.output
    # every request during the attempt was answered by 1.1.0
    assert load.failures == []
    assert {json.loads(s.body)["version"] for s in load.samples} == {"1.1.0"}
    # nginx never sent a request to the idle colour's port
    upstreams = {m.group(1) for line in nginx_log() if (m := re.search(r"upstream=(\S+)", line))}
    assert f"127.0.0.1:{idle_port}" not in upstreams, upstreams
    assert serving_version() == "1.1.0"
    # what serves is recorded as before; the release that was on the idle colour is gone from
    # there, so the state no longer names it as the way back
    after = state()
    kept = ("release", "colour", "image")
    assert {k: after[k] for k in kept} == {k: serving[k] for k in kept}
    if serving.get("previous_colour") == ("green" if serving["colour"] == "blue" else "blue"):
        assert after["previous_release"] is None and after["previous_colour"] is None, after
    else:
        assert after == serving
    # the failed colour was removed, the serving one kept
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{idle_port}/health", timeout=2)
    assert chats_fingerprint() == before
