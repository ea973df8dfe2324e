"""controller_run: who this ansible-playbook run is, for deploy locks.

Returns one dict {controller, pid, started, id}: the controller's host name, the PID of the
ansible-playbook process (lookups run in a worker forked from it) and that process's start
time from /proc, so the id stays the same through every play of one run and differs between
runs, even when a PID is reused.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: controller_run
short_description: Identity of the running ansible-playbook process (host, PID, start), for deploy locks
description:
  - Returns a dict with C(controller) (host name), C(pid) (the ansible-playbook process),
    C(started) (its start time in clock ticks since boot, from /proc) and C(id) combining them.
  - The same for every task of one run; different for the next run.
options: {}
"""

EXAMPLES = r"""
- name: Who holds the lock
  ansible.builtin.debug:
    msg: "{{ lookup('controller_run') }}"
"""

RETURN = r"""
_raw:
  description: One dict with controller, pid, started and id.
  type: list
  elements: dict
"""

import os
import socket
from typing import Any

from ansible.plugins.lookup import LookupBase


def process_start(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in ticks since boot); '' where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def playbook_pid() -> int:
    """The ansible-playbook process: this worker's parent, or this process when not forked."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as fh:
            if b"ansible" in fh.read():
                return parent
    except OSError:
        pass
    return os.getpid()


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
        pid = playbook_pid()
        started = process_start(pid)
        host = socket.gethostname()
        return [{"controller": host, "pid": pid, "started": started, "id": f"{host}:{pid}:{started}"}]
