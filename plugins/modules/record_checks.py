#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: turn values computed in a play into checks the report reads.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: record_checks
short_description: Judge computed values as checklist checks, for the report
description:
  - Takes a list of checks computed in the play (for example from command results) and
    returns them under C(checks), where the report callback reads them, one line each.
  - Fails when any check has a status listed in O(fail_on), naming those checks.
  - Changes nothing; runs in check mode.
version_added: "1.0.0"
author: erni-deploy
options:
  checks:
    description: The checks.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The check's name.
        type: str
        required: true
      status:
        description: Its result.
        type: str
        choices: [pass, warn, fail, skipped, inconclusive, nodata]
        required: true
      value:
        description: What was measured.
        type: raw
      limit:
        description: What it was measured against.
        type: raw
      reason:
        description: Why it did not pass.
        type: str
  fail_on:
    description: Statuses that fail the task.
    type: list
    elements: str
    default: [fail]
"""

EXAMPLES = r"""
- name: "Check: code quality gate"
  record_checks:
    checks:
      - {name: unit tests, status: pass, value: "152 passed", limit: "rc 0"}
      - {name: lint, status: fail, value: "rc 1", limit: "rc 0", reason: "E501 line too long"}
"""

RETURN = r"""
checks:
  description: The checks as given, with reason null where none was given.
  returned: always
  type: list
  elements: dict
summary:
  description: Number of checks in each status, and the total.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

STATUSES = ["pass", "warn", "fail", "skipped", "inconclusive", "nodata"]


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                status=dict(type="str", required=True, choices=STATUSES),
                value=dict(type="raw"),
                limit=dict(type="raw"),
                reason=dict(type="str"),
            )),
            fail_on=dict(type="list", elements="str", default=["fail"]),
        ),
        supports_check_mode=True,
    )
    bad = [s for s in module.params["fail_on"] if s not in STATUSES]
    if bad:
        module.fail_json(msg=f"fail_on has unknown statuses {bad}; use {STATUSES}")
    checks = module.params["checks"]
    summary = {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}
    summary["total"] = len(checks)
    failing = [c for c in checks if c["status"] in module.params["fail_on"]]
    if failing:
        module.fail_json(msg="; ".join(f"{c['name']}: {c['reason'] or c['status']}" for c in failing),
                         changed=False, checks=checks, summary=summary)
    module.exit_json(changed=False, checks=checks, summary=summary)


if __name__ == "__main__":
    main()
