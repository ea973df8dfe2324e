"""deploy.yml end to end on the Kubernetes target: `-i inventories/sandbox-kubernetes`, every
phase, against the Kubernetes API double (tests/k8sapi.py) through the real kubernetes client and
the real kubernetes.core modules.

The rest is the sandbox's real servers: the release images come from its registry (pre-deployment
reads them), the double's NodePort-like service of each environment sits behind the sandbox's
nginx (TLS, headers, rate limits), Prometheus discovers the simulated pods through the file the
double writes, and the application answering for each pod is the reference application as a real
process on that environment's PostgreSQL database.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests

from helpers import (
    PROD_URL,
    ROOT,
    SANDBOX_DIR,
    build_release,
    chat_rows,
    run_playbook,
    secret,
    serving_version,
)
from k8sapi import KubeAPIDouble
from refapp import app

pytestmark = pytest.mark.slow

STAGING_URL = "https://127.0.0.1:8444"
FIRST, SECOND, ERRORING = "7.1.0", "7.2.0", "7.3.0"
IMAGE = "127.0.0.1:5000/erni-ki:{}"
ENVIRONMENTS = {"staging": ("openwebui_staging", "openwebui_staging_user"),
                "production": ("openwebui", "openwebui_user")}
PHASES = ["Pre-deployment", "Staging", "Production preparation", "Production deployment", "Post-deployment"]
NGINX = ["nginx", "-c", str(SANDBOX_DIR / "nginx" / "nginx.conf"), "-p", str(SANDBOX_DIR / "nginx"),
         "-e", str(SANDBOX_DIR / "logs" / "nginx-error.log")]


def app_env(env: str, version: str, **extra: str) -> dict[str, str]:
    """What the Deployment's pods would get from their ConfigMap and Secret."""
    db, user = ENVIRONMENTS[env]
    return {"APP_VERSION": version, "ENVIRONMENT": env, "OPENWEBUI_DB_HOST": "127.0.0.1",
            "OPENWEBUI_DB_PORT": "5432", "OPENWEBUI_DB_NAME": db, "POSTGRES_USER": user,
            "POSTGRES_PASSWORD": secret(f"{env}_db_password"),
            "ALERTMANAGER_WEBHOOK_SECRET": secret(f"{env}_webhook_secret"),
            "JWT_SECRET": secret(f"{env}_jwt_secret"), **extra}


def migrate(env: str, version: str) -> None:
    """The schema the pods expect, as an init container would apply it (the Kubernetes target
    leaves migrations to the release's own pods)."""
    proc = subprocess.run([sys.executable, str(ROOT / "sandbox" / "app" / "erni_app.py"), "migrate"],
                          env={"PATH": "/usr/bin:/bin", **app_env(env, version)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def reload_nginx() -> None:
    subprocess.run([*NGINX, "-s", "reload"], check=True, timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for version in (FIRST, SECOND, ERRORING):
        build_release(version)
    shutil.rmtree(SANDBOX_DIR / "kubernetes", ignore_errors=True)
    upstreams = {env: SANDBOX_DIR / "nginx" / "upstreams" / f"{env}.conf" for env in ENVIRONMENTS}
    saved = {env: path.read_text() for env, path in upstreams.items() if path.exists()}
    with ExitStack() as stack:
        backends = {}
        for env in ENVIRONMENTS:
            migrate(env, FIRST)
            for version in (FIRST, SECOND, ERRORING):
                extra = {"ERROR_RATE": "0.3"} if version == ERRORING else {}
                backends[f"erni-ki-{env}/{IMAGE.format(version)}"] = stack.enter_context(
                    app(**app_env(env, version, **extra)))
        double = stack.enter_context(KubeAPIDouble(
            backends=backends, ready_delay=0.5,
            scrape_targets=SANDBOX_DIR / "prometheus" / "targets" / "k8s-double.json",
            target_labels={f"erni-ki-{env}": {"environment": env, "platform": "kubernetes"} for env in ENVIRONMENTS}))
        try:
            for env, path in upstreams.items():
                port = double.node_port(f"erni-ki-{env}", "erni-ki")
                path.write_text(f"# the Kubernetes API double's service of {env}\n"
                                f"upstream erni_{env} {{\n    server 127.0.0.1:{port};\n    keepalive 16;\n}}\n")
            reload_nginx()
            tmp = tmp_path_factory.mktemp("k8s-deploy")
            yield {"double": double, "records": tmp / "records", "reports": tmp / "reports"}
        finally:
            for env, text in saved.items():
                upstreams[env].write_text(text)
            reload_nginx()
            shutil.rmtree(SANDBOX_DIR / "kubernetes", ignore_errors=True)


def deploy(cluster: dict[str, Any], playbook: str, release: str, *extra: str) -> tuple[Any, dict[str, Any]]:
    double = cluster["double"]
    run = run_playbook(playbook, "-i", "inventories/sandbox-kubernetes", "-e", f"release_version={release}", *extra,
                       env={"K8S_AUTH_HOST": double.url, "K8S_AUTH_API_KEY": double.token,
                            "ERNI_RECORDS_DIR": str(cluster["records"]), "ERNI_REPORT_DIR": str(cluster["reports"])},
                       timeout=900)
    report = cluster["reports"] / "latest" / "report.json"
    return run, (json.loads(report.read_text()) if report.exists() else {})


def deployment(double: KubeAPIDouble, env: str) -> dict[str, Any]:
    r = requests.get(f"{double.url}/apis/apps/v1/namespaces/erni-ki-{env}/deployments/erni-ki",
                     headers={"Authorization": f"Bearer {double.token}"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def revision(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def state(env: str) -> dict[str, Any]:
    return json.loads((SANDBOX_DIR / "kubernetes" / env / "state.json").read_text())


def test_deploy_yml_rolls_out_to_kubernetes_through_every_phase(cluster) -> None:
    double = cluster["double"]
    run, report = deploy(cluster, "deploy.yml", FIRST)
    assert run.rc == 0, run.output[-6000:]
    assert report["outcome"] == "deployed" and report["release"] == FIRST
    assert [p["name"] for p in report["phases"]] == PHASES
    for phase in report["phases"]:
        assert phase["status"] == "passed" and phase["checks"], phase
    for env, url in (("staging", STAGING_URL), ("production", PROD_URL)):
        assert image_of(deployment(double, env)) == IMAGE.format(FIRST)
        assert serving_version(url) == FIRST
        assert state(env)["release"] == FIRST and state(env)["target"] == "kubernetes"
    assert report["published"]["kubernetes"]["image"] == IMAGE.format(FIRST)

    before = chat_rows()
    run, report = deploy(cluster, "deploy.yml", SECOND)
    assert run.rc == 0, run.output[-6000:]
    assert report["outcome"] == "deployed" and report["previous_release"] == FIRST
    k8s = report["published"]["kubernetes"]
    assert k8s["previous_image"] == IMAGE.format(FIRST) and k8s["image"] == IMAGE.format(SECOND)
    assert k8s["revision_after"] == k8s["revision_before"] + 1 == revision(deployment(double, "production"))
    assert serving_version() == SECOND and serving_version(STAGING_URL) == SECOND
    assert state("production") | {"updated": None} == state("production") | {
        "release": SECOND, "previous_release": FIRST, "revision": k8s["revision_after"], "updated": None}
    # the smoke tests wrote through nginx and the pods into production's database, losing nothing
    assert before < chat_rows()
    # the staging baseline was measured on the pods' own series, and production compared with it
    baseline = (cluster["records"] / SECOND / "staging-baseline.yml").read_text()
    assert "api_latency_p95:" in baseline
    assert any(row["metric"] == "api_latency_p95" for row in report["baseline_comparison"])
    # the pods' logs were read for secrets
    checks = [c for p in report["phases"] for c in p["checks"]]
    assert any(c["task"].startswith("Check: no secret in the services' logs") and c["status"] == "pass"
               for c in checks)


def test_a_dry_run_on_kubernetes_changes_nothing(cluster) -> None:
    double = cluster["double"]
    before = {env: deployment(double, env) for env in ENVIRONMENTS}
    states = {env: state(env) for env in ENVIRONMENTS}
    seen = len(double.requests())
    run, report = deploy(cluster, "deploy.yml", FIRST, "--check", "--diff")
    assert run.rc == 0, run.output[-6000:]
    assert report["check_mode"] is True and report["outcome"] == "dry_run"
    # dry-run requests are allowed; nothing was written for real
    writes = [r for r in double.requests()[seen:]
              if r["method"] not in ("GET",) and r["query"].get("dryRun") != "All"]
    assert writes == []
    for env in ENVIRONMENTS:
        assert deployment(double, env)["metadata"]["resourceVersion"] == before[env]["metadata"]["resourceVersion"]
        assert state(env) == states[env]
    assert serving_version() == SECOND


def test_an_erroring_release_is_rolled_back_in_staging(cluster) -> None:
    double = cluster["double"]
    serving = image_of(deployment(double, "staging"))
    good = revision(deployment(double, "staging"))
    run, report = deploy(cluster, "deploy.yml", ERRORING)
    assert run.rc != 0
    assert report["outcome"] == "rolled_back", report.get("outcome")
    assert report["rollback"]["to_revision"] == good and report["rollback"]["seconds"] > 0
    assert image_of(deployment(double, "staging")) == serving
    assert serving_version(STAGING_URL) == serving.rsplit(":", 1)[1]
    # production was never touched
    assert image_of(deployment(double, "production")) == IMAGE.format(SECOND)


def test_scheduled_monitoring_and_a_manual_rollback_read_the_kubernetes_state(cluster) -> None:
    double = cluster["double"]
    run, _ = deploy(cluster, "playbooks/monitor.yml", SECOND)
    assert run.rc == 0, run.output[-6000:]
    rounds = (cluster["records"] / SECOND / "monitoring.jsonl").read_text().splitlines()
    last = json.loads(rounds[-1])
    assert last["release"] == SECOND and {c["name"] for c in last["checks"]} >= {"errors in the logs"}

    run, report = deploy(cluster, "playbooks/rollback.yml", SECOND)
    assert run.rc == 0, run.output[-6000:]
    assert report["outcome"] == "rolled_back" and report["release"] == FIRST
    assert image_of(deployment(double, "production")) == IMAGE.format(FIRST)
    assert serving_version() == FIRST and state("production")["release"] == FIRST
    cause = deployment(double, "production")["metadata"]["annotations"]["kubernetes.io/change-cause"]
    assert cause.startswith(f"erni-deploy: rollback to {FIRST}")
