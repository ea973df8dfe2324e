#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy tests: a module that returns what it is given, to feed the report callback
# results of a known shape (check_value, checks lists, confirmations) without a real system.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: report_echo
short_description: Return the given data as the task's result (tests only)
description:
  - Returns O(data) as the result's keys; fails with O(msg) when O(fail) is true.
version_added: "1.0.0"
author: erni-deploy
options:
  data:
    description: Keys and values of the result.
    type: dict
    default: {}
  fail:
    description: Fail the task.
    type: bool
    default: false
  msg:
    description: The result's message.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: "Check: coverage"
  report_echo:
    data: {check_value: 91.5, check_limit: 85}
"""

RETURN = r"""
msg:
  description: The given message.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - Ansible's layout


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(data=dict(type="dict", default={}), fail=dict(type="bool", default=False),
                           msg=dict(type="str", default="")),
        supports_check_mode=True,
    )
    result = dict(module.params["data"])
    if module.params["fail"]:
        module.fail_json(msg=module.params["msg"] or "failed", **result)
    module.exit_json(changed=False, msg=module.params["msg"], **result)


if __name__ == "__main__":
    main()
