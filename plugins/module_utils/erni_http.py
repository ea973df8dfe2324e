# -*- coding: utf-8 -*-
# erni-deploy: HTTP probing shared by the modules (http_probe, and the gate's availability checks).
"""HTTP checks: one request, judged against what the check expects, retried until a deadline.

A check is a plain dict (the module's suboptions). run_checks() runs many concurrently and
returns one result dict per check, in the order given, with the status, the latency in
milliseconds, the number of attempts and, when it failed, the reason.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = exc

try:
    import jmespath

    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - reported when an assertion needs it
    HAS_JMESPATH = False

_MISSING = object()


def tls_verify(params: dict[str, Any], warn: Any, what: str = "server") -> bool | str:
    """requests' `verify` from a module's validate_certs and ca_path; turning verification off is
    warned about, naming what would then pass unchecked."""
    if not params["validate_certs"]:
        warn(f"TLS certificate verification is off: a wrong or forged {what} would pass")
        return False
    return params["ca_path"] or True


def make_session(verify: bool | str = True, pool_size: int = 20) -> requests.Session:
    """A session with connection pooling sized for concurrent checks; retries are ours.

    The verify setting is also passed with every request (probe_once): requests lets
    REQUESTS_CA_BUNDLE in the environment override a session's own CA file otherwise.
    """
    session = requests.Session()
    session.verify = verify
    if verify is False:
        # the module has said so once, as a warning; one line per request would bury it
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _search(expr: str, data: Any) -> Any:
    if not HAS_JMESPATH:
        raise RuntimeError("the jmespath library is needed for json assertions")
    return jmespath.search(expr, data)


def evaluate(check: dict[str, Any], status: int, headers: Any, body: bytes, latency_ms: float) -> str | None:
    """Why this answer does not satisfy the check, or None when it does."""
    expected_status = check.get("status_code") or [200]
    if status not in expected_status:
        return f"status {status}, expected {' or '.join(str(s) for s in expected_status)}"
    for name, want in (check.get("response_headers") or {}).items():
        got = headers.get(name)
        if got is None:
            return f"response header {name} is missing"
        if want is not None and str(want) != "" and got.strip() != str(want):
            return f"response header {name} is {got!r}, expected {want!r}"
    for text in check.get("body_excludes") or []:
        if text and text.encode() in body:
            return "the response contains a forbidden string"
    assertions = check.get("json_equals") or {}
    present = check.get("json_present") or []
    if assertions or present:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return "the response is not JSON"
        for expr in present:
            if _search(expr, data) is None:
                return f"JSON {expr} is missing"
        for expr, want in assertions.items():
            got = _search(expr, data)
            if got != want:
                return f"JSON {expr} is {json.dumps(got)}, expected {json.dumps(want)}"
    limit = check.get("max_latency_ms")
    if limit is not None and latency_ms > float(limit):
        return f"latency {latency_ms:.1f} ms is above the limit of {float(limit):g} ms"
    return None


def probe_once(session: requests.Session, check: dict[str, Any]) -> dict[str, Any]:
    """One request; returns status, latency_ms, reason (None when it passed) and optionally json."""
    kwargs: dict[str, Any] = {
        "headers": check.get("headers") or {},
        "timeout": float(check.get("timeout") or 5),
        "allow_redirects": bool(check.get("follow_redirects", False)),
        "verify": session.verify,
    }
    if check.get("json") is not None:
        kwargs["json"] = check["json"]
    elif check.get("body") is not None:
        kwargs["data"] = check["body"].encode() if isinstance(check["body"], str) else check["body"]
    t0 = time.monotonic()
    try:
        resp = session.request(check.get("method") or "GET", check["url"], **kwargs)
        body = resp.content
    except requests.exceptions.SSLError as exc:
        return {"status": 0, "latency_ms": _ms(t0), "reason": f"TLS error: {_short(exc)}"}
    except requests.exceptions.Timeout:
        return {"status": 0, "latency_ms": _ms(t0), "reason": f"no answer within {kwargs['timeout']:g} s"}
    except requests.exceptions.ConnectionError as exc:
        return {"status": 0, "latency_ms": _ms(t0), "reason": f"connection failed: {_short(exc)}"}
    except requests.exceptions.RequestException as exc:
        return {"status": 0, "latency_ms": _ms(t0), "reason": f"request failed: {_short(exc)}"}
    latency = _ms(t0)
    result: dict[str, Any] = {"status": resp.status_code, "latency_ms": latency,
                              "reason": evaluate(check, resp.status_code, resp.headers, body, latency)}
    if check.get("return_json"):
        try:
            result["json"] = json.loads(body)
        except ValueError:
            result["json"] = None
    return result


def probe_until(session: requests.Session, check: dict[str, Any], wait_timeout: float,
                interval: float = 0.5, backoff: float = 1.5, max_interval: float = 5.0) -> dict[str, Any]:
    """Probe until the check passes or wait_timeout seconds have gone; 0 means one attempt."""
    deadline = time.monotonic() + max(0.0, wait_timeout)
    attempts = 0
    delay = interval
    while True:
        attempts += 1
        result = probe_once(session, check)
        remaining = deadline - time.monotonic()
        if result["reason"] is None or remaining <= 0:
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * backoff, max_interval)
    result["attempts"] = attempts
    return result


def run_checks(checks: list[dict[str, Any]], verify: bool | str = True, concurrency: int = 10,
               wait_timeout: float = 0.0, interval: float = 0.5, backoff: float = 1.5,
               max_interval: float = 5.0) -> list[dict[str, Any]]:
    """Run every check concurrently; results keep the order of the checks."""
    session = make_session(verify, pool_size=max(concurrency, 1))

    def one(check: dict[str, Any]) -> dict[str, Any]:
        res = probe_until(session, check, float(check.get("wait_timeout") or wait_timeout),
                          interval, backoff, max_interval)
        out = {"name": check.get("name") or f"{check.get('method') or 'GET'} {check['url']}",
               "url": check["url"], "method": check.get("method") or "GET",
               "ok": res["reason"] is None, **res}
        return out

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(checks) or 1))) as pool:
            results = list(pool.map(one, checks))
    finally:
        session.close()
    return results


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000.0, 2)


def _short(exc: BaseException) -> str:
    text = str(exc)
    # urllib3 nests the cause in long reprs; the last part is the readable one
    for marker in ("Caused by ", "NewConnectionError(", "ConnectTimeoutError("):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:200]
