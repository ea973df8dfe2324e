"""The sandbox itself: every part answers, on 127.0.0.1 only, configured as the checklist asks."""

from __future__ import annotations

import re
import subprocess

import requests

from helpers import CA_FILE, PROD_URL, ROOT, SANDBOX_DIR, secret

SANDBOX_PORTS = {5000, 5432, 8080, 8081, 8090, 8091, 8443, 8444, 9090, 9093, 9099}


def listeners() -> list[tuple[str, int]]:
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        found.append((host.strip("[]"), int(port)))
    return found


def test_status_reports_every_core_part_answering() -> None:
    proc = subprocess.run([str(ROOT / "sandbox/bin/sandbox"), "status"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    for part in ("docker", "registry", "postgres", "prometheus", "alertmanager", "sink", "nginx/production"):
        assert re.search(rf"^{re.escape(part)}\s+\S+\s+answers$", proc.stdout, re.M), proc.stdout


def test_every_sandbox_listener_is_on_loopback_only() -> None:
    ours = [(h, p) for h, p in listeners() if p in SANDBOX_PORTS or 18000 <= p < 18200 or p == 9094]
    assert {p for _, p in ours} >= {5000, 5432, 8443, 9090, 9093, 9099}
    assert all(h == "127.0.0.1" for h, _ in ours), ours


def test_up_is_idempotent_and_quick() -> None:
    proc = subprocess.run([str(ROOT / "sandbox/bin/sandbox"), "up"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "starting" not in proc.stdout, proc.stdout
    assert "already running" in proc.stdout
    took = int(re.search(r"up in (\d+)s", proc.stdout).group(1))  # type: ignore[union-attr]
    assert took <= 10


def test_registry_requires_credentials() -> None:
    assert requests.get("http://127.0.0.1:5000/v2/", timeout=5).status_code == 401
    r = requests.get("http://127.0.0.1:5000/v2/", auth=("erni-deploy", secret("registry_password")), timeout=5)
    assert r.status_code == 200


def test_nginx_sends_the_checklists_security_headers() -> None:
    r = requests.get(PROD_URL + "/api/version", verify=CA_FILE, timeout=5)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "default-src" in r.headers["Content-Security-Policy"]


def test_plain_http_redirects_to_https() -> None:
    r = requests.get("http://127.0.0.1:8080/api/v1/chats?x=1", allow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["Location"] == "https://127.0.0.1:8443/api/v1/chats?x=1"


def test_certificate_is_issued_by_the_sandbox_ca() -> None:
    # verified against the CA file; the same request without it fails verification
    requests.get(PROD_URL + "/api/version", verify=CA_FILE, timeout=5)
    try:
        requests.get(PROD_URL + "/api/version", verify=True, timeout=5)
    except requests.exceptions.SSLError:
        pass
    else:
        raise AssertionError("the sandbox certificate verified without the sandbox CA")


def test_prometheus_scrapes_itself_and_alertmanager_with_5s_interval() -> None:
    targets = requests.get("http://127.0.0.1:9090/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    jobs = {t["labels"]["job"]: t for t in targets}
    assert {"prometheus", "alertmanager", "erni-ki"} <= set(jobs)
    assert jobs["prometheus"]["scrapeInterval"] == "5s"
    rules = requests.get("http://127.0.0.1:9090/api/v1/rules", timeout=5).json()["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {"OpenWebUIDown", "HighErrorRate", "HighResponseLatency"} <= names


def test_alertmanager_routes_to_the_webhook_receiver_with_bearer_credentials() -> None:
    status = requests.get("http://127.0.0.1:9093/api/v2/status", timeout=5).json()
    config = status["config"]["original"]
    assert "http://127.0.0.1:8090/webhook" in config
    assert "credentials_file" in config
    assert secret("production_webhook_secret") not in config


def test_sink_records_slack_and_discord_posts() -> None:
    requests.delete("http://127.0.0.1:9099/messages", timeout=5)
    requests.post("http://127.0.0.1:9099/slack/deploy", json={"text": "hello"}, timeout=5)
    r = requests.post("http://127.0.0.1:9099/discord/deploy", json={"content": "hi"}, timeout=5)
    assert r.status_code == 204
    got = requests.get("http://127.0.0.1:9099/messages", timeout=5).json()
    assert [m["body"] for m in got] == [{"text": "hello"}, {"content": "hi"}]


def test_build_release_refuses_an_unknown_knob() -> None:
    proc = subprocess.run([str(ROOT / "sandbox/bin/build-release"), "0.0.1", "EROR_RATE=0.3"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "unknown knob 'EROR_RATE'" in proc.stderr


def test_secrets_are_readable_by_root_only() -> None:
    for f in (SANDBOX_DIR / "secrets").iterdir():
        assert f.stat().st_mode & 0o077 == 0, f
