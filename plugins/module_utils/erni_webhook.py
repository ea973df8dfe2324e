# -*- coding: utf-8 -*-
# erni-deploy: probing an Alertmanager webhook receiver (webhook_probe).
"""Send an Alertmanager webhook (format version 4) to an ERNI-KI-style receiver and judge it.

build_payload() makes the body Alertmanager itself would send for one alert; auth_headers()
signs it (X-Signature: hex HMAC-SHA256 of the raw body) or carries the secret as a bearer
token; probe_receiver() sends it signed, then unsigned and with wrong credentials, and returns
one check per question the checklist asks: is a signed alert accepted, is everything else
refused with 401, and how long did the receiver take.

The secret is only ever put into request headers: never into a check, a reason or a result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone
from typing import Any

from ansible.module_utils.erni_http import make_session, probe_once

ENDPOINTS = ("generic", "critical", "warning", "gpu", "ai", "database")
SEVERITIES = ("critical", "warning", "info", "debug")
AUTH_MODES = ("hmac", "bearer")
MIN_SECRET_LENGTH = 16          # the real receiver refuses to start with a shorter secret
RECOMMENDED_SECRET_LENGTH = 32  # what the checklist asks for
RECEIVER = "erni-deploy-webhook-probe"
# Where the alert claims to come from. Nothing fetches these; they make the body look like
# what ERNI-KI's Alertmanager (compose service "alertmanager") really sends.
EXTERNAL_URL = "http://alertmanager:9093"
GENERATOR_URL = "http://prometheus:9090/graph?g0.expr=vector%281%29&g0.tab=1"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing
RATE_LIMIT_HINT = ("rate limited (429 Too Many Requests): the receiver takes 10 webhooks a minute; "
                   "wait a minute before probing again")


def endpoint_url(base_url: str, endpoint: str) -> str:
    """POST /webhook for the generic endpoint, /webhook/<name> for the others."""
    return base_url.rstrip("/") + ("/webhook" if endpoint == "generic" else f"/webhook/{endpoint}")


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits derived from the label set, as Alertmanager's fingerprints look."""
    canonical = "\xff".join(f"{k}\xfe{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _group_key(group_labels: dict[str, str]) -> str:
    inner = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(group_labels.items()))
    return "{}:{" + inner + "}"


def build_payload(alert_name: str, severity: str = "critical", status: str = "firing",
                  labels: dict[str, Any] | None = None, annotations: dict[str, Any] | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    """The webhook body Alertmanager sends for one alert (webhook format version 4)."""
    now = now or datetime.now(timezone.utc)
    alert_labels = {str(k): str(v) for k, v in (labels or {}).items()}
    alert_labels.update(alertname=alert_name, severity=severity)
    alert_annotations = {"summary": f"Deployment test alert {alert_name} sent by erni-deploy",
                         "description": "Sent by the webhook_probe module to check the receiver; no action needed."}
    alert_annotations.update({str(k): str(v) for k, v in (annotations or {}).items()})
    started = utc_iso(now)
    alert = {
        "status": status,
        "labels": alert_labels,
        "annotations": alert_annotations,
        "startsAt": started,
        "endsAt": ZERO_TIME if status == "firing" else started,
        "generatorURL": GENERATOR_URL,
        "fingerprint": fingerprint(alert_labels),
    }
    group_labels = {"alertname": alert_name}
    return {
        "version": "4",
        "groupKey": _group_key(group_labels),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": RECEIVER,
        "groupLabels": group_labels,
        "commonLabels": dict(alert_labels),
        "commonAnnotations": dict(alert_annotations),
        "externalURL": EXTERNAL_URL,
        "alerts": [alert],
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent, and signed."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def signature(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of the raw body, keyed with the secret (header X-Signature)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def auth_headers(body: bytes, secret: str, auth_mode: str) -> dict[str, str]:
    if auth_mode == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    return {"X-Signature": signature(body, secret)}


def _wrong_secret(secret: str) -> str:
    """A random secret of the same length that is certainly not the real one."""
    while True:
        candidate = secrets.token_hex(max(MIN_SECRET_LENGTH, len(secret)))[: max(MIN_SECRET_LENGTH, len(secret))]
        if candidate != secret:
            return candidate


def _check(name: str, ok: bool, value: Any, limit: Any, reason: str | None) -> dict[str, Any]:
    return {"name": name, "status": "pass" if ok else "fail", "value": value, "limit": limit,
            "reason": None if ok else reason}


def _error_text(answer: Any) -> str:
    if isinstance(answer, dict):
        parts = [str(answer[k]) for k in ("error", "detail", "message") if answer.get(k)]
        if parts:
            return ": ".join(parts)
    return "no details in the answer"


def judge_accepted(res: dict[str, Any], url: str, auth_mode: str) -> dict[str, Any]:
    """signed_accepted: 200 with {"status": "success"}."""
    status = res["status"]
    answer = res.get("json")
    reason: str | None = None
    if status == 0:
        reason = res["reason"]
    elif status == 429:
        reason = RATE_LIMIT_HINT
    elif status == 401:
        how = "HMAC signature (X-Signature)" if auth_mode == "hmac" else "bearer token"
        reason = (f"refused with 401 Unauthorized: the receiver did not accept the {how}; check that "
                  "secret is the receiver's ALERTMANAGER_WEBHOOK_SECRET")
    elif status == 400:
        reason = f"refused the payload with 400 ({_error_text(answer)})"
    elif status == 404:
        reason = (f"404 Not Found at {url}: check url and endpoint (the receiver serves /webhook and "
                  "/webhook/critical, warning, gpu, ai, database)")
    elif status != 200:
        reason = f"status {status}, expected 200"
    elif not (isinstance(answer, dict) and answer.get("status") == "success"):
        reason = 'status 200 but the answer is not {"status": "success", ...}: is this a webhook receiver?'
    return _check("signed_accepted", reason is None, status, 200, reason)


def judge_refused(name: str, what: str, res: dict[str, Any]) -> dict[str, Any]:
    """A negative check: the request must be refused with 401."""
    status = res["status"]
    reason: str | None = None
    if status == 0:
        reason = res["reason"]
    elif status == 429:
        reason = RATE_LIMIT_HINT
    elif 200 <= status < 300:
        reason = (f"accepted {what} (status {status}): the receiver does not check authentication; "
                  "set ALERTMANAGER_WEBHOOK_SECRET on the receiver")
    elif status != 401:
        reason = f"status {status} for {what}, expected 401 Unauthorized"
    return _check(name, reason is None, status, 401, reason)


def judge_time(res: dict[str, Any], accepted: bool, max_ms: float) -> dict[str, Any]:
    if res["status"] == 0:
        return _check("processing_time", False, None, max_ms, f"not measured: {res['reason']}")
    took = res["latency_ms"]
    if not accepted:
        return _check("processing_time", False, took, max_ms,
                      "not measured: the signed alert was not accepted (see signed_accepted)")
    if took > max_ms:
        return _check("processing_time", False, took, max_ms,
                      f"processing took {took:.1f} ms, above the limit of {max_ms:g} ms")
    return _check("processing_time", True, took, max_ms, None)


def probe_receiver(url: str, endpoint: str, secret: str, auth_mode: str = "hmac",
                   alert_name: str = "DeploymentTest", severity: str = "critical", status: str = "firing",
                   labels: dict[str, Any] | None = None, annotations: dict[str, Any] | None = None,
                   negative_checks: bool = True, max_processing_ms: float = 1000.0, timeout: float = 10.0,
                   verify: bool | str = True) -> dict[str, Any]:
    """Send the alert signed (and, with negative_checks, without valid credentials); judge each answer.

    Requests go one after another, the signed one first, so its round trip is not shared with
    the others. Returns checks, processing_ms, endpoint_url and payload_alertname.
    """
    target = endpoint_url(url, endpoint)
    body = encode(build_payload(alert_name, severity, status, labels, annotations))
    base_headers = {"Content-Type": "application/json", "User-Agent": "erni-deploy/webhook_probe"}

    def send(extra: dict[str, str]) -> dict[str, Any]:
        request = {"url": target, "method": "POST", "headers": {**base_headers, **extra}, "body": body,
                   "timeout": timeout, "return_json": True}
        return probe_once(session, request)

    session = make_session(verify, pool_size=1)
    try:
        signed = send(auth_headers(body, secret, auth_mode))
        checks = [judge_accepted(signed, target, auth_mode)]
        if negative_checks:
            wrong = _wrong_secret(secret)
            negatives = [("unsigned_refused", "an alert without credentials", {}),
                         ("bad_signature_refused", "an alert with a wrong X-Signature",
                          {"X-Signature": signature(body, wrong)})]
            if auth_mode == "bearer":
                negatives.append(("wrong_bearer_refused", "a wrong bearer token", {"Authorization": f"Bearer {wrong}"}))
            for name, what, headers in negatives:
                if signed["status"] in (0, 429):
                    # no answer, or rate limited: more requests would only wait or count against the limit
                    checks.append(_check(name, False, None, 401, f"not sent: {checks[0]['reason']}"))
                else:
                    checks.append(judge_refused(name, what, send(headers)))
    finally:
        session.close()
    checks.append(judge_time(signed, checks[0]["status"] == "pass", max_processing_ms))
    return {"checks": checks, "processing_ms": signed["latency_ms"] if signed["status"] else None,
            "endpoint_url": target, "payload_alertname": alert_name}
