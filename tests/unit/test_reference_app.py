"""The reference application's HTTP contract, on a real server process on 127.0.0.1.

These need no database: health, version, auth, webhooks, metrics and the fault knobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import requests

from helpers import free_port
from refapp import APP, WEBHOOK_SECRET, alert_payload, app, sign, token


def test_health_and_version_answer_as_open_webui_does() -> None:
    with app() as base:
        r = requests.get(base + "/health", timeout=2)
        assert (r.status_code, r.json()) == (200, {"status": True})
        r = requests.get(base + "/api/version", timeout=2)
        assert (r.status_code, r.json()) == (200, {"version": "9.9.9"})


def test_version_flag_prints_the_release() -> None:
    out = subprocess.run([sys.executable, str(APP), "--version"], env={**os.environ, "APP_VERSION": "4.5.6"},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "erni-ki 4.5.6"


def test_api_refuses_a_missing_or_forged_token(tmp_path) -> None:
    with app() as base:
        assert requests.get(base + "/api/v1/models", timeout=2).status_code == 401
        forged = token("admin", tmp_path)[:-2] + "xx"
        r = requests.get(base + "/api/v1/models", headers={"Authorization": f"Bearer {forged}"}, timeout=2)
        assert r.status_code == 401
        good = token("user", tmp_path)
        r = requests.get(base + "/api/v1/models", headers={"Authorization": f"Bearer {good}"}, timeout=2)
        assert r.status_code == 200
        assert {m["id"] for m in r.json()["data"]} >= {"llama3.2:3b"}


def test_an_expired_token_is_refused(tmp_path) -> None:
    with app() as base:
        expired = token("admin", tmp_path, ttl=-10)
        r = requests.get(base + "/api/v1/models", headers={"Authorization": f"Bearer {expired}"}, timeout=2)
        assert r.status_code == 401


def test_a_user_token_is_refused_on_an_admin_route(tmp_path) -> None:
    with app() as base:
        user = {"Authorization": f"Bearer {token('user', tmp_path)}"}
        admin = {"Authorization": f"Bearer {token('admin', tmp_path)}"}
        assert requests.get(base + "/api/v1/users", headers=user, timeout=2).status_code == 403
        assert requests.get(base + "/api/v1/users", headers=admin, timeout=2).status_code == 200


def test_webhook_accepts_hmac_signature_and_bearer_and_refuses_the_rest() -> None:
    body = alert_payload()
    with app() as base:
        url = base + "/webhook/critical"
        r = requests.post(url, data=body, headers={"X-Signature": sign(body)}, timeout=2)
        assert r.status_code == 200 and r.json()["status"] == "success"
        r = requests.post(url, data=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}, timeout=2)
        assert r.status_code == 200
        r = requests.post(url, data=body, headers={"X-Signature": sign(body, "wrong-secret-0123456789")}, timeout=2)
        assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"})
        r = requests.post(url, data=body, timeout=2)
        assert r.status_code == 401
        # a signature over other bytes than were sent
        r = requests.post(url, data=body + b" ", headers={"X-Signature": sign(body)}, timeout=2)
        assert r.status_code == 401


def test_webhook_routes_are_the_real_receivers() -> None:
    body = alert_payload()
    with app() as base:
        for ep in ("", "/critical", "/warning", "/gpu", "/ai", "/database"):
            r = requests.post(base + "/webhook" + ep, data=body, headers={"X-Signature": sign(body)}, timeout=2)
            assert r.status_code == 200, ep
        r = requests.post(base + "/webhook/health", data=body, headers={"X-Signature": sign(body)}, timeout=2)
        assert r.status_code == 404


def test_webhook_rejects_invalid_payloads_with_400() -> None:
    with app() as base:
        for body in (b"not json", json.dumps({"alerts": []}).encode(),
                     json.dumps({"alerts": [{"status": "firing", "labels": {}}]}).encode(),
                     alert_payload(severity="urgent")):
            r = requests.post(base + "/webhook", data=body, headers={"X-Signature": sign(body)}, timeout=2)
            assert r.status_code == 400, body


def test_webhook_reject_all_refuses_even_a_valid_signature() -> None:
    body = alert_payload()
    with app(WEBHOOK_REJECT_ALL="1") as base:
        r = requests.post(base + "/webhook", data=body, headers={"X-Signature": sign(body)}, timeout=2)
        assert r.status_code == 401


def test_health_fail_and_startup_delay() -> None:
    with app(HEALTH_FAIL="1") as base:
        assert requests.get(base + "/health", timeout=2).status_code == 503
    with app(STARTUP_DELAY_S="1.5") as base:
        assert requests.get(base + "/health", timeout=2).status_code == 503
        time.sleep(1.6)
        assert requests.get(base + "/health", timeout=2).status_code == 200


def test_error_rate_one_fails_every_api_request_but_not_health(tmp_path) -> None:
    headers = {"Authorization": f"Bearer {token('user', tmp_path)}"}
    with app(ERROR_RATE="1") as base:
        codes = {requests.get(base + "/api/v1/models", headers=headers, timeout=2).status_code for _ in range(5)}
        assert codes == {500}
        assert requests.get(base + "/health", timeout=2).status_code == 200


def test_extra_latency_is_added_to_api_requests(tmp_path) -> None:
    headers = {"Authorization": f"Bearer {token('user', tmp_path)}"}
    with app(EXTRA_LATENCY_MS="300") as base:
        t0 = time.monotonic()
        requests.get(base + "/api/v1/models", headers=headers, timeout=5)
        assert time.monotonic() - t0 >= 0.3



def test_warmup_latency_slows_the_first_seconds_of_the_page_but_not_the_status_routes() -> None:
    def timed(url: str) -> float:
        t0 = time.monotonic()
        r = requests.get(url, timeout=5)
        assert r.status_code == 200, (url, r.status_code)
        return time.monotonic() - t0

    with app(WARMUP_LATENCY_MS="200", WARMUP_SECONDS="2") as base:
        # the process started before app() returned: this is still within its first second
        up = time.monotonic()
        assert timed(base + "/") >= 0.2
        assert timed(base + "/api/version") < 0.1
        assert time.monotonic() - up < 1.0
        time.sleep(max(0.0, 2.5 - (time.monotonic() - up)))
        assert timed(base + "/") < 0.1
        assert timed(base + "/api/version") < 0.1


def test_a_negative_warmup_knob_is_refused_at_start() -> None:
    proc = subprocess.run([sys.executable, str(APP), "serve"],
                          env={**os.environ, "WARMUP_SECONDS": "-1", "PORT": str(free_port())},
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1
    assert "WARMUP_SECONDS='-1' must be 0 or more" in proc.stderr

def test_crash_on_start_exits_non_zero() -> None:
    proc = subprocess.run([sys.executable, str(APP), "serve"],
                          env={**os.environ, "CRASH_ON_START": "1", "PORT": str(free_port())},
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1
    assert "CRASH_ON_START" in proc.stdout


def test_a_short_webhook_secret_is_refused_at_start() -> None:
    proc = subprocess.run([sys.executable, str(APP), "serve"],
                          env={**os.environ, "ALERTMANAGER_WEBHOOK_SECRET": "short", "PORT": str(free_port())},
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1
    assert "shorter than 16" in proc.stdout


def test_metrics_count_requests_by_route_and_status(tmp_path) -> None:
    body = alert_payload("MetricsTest")
    with app() as base:
        requests.get(base + "/health", timeout=2)
        requests.get(base + "/api/v1/models", timeout=2)  # 401
        requests.post(base + "/webhook/gpu", data=body, headers={"X-Signature": sign(body)}, timeout=2)
        text = requests.get(base + "/metrics", timeout=2).text
    assert 'http_requests_total{method="GET",route="/health",status="200",version="9.9.9"} 1.0' in text
    assert 'http_requests_total{method="GET",route="/api/v1/models",status="401",version="9.9.9"} 1.0' in text
    assert 'webhook_alerts_total{alertname="MetricsTest",endpoint="gpu",status="firing"} 1.0' in text
    assert "webhook_processing_seconds_bucket" in text
    assert 'erni_ki_build_info{colour="",version="9.9.9"} 1.0' in text


def test_the_page_is_served_and_faults_reach_it() -> None:
    with app() as base:
        r = requests.get(base + "/", timeout=2)
        assert r.status_code == 200 and "release 9.9.9" in r.text
    with app(ERROR_RATE="1") as base:
        assert requests.get(base + "/", timeout=2).status_code == 500
        assert requests.get(base + "/api/version", timeout=2).status_code == 200


def test_signin_sets_a_secure_httponly_cookie(tmp_path) -> None:
    with app() as base:
        assert requests.post(base + "/api/v1/auths/signin", timeout=2).status_code == 401
        r = requests.post(base + "/api/v1/auths/signin", timeout=2,
                          headers={"Authorization": f"Bearer {token('user', tmp_path)}"})
        assert r.status_code == 200
        cookie = r.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie


def test_a_refused_post_leaves_a_kept_alive_connection_in_step() -> None:
    """A proxy reuses its connections (nginx keepalive, the Kubernetes double's forwarder): the
    body of a POST answered 401 before it was read must not become the next request."""
    with app() as base, requests.Session() as session:
        for path in ("/api/v1/chats", "/api/v1/auths/signin", "/webhook"):
            refused = session.post(base + path, json={"title": "x" * 200}, timeout=5)
            assert refused.status_code == 401, (path, refused.text)
            after = session.get(base + "/api/version", timeout=5)
            assert after.status_code == 200 and after.json()["version"] == "9.9.9", (path, after.text[:200])
