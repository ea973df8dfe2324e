#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: validate Prometheus alert rules and find the ones that can never fire.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: alert_rules_check
short_description: Validate Prometheus rule files, run their unit tests and find rules that can never fire
description:
  - Runs C(promtool check rules) on every file of O(rule_files); a file promtool refuses fails with
    promtool's error text.
  - With O(prometheus_url), reads every vector selector of every rule's expression and asks
    Prometheus's series API (C(/api/v1/series)) how many series each matched during O(lookback).
    A rule is dead (it can never fire) when a selector matching nothing keeps its expression from
    ever having a sample. Selectors inside C(absent()) and C(absent_over_time()) are meant to match
    nothing and never make a rule dead; neither do those inside C(vector()) or C(scalar()), on the
    right of C(unless), or in one branch of an C(or) whose other branch matches.
  - Prometheus unreachable, or answering an error, fails the C(prometheus) check.
  - With O(test_files), runs C(promtool test rules) on each; a failing test file fails with the tail
    of promtool's output.
  - Read-only; runs in check mode and never reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  rule_files:
    description: Prometheus rule files to check.
    type: list
    elements: path
    required: true
  prometheus_url:
    description:
      - Base URL of the Prometheus that evaluates these rules, for example C(http://127.0.0.1:9090).
        Enables the dead-rule check.
    type: str
  lookback:
    description: Window of the series lookup, as a Prometheus duration (C(30m), C(1h), C(1h30m)).
    type: str
    default: 1h
  evaluation_time:
    description: End of the lookback window, in Unix seconds. Defaults to now.
    type: float
  test_files:
    description: promtool rule unit-test files to run with C(promtool test rules).
    type: list
    elements: path
    default: []
  promtool:
    description: The promtool executable, a name looked up in C(PATH) or a path.
    type: str
    default: promtool
  bearer_token:
    description: Bearer token for Prometheus. Mutually exclusive with O(username).
    type: str
  username:
    description: User name for HTTP basic authentication to Prometheus.
    type: str
  password:
    description: Password for HTTP basic authentication to Prometheus.
    type: str
  ca_path:
    description: CA bundle to verify Prometheus's TLS certificate with.
    type: path
  validate_certs:
    description: Verify TLS certificates. Turning it off is reported as a warning.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each answer from Prometheus.
    type: float
    default: 10
  dead_rules:
    description: Whether a dead rule is a failed check (C(fail)) or a warning (C(warn)).
    type: str
    default: fail
    choices: [fail, warn]
  fail_on_error:
    description: Fail the task when any check fails (the results are returned either way).
    type: bool
    default: true
requirements:
  - promtool (ships with Prometheus)
  - PyYAML
  - requests (for O(prometheus_url))
"""

EXAMPLES = r"""
- name: Alert rules configured and tested
  alert_rules_check:
    rule_files:
      - /opt/erni-ki/conf/prometheus/alert_rules.yml
      - /opt/erni-ki/conf/prometheus/rules/gpu.yml
    test_files:
      - /opt/erni-ki/conf/prometheus/tests/alert_rules_test.yml
    prometheus_url: http://127.0.0.1:9091
    lookback: 6h

- name: Report rules that can never fire without failing the deployment
  alert_rules_check:
    rule_files: "{{ query('ansible.builtin.fileglob', 'files/prometheus/*.rules.yml') }}"
    prometheus_url: https://prometheus.ki.erni-gruppe.ch
    username: deploy
    password: "{{ vault_prometheus_password }}"
    dead_rules: warn
  register: rules
"""

RETURN = r"""
files:
  description: One entry per rule file.
  returned: always
  type: list
  elements: dict
  contains:
    file: {description: The path., type: str}
    valid: {description: Whether promtool accepted it., type: bool}
    rules: {description: Number of rules in it., type: int}
    reason: {description: "promtool's error; null when valid.", type: str}
rules:
  description: One entry per rule of the valid files.
  returned: always
  type: list
  elements: dict
  contains:
    file: {description: The rule file., type: str}
    group: {description: The rule group., type: str}
    name: {description: The alert's or recording rule's name., type: str}
    type: {description: "C(alert) or C(record).", type: str}
    expr: {description: The expression., type: str}
    status:
      description:
        - C(pass); C(dead) when it can never fire (also with O(dead_rules=warn));
          C(warn) when its selectors could not be read or looked up.
      type: str
    selectors:
      description: Its distinct vector selectors and the series each matched (null when not looked up).
      type: list
      elements: dict
    reason: {description: Why it is dead or a warning; null on pass., type: str}
tests:
  description: One entry per test file.
  returned: always
  type: list
  elements: dict
  contains:
    file: {description: The test file., type: str}
    status: {description: "C(pass) or C(fail).", type: str}
    output: {description: "The tail of promtool's output.", type: str}
checks:
  description:
    - "One per rule file (C(rule_file:PATH)), one per dead rule (C(dead_rule:GROUP/NAME)), one per rule whose
      selectors could not be read (C(selectors:GROUP/NAME), a warning), one per test file (C(rule_test:PATH)),
      and with O(prometheus_url) one named C(prometheus)."
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: The check's name., type: str}
    status: {description: "C(pass), C(fail) or C(warn).", type: str}
    value:
      description: "Rules in the file; 0 series for a dead rule; promtool's exit code; selectors looked up."
      type: raw
    limit: {description: "What value should be (1 series, exit code 0, every selector), or null.", type: raw}
    reason: {description: Why the check did not pass; null on pass., type: str}
window:
  description: The lookback window of the series lookup, UTC ISO 8601.
  returned: when prometheus_url is set
  type: dict
  sample: {start: "2026-11-27T09:00:00Z", end: "2026-11-27T10:00:00Z"}
summary:
  description: Counts of checks, and of dead rules (C(failed) alone would be read by Ansible as the task's outcome).
  returned: always
  type: dict
  contains:
    total: {description: Checks run., type: int}
    passed: {description: Checks that passed., type: int}
    failed: {description: Checks that failed., type: int}
    dead: {description: Rules that can never fire., type: int}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_rules import HAS_REQUESTS, HAS_YAML, check_rule_files, find_promtool, parse_duration


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            rule_files=dict(type="list", elements="path", required=True),
            prometheus_url=dict(type="str"),
            lookback=dict(type="str", default="1h"),
            evaluation_time=dict(type="float"),
            test_files=dict(type="list", elements="path", default=[]),
            promtool=dict(type="str", default="promtool"),
            bearer_token=dict(type="str", no_log=True),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="float", default=10),
            dead_rules=dict(type="str", default="fail", choices=["fail", "warn"]),
            fail_on_error=dict(type="bool", default=True),
        ),
        mutually_exclusive=[["bearer_token", "username"]],
        required_together=[["username", "password"]],
        supports_check_mode=True,
    )
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"))
    p = module.params
    if not p["rule_files"]:
        module.fail_json(msg="rule_files is empty: give at least one Prometheus rule file")
    promtool = find_promtool(p["promtool"])
    if promtool is None:
        module.fail_json(msg=f"promtool {p['promtool']!r} was not found: install promtool (it ships with "
                             "Prometheus) or set promtool to its path")
    try:
        parse_duration(p["lookback"])
    except ValueError as exc:
        module.fail_json(msg=f"lookback: {exc}")
    if not p["timeout"] > 0:
        module.fail_json(msg=f"timeout={p['timeout']} must be a number of seconds above 0")
    verify: bool | str = True
    if p["prometheus_url"]:
        if not HAS_REQUESTS:
            module.fail_json(msg=missing_required_lib("requests"))
        if not p["prometheus_url"].startswith(("http://", "https://")):
            module.fail_json(msg=f"prometheus_url {p['prometheus_url']!r} is not an http(s) URL: give "
                                 "Prometheus's base URL, for example http://127.0.0.1:9090")
        if not p["validate_certs"]:
            module.warn("TLS certificate verification is off: a wrong or forged Prometheus would pass")
            verify = False
        elif p["ca_path"]:
            verify = p["ca_path"]
    else:
        ignored = [key for key in ("bearer_token", "username", "evaluation_time", "ca_path") if p[key] is not None]
        if ignored:
            module.warn(f"{', '.join(ignored)} ignored: they only matter with prometheus_url")

    result = check_rule_files(p["rule_files"], promtool=promtool, prometheus_url=p["prometheus_url"],
                              lookback=p["lookback"], evaluation_time=p["evaluation_time"],
                              test_files=p["test_files"], dead_rules=p["dead_rules"], verify=verify,
                              timeout=p["timeout"], bearer_token=p["bearer_token"], username=p["username"],
                              password=p["password"])
    failed = [c for c in result["checks"] if c["status"] == "fail"]
    if failed and p["fail_on_error"]:
        reasons = "; ".join(f"{c['name']}: {str(c['reason'])[:300]}" for c in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        module.fail_json(msg=f"{len(failed)} of {len(result['checks'])} rule checks failed: {reasons}{more}",
                         changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
