"""webhook_probe against the reference application's real webhook receiver and small local servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from modules_harness import run_module
from refapp import WEBHOOK_SECRET, app, sign
from servers import LocalServer, json_route, make_ca

ENDPOINT_PATHS = {"generic": "/webhook", "critical": "/webhook/critical", "warning": "/webhook/warning",
                  "gpu": "/webhook/gpu", "ai": "/webhook/ai", "database": "/webhook/database"}
OTHER_SECRET = "another-receivers-secret-that-must-not-leak-42"


def by_name(res: dict) -> dict[str, dict]:
    return {c["name"]: c for c in res["checks"]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    with app() as base:
        yield base


@pytest.fixture
def accept_all() -> Iterator[LocalServer]:
    """A receiver that checks nothing: every webhook is a success."""
    ok = json_route(200, {"status": "success", "processed": 1})
    srv = LocalServer(routes=dict.fromkeys(ENDPOINT_PATHS.values(), ok))
    yield srv
    srv.close()


def test_a_signed_alert_is_accepted_and_everything_else_refused(receiver: str) -> None:
    res = run_module("webhook_probe", {"url": receiver, "secret": WEBHOOK_SECRET})
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert [c["name"] for c in res["checks"]] == [
        "signed_accepted", "unsigned_refused", "bad_signature_refused", "processing_time"]
    assert res["summary"] == {"total": 4, "passed": 4, "failed": 0}
    checks = by_name(res)
    assert checks["signed_accepted"] == {"name": "signed_accepted", "status": "pass", "value": 200,
                                         "limit": 200, "reason": None}
    assert checks["unsigned_refused"]["value"] == 401 and checks["bad_signature_refused"]["value"] == 401
    assert 0 < res["processing_ms"] < 1000
    assert checks["processing_time"]["value"] == res["processing_ms"]
    assert checks["processing_time"]["limit"] == 1000
    assert res["endpoint_url"] == receiver + "/webhook/critical"
    assert res["payload_alertname"] == "DeploymentTest"


def test_bearer_mode_is_accepted_and_a_wrong_bearer_refused(receiver: str) -> None:
    res = run_module("webhook_probe", {"url": receiver + "/", "endpoint": "generic", "auth_mode": "bearer",
                                       "secret": WEBHOOK_SECRET, "alert_name": "BearerTest"})
    assert not res.get("failed"), res
    assert res["endpoint_url"] == receiver + "/webhook"
    assert res["payload_alertname"] == "BearerTest"
    checks = by_name(res)
    assert set(checks) == {"signed_accepted", "unsigned_refused", "bad_signature_refused",
                           "wrong_bearer_refused", "processing_time"}
    assert checks["wrong_bearer_refused"]["status"] == "pass" and checks["wrong_bearer_refused"]["value"] == 401
    assert res["summary"] == {"total": 5, "passed": 5, "failed": 0}


def test_every_endpoint_of_the_receiver_answers(receiver: str) -> None:
    for endpoint, path in ENDPOINT_PATHS.items():
        res = run_module("webhook_probe", {"url": receiver, "endpoint": endpoint, "secret": WEBHOOK_SECRET,
                                           "negative_checks": False, "severity": "info"})
        assert not res.get("failed"), (endpoint, res)
        assert res["endpoint_url"] == receiver + path
        assert [c["name"] for c in res["checks"]] == ["signed_accepted", "processing_time"]


def test_a_wrong_secret_fails_signed_accepted_and_says_what_to_check(receiver: str) -> None:
    res = run_module("webhook_probe", {"url": receiver, "secret": OTHER_SECRET})
    assert res["failed"] is True
    checks = by_name(res)
    assert checks["signed_accepted"]["status"] == "fail" and checks["signed_accepted"]["value"] == 401
    assert "ALERTMANAGER_WEBHOOK_SECRET" in checks["signed_accepted"]["reason"]
    assert checks["processing_time"]["status"] == "fail"
    assert checks["processing_time"]["reason"].startswith("not measured")
    assert OTHER_SECRET not in json.dumps(res)


def test_a_receiver_refusing_everything_fails_signed_accepted() -> None:
    with app(WEBHOOK_REJECT_ALL="1") as base:
        res = run_module("webhook_probe", {"url": base, "secret": WEBHOOK_SECRET})
    assert res["failed"] is True
    checks = by_name(res)
    assert checks["signed_accepted"]["status"] == "fail"
    assert checks["signed_accepted"]["reason"].startswith("refused with 401 Unauthorized")
    # refusing everything is right for the negative checks
    assert checks["unsigned_refused"]["status"] == "pass"
    assert checks["bad_signature_refused"]["status"] == "pass"
    assert res["summary"] == {"total": 4, "passed": 2, "failed": 2}
    assert res["msg"].startswith("2 of 4 webhook checks failed at " + base + "/webhook/critical: signed_accepted:")


def test_a_slow_receiver_fails_processing_time() -> None:
    with app(EXTRA_LATENCY_MS="1200") as base:
        res = run_module("webhook_probe", {"url": base, "secret": WEBHOOK_SECRET, "negative_checks": False,
                                           "fail_on_error": False})
    assert "failed" not in res
    checks = by_name(res)
    assert checks["signed_accepted"]["status"] == "pass"
    slow = checks["processing_time"]
    assert slow["status"] == "fail" and slow["value"] > 1000 and slow["limit"] == 1000
    assert re.fullmatch(r"processing took \d+\.\d ms, above the limit of 1000 ms", slow["reason"]), slow
    assert res["processing_ms"] == slow["value"]
    assert res["summary"] == {"total": 2, "passed": 1, "failed": 1}


def test_the_latency_limit_is_an_option(receiver: str) -> None:
    res = run_module("webhook_probe", {"url": receiver, "secret": WEBHOOK_SECRET, "negative_checks": False,
                                       "max_processing_ms": 0.001})
    assert res["failed"] is True
    assert by_name(res)["processing_time"]["limit"] == 0.001
    assert "above the limit of 0.001 ms" in by_name(res)["processing_time"]["reason"]


def test_a_receiver_that_accepts_everything_fails_the_negative_checks(accept_all: LocalServer) -> None:
    res = run_module("webhook_probe", {"url": accept_all.url, "secret": WEBHOOK_SECRET, "auth_mode": "bearer"})
    assert res["failed"] is True
    checks = by_name(res)
    assert checks["signed_accepted"]["status"] == "pass"
    assert checks["processing_time"]["status"] == "pass"
    for name in ("unsigned_refused", "bad_signature_refused", "wrong_bearer_refused"):
        assert checks[name]["status"] == "fail" and checks[name]["value"] == 200 and checks[name]["limit"] == 401
        assert "does not check authentication" in checks[name]["reason"]
    assert res["summary"] == {"total": 5, "passed": 2, "failed": 3}


def test_what_each_request_carries(accept_all: LocalServer) -> None:
    """Signed request first, with a signature over the exact bytes; the others without valid credentials."""
    res = run_module("webhook_probe", {"url": accept_all.url, "secret": WEBHOOK_SECRET, "auth_mode": "bearer",
                                       "endpoint": "gpu"})
    assert res["summary"]["passed"] == 2
    sent = accept_all.requests
    assert [(method, path) for method, path, _h, _b in sent] == [("POST", "/webhook/gpu")] * 4
    bodies = {body for _m, _p, _h, body in sent}
    assert len(bodies) == 1, "every request sends the same body"
    signed, unsigned, bad_sig, wrong_bearer = (headers for _m, _p, headers, _b in sent)
    assert signed["Authorization"] == f"Bearer {WEBHOOK_SECRET}" and "X-Signature" not in signed
    assert signed["Content-Type"] == "application/json"
    assert "Authorization" not in unsigned and "X-Signature" not in unsigned
    body = next(iter(bodies))
    assert re.fullmatch(r"[0-9a-f]{64}", bad_sig["X-Signature"]) and bad_sig["X-Signature"] != sign(body)
    assert wrong_bearer["Authorization"].startswith("Bearer ")
    assert WEBHOOK_SECRET not in wrong_bearer["Authorization"]
    # and in hmac mode the signature is over the raw bytes sent
    accept_all.requests.clear()
    run_module("webhook_probe", {"url": accept_all.url, "secret": WEBHOOK_SECRET, "negative_checks": False})
    (_m, _p, headers, body), = accept_all.requests
    assert headers["X-Signature"] == sign(body)
    assert "Authorization" not in headers


def test_the_body_is_an_alertmanager_v4_webhook(accept_all: LocalServer) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    run_module("webhook_probe", {"url": accept_all.url, "secret": WEBHOOK_SECRET, "negative_checks": False,
                                 "alert_name": "GateCheck", "severity": "warning",
                                 "labels": {"environment": "production", "attempt": 2},
                                 "annotations": {"summary": "gate"}})
    payload = json.loads(accept_all.requests[0][3])
    assert payload["version"] == "4" and payload["status"] == "firing" and payload["truncatedAlerts"] == 0
    assert payload["groupKey"] == '{}:{alertname="GateCheck"}'
    assert payload["groupLabels"] == {"alertname": "GateCheck"}
    assert payload["receiver"] and payload["externalURL"].startswith("http")
    (alert,) = payload["alerts"]
    assert alert["labels"] == {"alertname": "GateCheck", "severity": "warning", "environment": "production",
                               "attempt": "2"}
    assert payload["commonLabels"] == alert["labels"]
    assert alert["annotations"]["summary"] == "gate" and payload["commonAnnotations"] == alert["annotations"]
    assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alert["startsAt"])
    started = datetime.strptime(alert["startsAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert 0 <= (started - before).total_seconds() < 5
    assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"]) and alert["generatorURL"].startswith("http")


def test_the_payload_builder_directly() -> None:
    from ansible.module_utils.erni_webhook import auth_headers, build_payload, encode, endpoint_url

    now = datetime(2026, 11, 27, 10, 0, 5, tzinfo=timezone.utc)
    payload = build_payload("DeploymentTest", "critical", "resolved", labels={"env": "prod"}, now=now)
    assert set(payload) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                            "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    (alert,) = payload["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert payload["status"] == alert["status"] == "resolved"
    assert alert["startsAt"] == "2026-11-27T10:00:05Z" and alert["endsAt"] == "2026-11-27T10:00:05Z"
    assert alert["labels"] == {"env": "prod", "alertname": "DeploymentTest", "severity": "critical"}
    # the fingerprint depends on the labels only
    again = build_payload("DeploymentTest", "critical", "firing", labels={"env": "prod"})
    assert again["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert build_payload("Other")["alerts"][0]["fingerprint"] != alert["fingerprint"]

    body = encode(payload)
    assert json.loads(body) == payload
    signature = auth_headers(body, WEBHOOK_SECRET, "hmac")["X-Signature"]
    assert hmac.compare_digest(signature, hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest())
    assert signature == sign(body)
    assert signature != sign(body + b" ")
    assert auth_headers(body, WEBHOOK_SECRET, "bearer") == {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
    assert endpoint_url("https://ki.example/", "generic") == "https://ki.example/webhook"
    assert endpoint_url("http://127.0.0.1:9095", "database") == "http://127.0.0.1:9095/webhook/database"


def test_the_built_payload_passes_the_receivers_own_validation(receiver: str) -> None:
    """Every severity and both statuses are accepted by the real receiver's payload checks."""
    for severity in ("critical", "warning", "info", "debug"):
        for status in ("firing", "resolved"):
            res = run_module("webhook_probe", {"url": receiver, "secret": WEBHOOK_SECRET, "endpoint": "warning",
                                               "negative_checks": False, "severity": severity, "status": status})
            assert by_name(res)["signed_accepted"]["status"] == "pass", (severity, status, res)


def test_rate_limiting_is_reported_as_such_not_as_an_auth_failure() -> None:
    srv = LocalServer(routes={"/webhook/critical": json_route(429, {"error": "Too many requests"},
                                                              headers={"Retry-After": "60"})})
    try:
        res = run_module("webhook_probe", {"url": srv.url, "secret": WEBHOOK_SECRET})
    finally:
        srv.close()
    assert res["failed"] is True
    checks = by_name(res)
    assert checks["signed_accepted"]["value"] == 429
    assert checks["signed_accepted"]["reason"].startswith("rate limited (429 Too Many Requests)")
    assert "wait a minute" in checks["signed_accepted"]["reason"]
    # the negative checks are not sent: they would only count against the limit
    assert len(srv.requests) == 1
    for name in ("unsigned_refused", "bad_signature_refused"):
        assert checks[name]["value"] is None
        assert checks[name]["reason"].startswith("not sent: rate limited (429 Too Many Requests)")
    for check in res["checks"]:
        assert "Unauthorized" not in check["reason"] and "secret" not in check["reason"]


def test_rate_limiting_during_the_negative_checks_is_reported_as_such() -> None:
    answered = []

    def limited(_h: object, _b: bytes) -> tuple[int, dict[str, str], bytes]:
        answered.append(1)
        if len(answered) == 1:
            return 200, {"Content-Type": "application/json"}, b'{"status": "success"}'
        return 429, {"Content-Type": "application/json"}, b'{"error": "Too many requests"}'

    srv = LocalServer(routes={"/webhook/critical": limited})
    try:
        res = run_module("webhook_probe", {"url": srv.url, "secret": WEBHOOK_SECRET})
    finally:
        srv.close()
    checks = by_name(res)
    assert checks["signed_accepted"]["status"] == "pass" and checks["processing_time"]["status"] == "pass"
    for name in ("unsigned_refused", "bad_signature_refused"):
        assert checks[name]["status"] == "fail" and checks[name]["value"] == 429
        assert checks[name]["reason"].startswith("rate limited (429 Too Many Requests)")


@pytest.mark.parametrize("status, body, expected", [
    (400, {"error": "Invalid payload", "detail": "alerts[0].labels.severity must be one of critical"},
     "refused the payload with 400 (Invalid payload: alerts[0].labels.severity must be one of critical)"),
    (404, {"detail": "Not Found"}, "404 Not Found at "),
    (500, {"detail": "boom"}, "status 500, expected 200"),
    (200, {"ok": True}, 'status 200 but the answer is not {"status": "success", ...}'),
])
def test_other_answers_to_the_signed_alert_are_explained(status: int, body: dict, expected: str) -> None:
    srv = LocalServer(routes={"/webhook/ai": json_route(status, body)})
    try:
        res = run_module("webhook_probe", {"url": srv.url, "endpoint": "ai", "secret": WEBHOOK_SECRET,
                                           "negative_checks": False})
    finally:
        srv.close()
    assert res["failed"] is True
    assert by_name(res)["signed_accepted"]["reason"].startswith(expected), res


def test_an_unreachable_receiver_gives_a_clear_reason() -> None:
    closed = LocalServer()
    url = closed.url
    closed.close()
    res = run_module("webhook_probe", {"url": url, "secret": WEBHOOK_SECRET, "fail_on_error": False})
    assert "failed" not in res
    assert res["summary"] == {"total": 4, "passed": 0, "failed": 4}
    assert res["processing_ms"] is None
    checks = by_name(res)
    assert checks["signed_accepted"]["value"] == 0
    assert checks["signed_accepted"]["reason"].startswith("connection failed")
    assert checks["unsigned_refused"]["value"] is None
    assert checks["unsigned_refused"]["reason"].startswith("not sent: connection failed")
    assert checks["processing_time"]["value"] is None
    assert checks["processing_time"]["reason"].startswith("not measured: connection failed")


def test_the_secret_never_appears_in_results_or_messages(receiver: str, accept_all: LocalServer) -> None:
    results = [
        run_module("webhook_probe", {"url": receiver, "secret": WEBHOOK_SECRET, "auth_mode": "bearer"}),
        run_module("webhook_probe", {"url": receiver, "secret": OTHER_SECRET, "auth_mode": "bearer"}),
        run_module("webhook_probe", {"url": accept_all.url, "secret": OTHER_SECRET, "auth_mode": "bearer"}),
    ]
    assert not results[0].get("failed") and results[1]["failed"] and results[2]["failed"]
    # the secret really went out (as a bearer token), so its absence from the results means something
    assert any(h.get("Authorization") == f"Bearer {OTHER_SECRET}" for _m, _p, h, _b in accept_all.requests)
    text = json.dumps(results)
    assert WEBHOOK_SECRET not in text and OTHER_SECRET not in text
    assert "msg" in results[1] and "msg" in results[2]


def test_https_receiver_with_a_ca_file_and_without(tmp_path: Path) -> None:
    pki = make_ca(tmp_path)
    ok = json_route(200, {"status": "success"})
    srv = LocalServer(routes={"/webhook/critical": ok}, tls=(pki["cert"], pki["key"]))
    try:
        trusted = run_module("webhook_probe", {"url": srv.url, "secret": WEBHOOK_SECRET, "negative_checks": False,
                                               "ca_path": str(pki["ca"])})
        assert not trusted.get("failed"), trusted
        untrusted = run_module("webhook_probe", {"url": srv.url, "secret": WEBHOOK_SECRET,
                                                 "negative_checks": False})
        assert by_name(untrusted)["signed_accepted"]["reason"].startswith("TLS error")
        unverified = run_module("webhook_probe", {"url": srv.url, "secret": WEBHOOK_SECRET,
                                                  "negative_checks": False, "validate_certs": False})
        assert not unverified.get("failed")
        assert "verification is off" in str(unverified.get("warnings"))
    finally:
        srv.close()


def test_a_secret_under_32_characters_gives_a_warning(accept_all: LocalServer) -> None:
    res = run_module("webhook_probe", {"url": accept_all.url, "secret": "twenty-chars-secret!",
                                       "negative_checks": False})
    assert not res.get("failed")
    assert "fewer than 32 characters" in str(res.get("warnings"))


@pytest.mark.parametrize("args, message", [
    ({"endpoint": "health"}, "value of endpoint must be one of: generic, critical, warning, gpu, ai, database"),
    ({"secret": "tooshort123"}, "secret is shorter than 16 characters"),
    ({"auth_mode": "basic"}, "value of auth_mode must be one of: hmac, bearer"),
    ({"severity": "urgent"}, "value of severity must be one of"),
    ({"url": "ftp://ki.example"}, "url 'ftp://ki.example' is not an http(s) URL"),
    ({"labels": {"alertname": "X"}}, "labels.alertname is set by the module: use option alert_name instead"),
    ({"max_processing_ms": 0}, "max_processing_ms=0.0 must be a number above 0"),
])
def test_bad_input_is_refused_with_a_message_naming_it(args: dict, message: str) -> None:
    base = {"url": "http://127.0.0.1:9", "secret": WEBHOOK_SECRET}
    res = run_module("webhook_probe", {**base, **args})
    assert res["failed"] is True
    assert message in res["msg"], res["msg"]
    assert "checks" not in res  # refused before sending anything
    if "secret" in args:
        assert args["secret"] not in json.dumps(res)


def test_runs_in_check_mode(receiver: str) -> None:
    res = run_module("webhook_probe", {"url": receiver, "secret": WEBHOOK_SECRET}, check_mode=True)
    assert not res.get("failed"), res
    assert res["changed"] is False and res["summary"]["passed"] == 4
