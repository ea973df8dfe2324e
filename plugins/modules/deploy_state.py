#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: read the target's record of what serves, and name the file when it is damaged.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploy_state
short_description: Read the target's state file (what serves, what a rollback returns to)
description:
  - Reads the JSON state file that the rollout writes after each switch (release, colour,
    image, digest, previous release and colour) and returns it checked.
  - A missing file is the first deploy (C(exists=false), an empty C(state)), unless
    O(required) is set.
  - A file that is not a JSON object, or whose fields have the wrong type, fails the task
    with the file's path, what is wrong with it and what to do, before any later task acts on
    a guess of what serves.
  - Read-only; the same in check mode.
version_added: "1.0.0"
author: erni-deploy
options:
  path:
    description: The state file on the target.
    type: path
    required: true
  required:
    description: Fail when the file is missing (the phases that inspect what serves).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Read what serves now
  deploy_state:
    path: "{{ deploy_root }}/state.json"
  register: _state
"""

RETURN = r"""
exists:
  description: Whether the file exists.
  returned: always
  type: bool
state:
  description: The file's object; empty when the file is missing.
  returned: always
  type: dict
"""

import json
import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

# The fields the rollouts write and the later phases read, with the types they may have.
FIELDS: dict[str, tuple[type, ...]] = {
    "release": (str,), "colour": (str,), "image": (str,), "digest": (str,), "updated": (str,),
    "previous_release": (str, type(None)), "previous_colour": (str, type(None)),
}

REMEDY = ("it records what serves and what a rollback returns to, so nothing is changed until it is "
          "right. Find what serves (the load balancer's upstream, `docker ps` or the Deployment), then "
          "write the file again as a JSON object such as "
          '{"release": "X.Y.Z", "colour": "blue", "previous_release": null, "previous_colour": null}, '
          "or move it aside to deploy as if nothing were recorded")


def check(text: str) -> tuple[dict[str, Any] | None, str]:
    """The state in `text`, or None and what is wrong with it."""
    try:
        state = json.loads(text)
    except ValueError as exc:
        return None, f"is not valid JSON ({exc})"
    if not isinstance(state, dict):
        return None, f"holds a JSON {type(state).__name__}, not an object"
    bad = [f"{key}={state[key]!r} is not {' or '.join('null' if t is type(None) else 'a string' for t in types)}"
           for key, types in FIELDS.items() if key in state and not isinstance(state[key], types)]
    if bad:
        return None, "has fields of the wrong type: " + "; ".join(bad)
    return state, ""


def run(module: AnsibleModule) -> dict[str, Any]:
    path = module.params["path"]
    if not os.path.exists(path):
        if module.params["required"]:
            module.fail_json(msg=f"the deploy state file {path} does not exist: nothing is recorded as serving "
                                 "on this target; deploy a release first")
        return {"changed": False, "exists": False, "state": {}}
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg=f"the deploy state file {path} cannot be read: {exc}")
    state, problem = check(text)
    if state is None:
        module.fail_json(msg=f"the deploy state file {path} {problem}: {REMEDY}")
    return {"changed": False, "exists": True, "state": state}


def main() -> None:
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True},
                                          "required": {"type": "bool", "default": False}},
                           supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
