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
  - With O(prometheus_url), reads every vector selector of every rule's expression (with the
    promql-parser package) and asks Prometheus's series API (C(/api/v1/series)) how many series each
    matched during O(lookback). A selector matching nothing matters where it keeps the expression from
    ever having a sample. Selectors inside absent() and absent_over_time() are meant to match
    nothing and never count; neither do those inside vector() or scalar(), on the right of
    C(unless), or in one branch of an C(or) whose other branch matches.
  - Such a selector is asked about again without its label matchers one at a time, which tells the
    three cases below apart.
  - C(no_series), dead. The metric has no series, or none under the C(job) or C(instance) named (their
    values come from the scrape configuration, so an unseen one is a target nobody scrapes); the
    reason names the jobs (or instances) the metric exists for.
  - C(label_never_carried), dead. The metric has series but none carries the label selected (the
    stub_status nginx exporter's C(nginx_http_requests_total) has no C(status)).
  - C(may_fire), a warning whatever O(dead_rules) says. The label is carried, with other values so far
    (C(status=~"5..") where only 200s and 404s have been seen); the rule is right and its condition
    has not happened yet, so it must not block a deployment as a dead rule does.
  - C(sides_never_match), dead. A vector-vector operation other than C(and), C(or) and C(unless) whose
    two sides both have series at the evaluation time (instant queries at the end of the
    O(lookback) window) but no pair matching on the labels its matching uses, tested with
    count((LEFT) and on(LABELS) (RIGHT)) (ignoring() and the default alike, since C(and)
    matches as arithmetic does while a comparison may legitimately filter every pair); the reason
    shows each side's label sets. An operation with a side already found empty is not tested again.
  - Prometheus unreachable, or answering an error to a series lookup, fails the C(prometheus) check;
    a query Prometheus refuses to evaluate (HTTP 400 or 422) is a warning on its rule.
  - With O(test_files), runs C(promtool test rules) on each; a failing test file fails with the tail
    of promtool's output.
  - Read-only; runs in check mode and never reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  rule_files:
    description:
      - Prometheus rule files to check. An entry with C(*), C(?) or C([) is a pattern, as
        Prometheus's own C(rule_files) takes (C(conf/prometheus/rules/*.yml)); a pattern that
        matches no file fails, naming it.
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
  - promql-parser (0.12, reads the expressions)
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
        - C(pass); C(dead) when it can never fire (also with O(dead_rules=warn)); C(may_fire) when it
          cannot fire yet because a label value has not been seen; C(warn) when its selectors could not
          be read or looked up, or Prometheus refused a query testing it.
      type: str
    selectors:
      description: Its distinct vector selectors and the series each matched (null when not looked up).
      type: list
      elements: dict
    findings:
      description: Why it is dead or may fire, one entry per selector or operation to blame (empty on pass).
      type: list
      elements: dict
      contains:
        class:
          description: "C(no_series), C(label_never_carried), C(may_fire) or C(sides_never_match)."
          type: str
        subject: {description: "The selector, or the operation as PromQL.", type: str}
        label:
          description: The label in question (C(job) or C(instance) for C(no_series)); null for an operation.
          type: str
        values:
          description:
            - The label's values seen (C(may_fire)), the jobs or instances the metric exists for
              (C(no_series)), or the label names its series carry (C(label_never_carried)).
          type: list
          elements: str
        reason: {description: The finding in words., type: str}
        matching:
          description: "How the operation matches its sides, in words: on(job), ignoring(name),
            all labels but __name__."
          type: str
          returned: for sides_never_match
        left:
          description: Up to three label sets of the left side, on the labels the matching uses.
          type: list
          elements: dict
          returned: for sides_never_match
        right:
          description: The same for the right side.
          type: list
          elements: dict
          returned: for sides_never_match
    reason: {description: "Why it is dead, may fire or is a warning, naming the rule; null on pass.", type: str}
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
    - "One per rule file (C(rule_file:PATH)), one per dead rule (C(dead_rule:GROUP/NAME)), one per rule that
      may fire (C(may_fire:GROUP/NAME), a warning), one per rule whose selectors could not be read
      (C(selectors:GROUP/NAME), a warning) or whose test query Prometheus refused (C(rule_query:GROUP/NAME), a
      warning), one per test file (C(rule_test:PATH)), and with O(prometheus_url) one named C(prometheus)."
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: The check's name., type: str}
    status: {description: "C(pass), C(fail) or C(warn).", type: str}
    value:
      description: "Rules in the file; 0 (series or matching pairs) for a dead rule or one that may fire;
        promtool's exit code; selectors looked up."
      type: raw
    limit: {description: "What value should be (1 series or pair, exit code 0, every selector), or null.", type: raw}
    reason: {description: Why the check did not pass; null on pass., type: str}
window:
  description: The lookback window of the series lookups, UTC ISO 8601; the operations are queried at its end.
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
    may_fire: {description: "Rules that cannot fire yet: a label value they select has not been seen.", type: int}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_rules import (
    HAS_PROMQL_PARSER,
    HAS_REQUESTS,
    HAS_YAML,
    check_rule_files,
    find_promtool,
    parse_duration,
)


def expand_rule_files(entries: list[str]) -> list[str]:
    """Patterns (with *, ? or [) expanded in sorted order, as Prometheus expands rule_files."""
    import glob

    out: list[str] = []
    for entry in entries:
        if not any(c in entry for c in "*?["):
            out.append(entry)
            continue
        found = sorted(glob.glob(entry))
        if not found:
            raise ValueError(f"rule_files pattern {entry!r} matches no file")
        out += [f for f in found if f not in out]
    return out


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
    if not HAS_PROMQL_PARSER:
        module.fail_json(msg=missing_required_lib("promql-parser"))
    p = module.params
    if not p["rule_files"]:
        module.fail_json(msg="rule_files is empty: give at least one Prometheus rule file")
    try:
        p["rule_files"] = expand_rule_files(p["rule_files"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
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
