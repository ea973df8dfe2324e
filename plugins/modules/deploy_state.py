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
  - With O(upstream_file), also checks that the load balancer sends traffic where the state file
    says the release serves. The nginx C(upstream) block named O(upstream_name) must list exactly
    the server O(upstream_servers) gives for the recorded colour. A difference (a file edited by
    hand to another port, a lost switch) fails the task with both sides shown, before the deploy
    changes anything. Nothing is repaired, since which side is right is the operator's call.
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
  upstream_file:
    description: nginx file holding the upstream block of the blue-green switch; not checked when unset.
    type: path
  upstream_name:
    description: Name of the upstream block in O(upstream_file).
    type: str
  upstream_servers:
    description:
      - Server address (as written in the upstream block) of each colour, such as V(127.0.0.1:18001)
        for V(blue).
    type: dict
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
upstream_servers:
  description: The servers the upstream block lists (O(upstream_file) given and a colour recorded).
  returned: when the upstream was checked
  type: list
  elements: str
"""

import json
import os
import re
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


def upstream_servers(text: str, name: str) -> list[str] | None:
    """The servers of nginx's `upstream NAME { ... }` block in `text`; None when there is no such block.

    A small parser of our own: the block is the one the rollout writes (one `server ADDR ...;` per
    colour), and no maintained Python library parses nginx's configuration into its directives
    while keeping this one simple.
    """
    text = re.sub(r"#[^\n]*", "", text)
    block = re.search(r"\bupstream\s+" + re.escape(name) + r"\s*\{([^}]*)\}", text)
    if block is None:
        return None
    return re.findall(r"(?:^|[;{\s])server\s+([^\s;]+)", block.group(1))


def check_upstream(path: str, name: str, servers: dict[str, str], state: dict[str, Any],
                   state_path: str) -> tuple[list[str], str]:
    """The upstream's servers, and what differs from the state ('' when they agree)."""
    colour = state.get("colour")
    expected = servers.get(colour or "")
    release = state.get("release", "?")
    if expected is None:
        return [], f"the deploy state file {state_path} names colour {colour!r}, which has no server in " \
                   f"upstream_servers {sorted(servers)}"
    try:
        with open(path, encoding="utf-8") as fh:
            found = upstream_servers(fh.read(), name)
    except OSError as exc:
        return [], f"the load balancer's upstream file {path} cannot be read ({exc}), while {state_path} says " \
                   f"{release} serves on {colour} ({expected})"
    if found is None:
        return [], f"the load balancer's upstream file {path} has no upstream {name!r} block, while {state_path} " \
                   f"says {release} serves on {colour} ({expected})"
    if found != [expected]:
        return found, (f"the load balancer and the deploy state disagree: {path} (upstream {name}) sends traffic "
                       f"to {', '.join(found) or 'no server'}, while {state_path} says {release} serves on "
                       f"{colour} ({expected}). Nothing was changed: point the upstream back at {expected} and "
                       f"reload nginx (or run playbooks/rollback.yml), or correct the state file if the "
                       f"upstream is right")
    return found, ""


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
        return {}
    result: dict[str, Any] = {"changed": False, "exists": True, "state": state}
    p = module.params
    if p["upstream_file"] and state.get("colour"):
        found, difference = check_upstream(p["upstream_file"], p["upstream_name"], p["upstream_servers"] or {},
                                           state, path)
        result["upstream_servers"] = found
        if difference:
            module.fail_json(msg=difference, **result)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True},
                                          "required": {"type": "bool", "default": False},
                                          "upstream_file": {"type": "path"},
                                          "upstream_name": {"type": "str"},
                                          "upstream_servers": {"type": "dict"}},
                           required_by={"upstream_file": ("upstream_name", "upstream_servers")},
                           supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
