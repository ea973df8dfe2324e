"""`env | env_check(required, may_be_empty, aliases)`: the checklist's "Environment Variables
Checklist" against a service's environment, where the service may know a variable by its own
name.

The checklist names variables (JWT_SECRET, LOG_LEVEL, ...) that ERNI-KI's services read under
other names (Open WebUI's WEBUI_SECRET_KEY, GLOBAL_LOG_LEVEL, ...). `aliases` maps a checklist
name to the names that stand for it; a required variable is set when it, or one of its aliases,
is set (and not empty, unless it is in `may_be_empty`). The result says which alias answered
each one, so the report can say where the checklist and the platform differ.
"""

from __future__ import annotations

from typing import Any


class EnvCheckError(ValueError):
    """A bad input, named. Not AnsibleFilterError: importing ansible.errors makes a process a
    controller, and modules run in the same process (the unit tests) then print their
    warnings instead of returning them; Ansible reports any filter's exception with its text."""


def env_check(env: dict[str, Any] | None, required: list[str], may_be_empty: list[str] | None = None,
              aliases: dict[str, list[str] | str] | None = None) -> dict[str, Any]:
    env = env or {}
    if not isinstance(env, dict):
        raise EnvCheckError(f"env_check: the environment must be a mapping, not {type(env).__name__}")
    optional = set(may_be_empty or [])
    missing: list[str] = []
    empty: list[str] = []
    via: dict[str, str] = {}
    for name in required:
        raw = (aliases or {}).get(name) or []
        names = [name, *([raw] if isinstance(raw, str) else list(raw))]
        present = [n for n in names if n in env]
        filled = [n for n in present if str(env[n] if env[n] is not None else "") != ""]
        if not present:
            missing.append(name if len(names) == 1 else f"{name} (or {', '.join(names[1:])})")
            continue
        if not filled and name not in optional:
            empty.append(present[0])
            continue
        chosen = (filled or present)[0]
        if chosen != name:
            via[name] = chosen
    said = [f"{k} as {v}" for k, v in via.items()]
    return {"missing": missing, "empty": empty, "via": via, "ok": not missing and not empty,
            "summary": (f"all {len(required)} set" + (f"; the platform's names: {', '.join(said)}" if said else ""))
            if not missing and not empty else
            "; ".join(p for p in (f"not set: {', '.join(missing)}" if missing else "",
                                  f"empty: {', '.join(empty)}" if empty else "") if p)}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"env_check": env_check}
