#!/usr/bin/python
# erni-deploy: check a TLS endpoint's certificate (chain, name, expiry).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tls_check
short_description: Check the certificate a TLS endpoint presents
description:
  - Connects once without verification to read the peer certificate, so that even an untrusted,
    expired or misnamed certificate is described, then verifies it separately.
  - "Checks, each reported as C({name, status, value, limit, reason}):
    C(reachable) (a TLS handshake succeeds; value = seconds it took),
    C(chain) (the chain verifies against O(ca_path) or the system trust store),
    C(hostname) (O(server_name) is among the certificate's DNS or IP address names; the subject's
    common name is not used, as in current browsers),
    C(days_left) (days until expiry, at least O(min_days_left)) and
    C(not_yet_valid) (the certificate's validity has started)."
  - When the endpoint cannot be reached, only the failed C(reachable) check is returned and the
    certificate facts are null.
  - An expired certificate also fails C(chain), as it does for every client.
  - Read-only; runs in check mode and never reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  host:
    description: Host name or IP address to connect to.
    type: str
    required: true
  port:
    description: TCP port (1-65535).
    type: int
    default: 443
  server_name:
    description:
      - The name the certificate must be valid for, also sent as SNI (not sent for an IP address).
      - Defaults to O(host).
    type: str
  ca_path:
    description:
      - PEM file with the CA certificates to verify the chain with.
      - Without it, the system trust store is used.
    type: path
  min_days_left:
    description: Days the certificate must still be valid for; 0 or more.
    type: float
    default: 30
  timeout:
    description: Seconds to wait for the connection and for each handshake; more than 0.
    type: float
    default: 5
  fail_on_error:
    description: Fail the task when any check fails (the results are returned either way).
    type: bool
    default: true
requirements:
  - cryptography >= 42
"""

EXAMPLES = r"""
- name: TLS certificate of the load balancer is valid and not about to expire
  tls_check:
    host: ki.erni-gruppe.ch
    min_days_left: 30

- name: Sandbox nginx, verified against the sandbox's own CA, by IP address
  tls_check:
    host: 127.0.0.1
    port: 8443
    ca_path: "{{ playbook_dir }}/.sandbox/tls/ca.crt"

- name: Internal endpoint reached by address but named differently; report, do not fail
  tls_check:
    host: 10.0.0.12
    server_name: ki.erni-gruppe.ch
    fail_on_error: false
  register: tls
"""

RETURN = r"""
checks:
  description: One result per check, in the order reachable, chain, hostname, days_left, not_yet_valid.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: The check's name., type: str}
    status: {description: "C(pass), C(fail) or C(warn).", type: str}
    value:
      description: >-
        What was measured: handshake seconds (reachable), C(ok) or the verification error (chain),
        O(server_name) (hostname), days left rounded to 0.1 (days_left), not_before (not_yet_valid).
      type: raw
    limit:
      description: >-
        What it was compared with: O(timeout), the CA used, the certificate's names,
        O(min_days_left), the time of the check.
      type: raw
    reason: {description: Why the check failed; null when it passed., type: str}
subject: {description: Subject in RFC 4514 form; null when unreachable., returned: always, type: str}
issuer: {description: Issuer in RFC 4514 form; null when unreachable., returned: always, type: str}
san:
  description: subjectAltName entries (DNS names, IP addresses, ...) as text; null when unreachable.
  returned: always
  type: list
  elements: str
not_before:
  description: Start of validity (UTC ISO 8601).
  returned: always
  type: str
  sample: "2025-01-01T00:00:00Z"
not_after:
  description: End of validity (UTC ISO 8601).
  returned: always
  type: str
  sample: "2025-04-01T00:00:00Z"
days_left: {description: "Days until not_after, rounded to 0.1; negative once expired.", returned: always, type: float}
serial: {description: Serial number in lower-case hex., returned: always, type: str}
fingerprint_sha256:
  description: SHA-256 fingerprint of the certificate, colon-separated upper-case hex.
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
    warned: {description: Checks that warned., type: int}
msg: {description: "One line on the outcome, naming failed checks and their reasons.", returned: always, type: str}
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_tls import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY, check_endpoint


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 443},
            "server_name": {"type": "str"},
            "ca_path": {"type": "path"},
            "min_days_left": {"type": "float", "default": 30},
            "timeout": {"type": "float", "default": 5},
            "fail_on_error": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(CRYPTOGRAPHY_IMPORT_ERROR))
    p = module.params
    if not p["host"].strip():
        module.fail_json(msg="host is empty: give the host name or IP address to connect to")
    if not 1 <= p["port"] <= 65535:
        module.fail_json(msg=f"port={p['port']} must be between 1 and 65535")
    if not p["min_days_left"] >= 0:  # also refuses NaN
        module.fail_json(msg=f"min_days_left={p['min_days_left']} must be a number of days, 0 or more")
    if not p["timeout"] > 0:
        module.fail_json(msg=f"timeout={p['timeout']} must be a number of seconds greater than 0")
    if p["server_name"] is not None and not p["server_name"].strip():
        module.fail_json(msg="server_name is empty: leave it out to use host, or give the certificate's name")
    if p["ca_path"] and not os.path.isfile(p["ca_path"]):
        module.fail_json(msg=f"ca_path {p['ca_path']} is not a file: point it at the PEM file of the issuing CA")

    host = p["host"].strip()
    try:
        result = check_endpoint(host, p["port"], server_name=(p["server_name"] or host).strip(),
                                ca_path=p["ca_path"], min_days_left=p["min_days_left"], timeout=p["timeout"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    failed = [c for c in result["checks"] if c["status"] == "fail"]
    where = f"[{host}]:{p['port']}" if ":" in host else f"{host}:{p['port']}"
    if failed:
        reasons = "; ".join(f"{c['name']}: {c['reason']}" for c in failed)
        msg = f"{len(failed)} of {len(result['checks'])} TLS checks failed for {where}: {reasons}"
    else:
        msg = f"all {len(result['checks'])} TLS checks passed for {where}"
    if failed and p["fail_on_error"]:
        module.fail_json(msg=msg, changed=False, **result)
    module.exit_json(msg=msg, changed=False, **result)


if __name__ == "__main__":
    main()
