"""The Kubernetes target: playbooks/production_deployment.yml with deploy_target=kubernetes,
against the Kubernetes API double (tests/k8sapi.py) through the real kubernetes client and the
real kubernetes.core modules. The double's front door forwards to the reference application
running as real processes, one per release, so the smoke tests are the Compose path's own.
The sandbox provides PostgreSQL (the pre-rollout backup, the chats) and the notification sink.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers import PlaybookRun, chats_fingerprint, run_playbook, secret, staging_passed
from k8sapi import KubeAPIDouble
from refapp import app

pytestmark = pytest.mark.slow

GOOD, NEXT, SLOW, BAD = "9.1.0", "9.2.0", "9.3.0", "9.9.9"
NODE = "node-2"


@pytest.fixture(scope="module")
def double() -> Iterator[KubeAPIDouble]:
    """The double, with a real application process behind each good release's image."""
    env = {"ALERTMANAGER_WEBHOOK_SECRET": secret("production_webhook_secret"),
           "JWT_SECRET": secret("production_jwt_secret"), "OPENWEBUI_DB_HOST": "127.0.0.1",
           "OPENWEBUI_DB_PORT": "5432", "POSTGRES_USER": "openwebui_user",
           "POSTGRES_PASSWORD": secret("production_db_password"), "OPENWEBUI_DB_NAME": "openwebui"}
    with ExitStack() as stack:
        backends = {f"erni-ki:v{v}": stack.enter_context(app(**{**env, "APP_VERSION": v}))
                    for v in (GOOD, NEXT, SLOW)}
        api = stack.enter_context(KubeAPIDouble(bad_images=[f"erni-ki:v{BAD}"],
                                                slow_images={f"erni-ki:v{SLOW}": 3.0},
                                                ready_delay=0.3, backends=backends))
        yield api


@pytest.fixture
def deploy(double: KubeAPIDouble, tmp_path: Path) -> Callable[..., tuple[PlaybookRun, dict[str, Any]]]:
    records, reports = tmp_path / "records", tmp_path / "reports"
    front = double.ingress_url("default", "erni-ki")
    settings = {
        "deploy_target": "kubernetes", "k8s_rollout_namespace": "default", "k8s_rollout_replicas": 2,
        "k8s_rollout_max_surge": 1, "k8s_rollout_max_unavailable": 0,
        "k8s_rollout_progress_deadline_seconds": 4, "k8s_rollout_timeout": 60, "k8s_rollout_poll_seconds": 0.5,
        "public_url": front, "webhook_receiver_url": front, "tls_ca_file": "", "soak_enabled": False,
        "deploy_lock_path": str(tmp_path / "deploy.lock"), "deploy_root": str(tmp_path / "deploy"),
    }
    (tmp_path / "k8s.json").write_text(json.dumps(settings))

    def run(release: str, *extra: str, env: dict[str, str] | None = None) -> tuple[PlaybookRun, dict[str, Any]]:
        staging_passed(records, release)
        creds = {"K8S_AUTH_HOST": double.url, "K8S_AUTH_API_KEY": double.token, "K8S_AUTH_VERIFY_SSL": "false",
                 "TMPDIR": str(tmp_path)}
        result = run_playbook("playbooks/production_deployment.yml", "-i", "inventories/sandbox",
                              "-e", f"release_version={release}", "-e", f"@{tmp_path / 'k8s.json'}", *extra,
                              env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(reports),
                                   **creds, **(env or {})}, timeout=300)
        report = reports / "latest" / "report.json"
        return result, (json.loads(report.read_text()) if report.exists() else {})

    return run


def deployment(double: KubeAPIDouble) -> dict[str, Any]:
    r = requests.get(f"{double.url}/apis/apps/v1/namespaces/default/deployments/erni-ki",
                     headers={"Authorization": f"Bearer {double.token}"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def revision(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def serving(double: KubeAPIDouble) -> set[str]:
    """Versions answering through the front door over a few requests (round-robin over pods)."""
    front = double.ingress_url("default", "erni-ki")
    return {requests.get(front + "/api/version", timeout=5).json()["version"] for _ in range(6)}


def test_good_releases_roll_out_with_their_revisions_recorded(double, deploy) -> None:
    before = chats_fingerprint()
    run, report = deploy(GOOD)
    assert run.rc == 0, run.output[-5000:]
    assert report["outcome"] == "deployed"
    first = deployment(double)
    assert first["spec"]["template"]["spec"]["containers"][0]["image"] == f"erni-ki:v{GOOD}"
    assert serving(double) == {GOOD}

    run, report = deploy(NEXT)
    assert run.rc == 0, run.output[-5000:]
    assert report["outcome"] == "deployed" and report["previous_release"] == GOOD
    k8s = report["published"]["kubernetes"]
    assert k8s["revision_before"] == revision(first) and k8s["revision_after"] == revision(first) + 1
    assert k8s["image"] == f"erni-ki:v{NEXT}" and k8s["previous_image"] == f"erni-ki:v{GOOD}"
    now = deployment(double)
    assert now["metadata"]["annotations"]["kubernetes.io/change-cause"].startswith(f"erni-deploy: erni-ki:v{NEXT}")
    assert now["status"]["updatedReplicas"] == now["status"]["availableReplicas"] == 2
    assert serving(double) == {NEXT}
    md = (Path(report["directory"]) / "report.md").read_text()
    assert "## Kubernetes rollout" in md and f"after the rollout: {revision(first) + 1}" in md
    # the smoke tests ran through the front door against the real application and its database
    assert any(c["task"].startswith("Check: send a message") and c["status"] == "pass"
               for p in report["phases"] for c in p["checks"])
    assert chats_fingerprint()[0] > before[0]

    # the same release again changes nothing: no new revision
    run, report = deploy(NEXT)
    assert run.rc == 0 and revision(deployment(double)) == revision(now)
    assert report["published"]["kubernetes"]["revision_after"] == revision(now)


def test_a_bad_image_is_rolled_back_to_the_recorded_revision(double, deploy) -> None:
    run, _ = deploy(NEXT)
    assert run.rc == 0, run.output[-5000:]
    good = revision(deployment(double))
    run, report = deploy(BAD)
    assert run.rc != 0
    assert "exceeded its progress deadline" in run.output
    assert report["outcome"] == "rolled_back"
    rb = report["rollback"]
    assert rb["triggered"] is True and rb["to_revision"] == good and 0 < rb["seconds"] <= 30, rb
    now = deployment(double)
    assert now["spec"]["template"]["spec"]["containers"][0]["image"] == f"erni-ki:v{NEXT}"
    assert revision(now) == good + 2     # the bad template was good + 1; the undo reuses the old ReplicaSet
    assert now["status"]["availableReplicas"] == 2 and serving(double) == {NEXT}
    md = (Path(report["directory"]) / "report.md").read_text()
    assert "## Incident: rollback" in md and f"Rolled back to the template of revision {good}" in md


def test_a_slow_release_that_serves_well_is_deployed(double, deploy) -> None:
    run, report = deploy(SLOW)
    assert run.rc == 0, run.output[-5000:]
    assert report["outcome"] == "deployed" and serving(double) == {SLOW}


def test_a_node_is_drained_before_the_update_and_uncordoned_after(double, deploy) -> None:
    run, report = deploy(GOOD, "-e", f"k8s_rollout_drain_node={NODE}")
    assert run.rc == 0, run.output[-5000:]
    assert report["published"]["kubernetes"]["drained_node"] == NODE
    methods = [(r["method"], r["path"]) for r in double.requests()]
    cordon = methods.index(("PATCH", f"/api/v1/nodes/{NODE}"))
    patch_deployment = ("PATCH", "/apis/apps/v1/namespaces/default/deployments/erni-ki")
    update = max(i for i, m in enumerate(methods) if m == patch_deployment)
    uncordon = max(i for i, m in enumerate(methods) if m == ("PATCH", f"/api/v1/nodes/{NODE}"))
    assert cordon < update < uncordon
    r = requests.get(f"{double.url}/api/v1/nodes/{NODE}", headers={"Authorization": f"Bearer {double.token}"},
                     timeout=5)
    assert not r.json()["spec"].get("unschedulable")


@pytest.mark.parametrize("problem", ["bad token", "unreachable"])
def test_bad_credentials_or_an_unreachable_api_fail_before_anything_changes(double, deploy, problem) -> None:
    run, _ = deploy(GOOD)
    assert run.rc == 0, run.output[-5000:]
    before = deployment(double)
    env = ({"K8S_AUTH_API_KEY": "not-the-token"} if problem == "bad token"
           else {"K8S_AUTH_HOST": "http://127.0.0.1:9"})
    seen = len(double.requests())
    run, _ = deploy(NEXT, env=env)
    assert run.rc != 0
    assert "did not answer for deployment/erni-ki" in run.output and "Nothing was changed" in run.output
    assert ("Unauthorized" in run.output) if problem == "bad token" else ("127.0.0.1:9" in run.output)
    writes = [r for r in double.requests()[seen:] if r["method"] not in ("GET",)]
    assert writes == []
    assert deployment(double)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_dry_run_of_a_first_deploy_into_a_new_namespace_writes_nothing(double, deploy) -> None:
    seen = len(double.requests())
    run, report = deploy(GOOD, "--check", "-e", "k8s_rollout_namespace=erni-ki-new")
    assert run.rc == 0, run.output[-5000:]
    assert report["outcome"] == "dry_run"
    assert [r for r in double.requests()[seen:]
            if r["method"] != "GET" and r["query"].get("dryRun") != "All"] == []
    r = requests.get(f"{double.url}/api/v1/namespaces/erni-ki-new", headers={"Authorization": f"Bearer {double.token}"},
                     timeout=5)
    assert r.status_code == 404

