#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: send a test alert to the Alertmanager webhook receiver and judge its answers.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: webhook_probe
short_description: Check that an Alertmanager webhook receiver accepts signed alerts, refuses the rest, and is fast
description:
  - >-
    Sends one alert in Alertmanager's webhook format (version 4) to an ERNI-KI-style receiver,
    signed with the shared secret, and checks that it is accepted with C(200 {"status": "success"}).
  - With O(negative_checks), sends the same body without credentials, with a wrong C(X-Signature)
    and (bearer mode) with a wrong bearer token; each must be refused with C(401).
  - Measures the round trip of the signed request against O(max_processing_ms).
  - A C(429) answer is reported as rate limiting (the receiver takes 10 webhooks a minute), not as
    an authentication failure.
  - Read-only for the deployment (the receiver logs one test alert); runs in check mode and never
    reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  url:
    description:
      - Base URL of the receiver, for example C(https://ki.example/) or C(http://127.0.0.1:9095).
    type: str
    required: true
  endpoint:
    description:
      - Which webhook route to call. C(generic) is C(POST /webhook), the others C(POST /webhook/<endpoint>).
    type: str
    default: critical
    choices: [generic, critical, warning, gpu, ai, database]
  secret:
    description:
      - The receiver's C(ALERTMANAGER_WEBHOOK_SECRET). At least 16 characters (the receiver refuses
        shorter ones); fewer than 32 gives a warning, as the checklist asks for 32 or more.
    type: str
    required: true
  auth_mode:
    description:
      - C(hmac) sends header C(X-Signature), the hex HMAC-SHA256 of the raw body keyed with O(secret).
      - "C(bearer) sends C(Authorization: Bearer <secret>), as Alertmanager's C(http_config) does."
    type: str
    default: hmac
    choices: [hmac, bearer]
  alert_name:
    description: Value of the alert's C(alertname) label.
    type: str
    default: DeploymentTest
  severity:
    description: Value of the alert's C(severity) label.
    type: str
    default: critical
    choices: [critical, warning, info, debug]
  status:
    description: Status of the alert and of the group.
    type: str
    default: firing
    choices: [firing, resolved]
  labels:
    description:
      - Labels added to the alert. C(alertname) and C(severity) come from O(alert_name) and O(severity).
    type: dict
    default: {}
  annotations:
    description: Annotations added to (or replacing) the default C(summary) and C(description).
    type: dict
    default: {}
  negative_checks:
    description: Also send the body unsigned, with a wrong signature and (bearer mode) a wrong bearer token.
    type: bool
    default: true
  max_processing_ms:
    description: Limit in milliseconds for the round trip of the signed request (the checklist's 1 s).
    type: float
    default: 1000
  timeout:
    description: Seconds to wait for each answer.
    type: float
    default: 10
  ca_path:
    description: CA bundle to verify the receiver's TLS certificate with.
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
notes:
  - Each run sends 3 requests (4 in bearer mode, 1 without O(negative_checks)); the receiver allows
    10 a minute.
"""

EXAMPLES = r"""
- name: Webhook endpoints accept alerts, verify signatures and answer within 1 s
  webhook_probe:
    url: http://127.0.0.1:9095
    endpoint: critical
    secret: "{{ vault_alertmanager_webhook_secret }}"

- name: The generic endpoint, the way Alertmanager itself authenticates
  webhook_probe:
    url: https://ki.erni-gruppe.ch/
    endpoint: generic
    auth_mode: bearer
    secret: "{{ vault_alertmanager_webhook_secret }}"
    ca_path: /etc/ssl/erni/ca.crt
    labels: {environment: production}
  register: webhook
"""

RETURN = r"""
checks:
  description:
    - One result per check, in this order, C(signed_accepted), C(unsigned_refused), C(bad_signature_refused),
      C(wrong_bearer_refused) (bearer mode), C(processing_time). The negative checks are left out without
      O(negative_checks).
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: The check's name., type: str}
    status: {description: "C(pass) or C(fail).", type: str}
    value:
      description:
        - The HTTP status (0 when no answer came), or for processing_time the milliseconds.
        - Null for a negative check not sent because the signed request got no answer or was rate limited.
      type: raw
    limit: {description: "The expected HTTP status, or for processing_time O(max_processing_ms).", type: raw}
    reason: {description: Why the check failed; null when it passed., type: str}
processing_ms:
  description: Round trip of the signed request in milliseconds; null when no answer came.
  returned: always
  type: float
endpoint_url:
  description: The URL the alerts were sent to.
  returned: always
  type: str
  sample: http://127.0.0.1:9095/webhook/critical
payload_alertname:
  description: The C(alertname) of the alert sent, to find it in the receiver's log.
  returned: always
  type: str
summary:
  description: Counts of checks (C(failed) alone would be read by Ansible as the task's outcome).
  returned: always
  type: dict
  contains:
    total: {description: Checks run., type: int}
    passed: {description: Checks that passed., type: int}
    failed: {description: Checks that failed., type: int}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_http import HAS_REQUESTS, REQUESTS_IMPORT_ERROR, tls_verify
from ansible.module_utils.erni_webhook import (
    AUTH_MODES,
    ENDPOINTS,
    MIN_SECRET_LENGTH,
    RECOMMENDED_SECRET_LENGTH,
    SEVERITIES,
    probe_receiver,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            endpoint=dict(type="str", default="critical", choices=list(ENDPOINTS)),
            secret=dict(type="str", required=True, no_log=True),
            auth_mode=dict(type="str", default="hmac", choices=list(AUTH_MODES)),
            alert_name=dict(type="str", default="DeploymentTest"),
            severity=dict(type="str", default="critical", choices=list(SEVERITIES)),
            status=dict(type="str", default="firing", choices=["firing", "resolved"]),
            labels=dict(type="dict", default={}),
            annotations=dict(type="dict", default={}),
            negative_checks=dict(type="bool", default=True),
            max_processing_ms=dict(type="float", default=1000),
            timeout=dict(type="float", default=10),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            fail_on_error=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=str(REQUESTS_IMPORT_ERROR))
    p = module.params
    if not p["url"].startswith(("http://", "https://")):
        module.fail_json(msg=f"url {p['url']!r} is not an http(s) URL: give the receiver's base URL, "
                             "for example http://127.0.0.1:9095")
    if len(p["secret"]) < MIN_SECRET_LENGTH:
        module.fail_json(msg=f"secret is shorter than {MIN_SECRET_LENGTH} characters, which the receiver "
                             "refuses: give the receiver's ALERTMANAGER_WEBHOOK_SECRET")
    if len(p["secret"]) < RECOMMENDED_SECRET_LENGTH:
        module.warn(f"secret has fewer than {RECOMMENDED_SECRET_LENGTH} characters; the checklist asks for "
                    f"{RECOMMENDED_SECRET_LENGTH} or more")
    if not p["alert_name"].strip():
        module.fail_json(msg="alert_name is empty: the receiver needs an alertname label")
    for key in ("alertname", "severity"):
        if key in p["labels"]:
            module.fail_json(msg=f"labels.{key} is set by the module: use option "
                                 f"{'alert_name' if key == 'alertname' else 'severity'} instead")
    for key in ("max_processing_ms", "timeout"):
        if not p[key] > 0:
            module.fail_json(msg=f"{key}={p[key]} must be a number above 0")

    verify = tls_verify(p, module.warn, "receiver")

    result = probe_receiver(p["url"], p["endpoint"], p["secret"], auth_mode=p["auth_mode"],
                            alert_name=p["alert_name"], severity=p["severity"], status=p["status"],
                            labels=p["labels"], annotations=p["annotations"],
                            negative_checks=p["negative_checks"], max_processing_ms=p["max_processing_ms"],
                            timeout=p["timeout"], verify=verify)
    checks = result["checks"]
    failed = [c for c in checks if c["status"] == "fail"]
    out = dict(changed=False, **result,
               summary=dict(total=len(checks), passed=len(checks) - len(failed), failed=len(failed)))
    if failed and p["fail_on_error"]:
        reasons = "; ".join(f"{c['name']}: {c['reason']}" for c in failed)
        module.fail_json(msg=f"{len(failed)} of {len(checks)} webhook checks failed at "
                             f"{result['endpoint_url']}: {reasons}", **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
