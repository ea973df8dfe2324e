#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: one deploy at a time per target, and a safe way back from a killed run.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploy_lock
short_description: Take or release the deploy lock of a target (owner, start, expiry)
description:
  - Keeps one deploy at a time on a target with a lock file holding the holder's run id,
    owner, controller, PID, start time and expiry. The file is created atomically
    (O_CREAT|O_EXCL), so two runs can never both take it.
  - "C(state=present): takes the lock; the same run taking it again only extends it. A lock
    held by another run makes the task fail with a message naming the holder, unless that lock
    is stale: past its expiry, or held from this same machine by a process that no longer
    exists (a run killed with SIGKILL). A stale lock is taken over and reported in C(recovered)."
  - C(state=absent) releases the lock when this run holds it; another run's lock is left alone.
  - Check mode reports what would happen and changes nothing.
version_added: "1.0.0"
author: erni-deploy
options:
  path:
    description: The lock file on the target; its directory is made (0750) when missing.
    type: path
    required: true
  state:
    description: C(present) takes the lock, C(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  run_id:
    description: Identity of this run; the same for every task of one ansible-playbook run.
    type: str
    required: true
  owner:
    description: Who runs the deploy (user, AWX job), for the message a second run gets.
    type: str
    default: ""
  controller:
    description: Host name of the machine that runs ansible-playbook.
    type: str
    default: ""
  pid:
    description: PID of the ansible-playbook process; with O(controller), lets a lock from a killed run be recognised.
    type: int
    default: 0
  ttl:
    description: Seconds the lock lasts before it is stale (taken again by the run, it is extended).
    type: float
    default: 3600
  purpose:
    description: What the lock is taken for (the phase), recorded in the file.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Take the deploy lock
  deploy_lock:
    path: /opt/erni-deploy/production/deploy.lock
    run_id: "{{ lookup('controller_run').id }}"
    controller: "{{ lookup('controller_run').controller }}"
    pid: "{{ lookup('controller_run').pid }}"
    owner: "{{ lookup('ansible.builtin.env', 'USER') }}"
    ttl: 3600
"""

RETURN = r"""
lock:
  description: The lock as held after the task (empty after a release).
  returned: always
  type: dict
recovered:
  description: The stale lock that was taken over, with why it was stale; null when none.
  returned: always
  type: dict
"""

import json
import os
import socket
import time
from datetime import datetime, timezone
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_lock(path: str) -> dict[str, Any] | None:
    """The lock's content; {} for a file that is not a lock we wrote (half-written, foreign)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def why_stale(lock: dict[str, Any], now: float) -> str | None:
    """Why a lock held by another run may be taken over; None while it must be respected."""
    if not lock:
        return "the lock file is unreadable or not a deploy lock"
    try:
        expires = float(lock.get("expires_t", 0))
    except (TypeError, ValueError):
        expires = 0.0
    if expires <= now:
        return f"it expired at {lock.get('expires_at', '?')}"
    try:
        pid = int(lock.get("pid") or 0)
    except (TypeError, ValueError):
        pid = 0
    if lock.get("controller") and lock.get("controller") == socket.gethostname() and pid:
        if not process_alive(pid):
            return f"its run (pid {pid} on {lock['controller']}) no longer exists"
    return None


def describe(lock: dict[str, Any]) -> str:
    return (f"{lock.get('owner') or '?'} (run {lock.get('run_id', '?')}, pid {lock.get('pid', '?')} on "
            f"{lock.get('controller') or '?'}, {lock.get('purpose') or 'deploy'}) since "
            f"{lock.get('started_at', '?')}, until {lock.get('expires_at', '?')}")


def write_new(path: str, content: dict[str, Any]) -> bool:
    """Publish the lock whole: written to a private file first, then linked to its name, which
    fails when the name exists. Nobody ever reads a half-written lock. False when another run
    published first."""
    tmp = f"{path}.{os.getpid()}.new"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(content, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o640)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def replace(path: str, content: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(content, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def take_aside(path: str, stale: dict[str, Any], aside: str) -> bool:
    """Remove the stale lock, and only it: if another run replaced it in the meantime, put that
    run's lock back (link fails rather than overwrite) and answer False."""
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    moved = read_lock(aside)
    if moved != stale:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def run(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    path, now = p["path"], time.time()
    if p["ttl"] is None or not 0 < p["ttl"] < 10 * 365 * 86400:
        module.fail_json(msg=f"ttl must be a positive number of seconds (under ten years), got {p['ttl']!r}")
    directory = os.path.dirname(path) or "."
    if p["state"] == "present" and not os.path.isdir(directory) and not module.check_mode:
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
        except OSError as exc:
            module.fail_json(msg=f"cannot make the lock's directory {directory!r}: {exc.strerror}")
    current = read_lock(path)

    if p["state"] == "absent":
        if current is None or current.get("run_id") != p["run_id"]:
            return {"changed": False, "lock": current or {}, "recovered": None}
        if not module.check_mode:
            os.unlink(path)
        return {"changed": True, "lock": {}, "recovered": None}

    mine = {"run_id": p["run_id"], "owner": p["owner"], "controller": p["controller"], "pid": p["pid"],
            "purpose": p["purpose"], "expires_t": now + p["ttl"], "expires_at": _iso(now + p["ttl"])}
    if current is not None and current.get("run_id") == p["run_id"]:
        lock = {**current, **mine, "started_at": current.get("started_at", _iso(now))}
        if not module.check_mode:
            replace(path, lock)
        return {"changed": False, "lock": lock, "recovered": None}

    recovered = None
    if current is not None:
        reason = why_stale(current, now)
        if reason is None:
            module.fail_json(msg=f"another deploy holds the lock {path}: {describe(current)}. "
                                 "Wait for it to finish; a lock from a run that was killed is taken over "
                                 "once its process is gone or it expires.", lock=current, recovered=None)
        recovered = {**current, "stale_because": reason}
    lock = {**mine, "started_at": _iso(now)}
    if module.check_mode:
        return {"changed": True, "lock": lock, "recovered": recovered}
    if recovered is not None and not take_aside(path, current or {}, f"{path}.stale-{os.getpid()}"):
        holder = read_lock(path) or {}
        module.fail_json(msg=f"another deploy took the lock {path} first: {describe(holder)}",
                         lock=holder, recovered=None)
    if not write_new(path, lock):
        holder = read_lock(path) or {}
        module.fail_json(msg=f"another deploy took the lock {path} first: {describe(holder)}",
                         lock=holder, recovered=None)
    if recovered is not None:
        module.warn(f"took over the deploy lock {path} of {describe(recovered)}: {recovered['stale_because']}")
    return {"changed": True, "lock": lock, "recovered": recovered}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "run_id": {"type": "str", "required": True},
            "owner": {"type": "str", "default": ""},
            "controller": {"type": "str", "default": ""},
            "pid": {"type": "int", "default": 0},
            "ttl": {"type": "float", "default": 3600},
            "purpose": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
