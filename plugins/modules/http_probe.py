#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: probe many HTTP endpoints in one call.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: http_probe
short_description: Probe many HTTP endpoints at once and judge each answer
description:
  - Sends one request per check, concurrently, and judges the answer against the check's
    accepted status codes, JSON assertions (JMESPath expressions), required response
    headers, forbidden strings and latency limit.
  - With O(wait_timeout), each failing check is retried with backoff until it passes or the
    time is up ("wait until healthy").
  - Read-only; runs in check mode and never reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  checks:
    description: The checks to run.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name in the results; defaults to the method and URL.
        type: str
      url:
        description: The URL to request.
        type: str
        required: true
      method:
        description: HTTP method.
        type: str
        default: GET
        choices: [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS]
      headers:
        description: Request headers. Treated as secret (they often carry tokens).
        type: dict
      body:
        description: Raw request body. Mutually exclusive with O(checks[].json).
        type: str
      json:
        description: Request body sent as JSON.
        type: raw
      status_code:
        description: Accepted status codes.
        type: list
        elements: int
        default: [200]
      json_equals:
        description: JMESPath expression to expected value; every one must match.
        type: dict
      json_present:
        description: JMESPath expressions that must yield a non-null value.
        type: list
        elements: str
      response_headers:
        description:
          - Response headers that must be present; a non-empty value must match exactly.
        type: dict
      body_excludes:
        description: Strings that must not appear in the response body (for example a secret).
        type: list
        elements: str
      max_latency_ms:
        description: Latency limit in milliseconds.
        type: float
      timeout:
        description: Seconds to wait for one answer.
        type: float
        default: 5
      wait_timeout:
        description: Overrides the module's O(wait_timeout) for this check.
        type: float
      follow_redirects:
        description: Follow redirects instead of judging the redirect itself.
        type: bool
        default: false
      return_json:
        description: Return the parsed JSON body of the last answer.
        type: bool
        default: false
  wait_timeout:
    description: Seconds to keep retrying a failing check; 0 tries once.
    type: float
    default: 0
  interval:
    description: First delay between retries, in seconds.
    type: float
    default: 0.5
  backoff:
    description: Factor by which the delay grows after each retry.
    type: float
    default: 1.5
  max_interval:
    description: Longest delay between retries, in seconds.
    type: float
    default: 5
  concurrency:
    description: Checks in flight at once.
    type: int
    default: 10
  ca_path:
    description: CA bundle to verify TLS certificates with.
    type: path
  validate_certs:
    description: Verify TLS certificates. Turning it off is reported as a warning.
    type: bool
    default: true
  fail_on_error:
    description: Fail the task when any check fails (the results are returned either way).
    type: bool
    default: true
requirements:
  - requests
  - jmespath (for json_equals and json_present)
"""

EXAMPLES = r"""
- name: Wait until the new colour is healthy and runs the release
  http_probe:
    wait_timeout: 60
    checks:
      - name: health
        url: http://127.0.0.1:18002/health
        json_equals: {status: true}
      - name: version
        url: http://127.0.0.1:18002/api/version
        json_equals: {version: "1.1.0"}

- name: Security headers and an authenticated API call through the load balancer
  http_probe:
    ca_path: /etc/ssl/erni/ca.crt
    checks:
      - name: security headers
        url: https://ki.erni-gruppe.ch/health
        response_headers:
          Strict-Transport-Security: max-age=31536000
          X-Frame-Options: DENY
          X-Content-Type-Options: nosniff
          Content-Security-Policy: ""
      - name: list models
        url: https://ki.erni-gruppe.ch/api/v1/models
        headers: {Authorization: "Bearer {{ smoke_token }}"}
        json_present: ["data[0].id"]
        max_latency_ms: 2000
"""

RETURN = r"""
checks:
  description: One result per check, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: The check's name., type: str}
    url: {description: The URL requested., type: str}
    method: {description: The HTTP method., type: str}
    ok: {description: Whether the check passed., type: bool}
    status: {description: HTTP status of the last answer, 0 when none came., type: int}
    latency_ms: {description: Latency of the last attempt in milliseconds., type: float}
    attempts: {description: Requests made., type: int}
    reason: {description: Why the check failed; null when it passed., type: str}
    json: {description: Parsed body, when return_json was set., type: raw, returned: when requested}
summary:
  description: Counts of checks (C(failed) alone would be read by Ansible as the task's outcome).
  returned: always
  type: dict
  contains:
    total: {description: Checks run., type: int}
    passed: {description: Checks that passed., type: int}
    failed: {description: Checks that failed., type: int}
elapsed_s:
  description: Seconds the whole call took.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_http import HAS_REQUESTS, REQUESTS_IMPORT_ERROR, run_checks, tls_verify

CHECK_SPEC = dict(
    name=dict(type="str"),
    url=dict(type="str", required=True),
    method=dict(type="str", default="GET", choices=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    headers=dict(type="dict", no_log=True),
    body=dict(type="str"),
    json=dict(type="raw"),
    status_code=dict(type="list", elements="int", default=[200]),
    json_equals=dict(type="dict"),
    json_present=dict(type="list", elements="str"),
    response_headers=dict(type="dict"),
    body_excludes=dict(type="list", elements="str", no_log=True),
    max_latency_ms=dict(type="float"),
    timeout=dict(type="float", default=5),
    wait_timeout=dict(type="float"),
    follow_redirects=dict(type="bool", default=False),
    return_json=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="dict", required=True, options=CHECK_SPEC,
                        mutually_exclusive=[["body", "json"]]),
            wait_timeout=dict(type="float", default=0),
            interval=dict(type="float", default=0.5),
            backoff=dict(type="float", default=1.5),
            max_interval=dict(type="float", default=5),
            concurrency=dict(type="int", default=10),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            fail_on_error=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=str(REQUESTS_IMPORT_ERROR))
    p = module.params
    for key in ("wait_timeout", "interval", "max_interval"):
        if p[key] < 0 or p[key] != p[key]:
            module.fail_json(msg=f"{key}={p[key]} must be a number of seconds, 0 or more")
    if p["backoff"] < 1:
        module.fail_json(msg=f"backoff={p['backoff']} must be 1 or more")
    if p["concurrency"] < 1:
        module.fail_json(msg=f"concurrency={p['concurrency']} must be at least 1")
    for i, check in enumerate(p["checks"]):
        if not check["url"].startswith(("http://", "https://")):
            module.fail_json(msg=f"checks[{i}].url {check['url']!r} is not an http(s) URL")
        for field in ("max_latency_ms", "timeout", "wait_timeout"):
            v = check.get(field)
            if v is not None and (v < 0 or v != v):
                module.fail_json(msg=f"checks[{i}].{field}={v} must be 0 or more")

    verify = tls_verify(p, module.warn, "server")

    t0 = time.monotonic()
    results = run_checks(p["checks"], verify=verify, concurrency=p["concurrency"],
                         wait_timeout=p["wait_timeout"], interval=p["interval"],
                         backoff=p["backoff"], max_interval=p["max_interval"])
    failed = [r for r in results if not r["ok"]]
    out = dict(changed=False, checks=results,
               summary=dict(total=len(results), passed=len(results) - len(failed), failed=len(failed)),
               elapsed_s=round(time.monotonic() - t0, 3))
    if failed and p["fail_on_error"]:
        summary = "; ".join(f"{r['name']}: {r['reason']}" for r in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        module.fail_json(msg=f"{len(failed)} of {len(results)} checks failed: {summary}{more}", **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
