# -*- coding: utf-8 -*-
# erni-deploy: the evidence of a run, written by a callback so that it survives failed plays.
#
# THE CONTRACT between playbooks and this report (what the plugin reads; nothing else):
#
# Phase = play. A play is named "<Phase>: <what>" ("Staging: deploy and validate"). The phase
#   is the part before the first colon (the whole name when there is none); plays with the
#   same phase name form one phase, in the order they first ran. Phase status: "failed" when
#   one of its checks failed or one of its tasks failed (a task with ignore_errors that is not
#   a check does not count), "skipped" when no task ran (fact gathering, meta tasks and role
#   argument validation do not count), "passed" otherwise.
# Check = task named "Check: <name>". ok/changed -> pass; failed -> fail, also when
#   ignore_errors; skipped -> skipped; unreachable -> fail.
#   * A result carrying a list under `checks` (our modules return one; items have name,
#     status (pass/warn/fail/inconclusive/nodata/skipped) or ok (bool), value, limit, reason)
#     becomes one check per item, "<name>: <item name>"; the task is not listed separately
#     (unless it failed while none of its items did: then "<name>" is a failed check too).
#   * Otherwise value/limit/reason come from the result keys check_value, check_limit,
#     check_reason; the reason falls back to `msg` when the task failed.
#   * A looped Check task gives one check per item, "<name>: <item label>".
#   * An include_role/include_tasks named "Check: ..." is one check over the tasks it runs:
#     fail when one of them failed (or one of their checks failed), skipped when none ran.
#   * Every result is kept: a rescue that runs after a failed check does not hide it.
# Confirmations (steps only a person can do) come from the extra variable `confirmations`
#   (or, from AWX surveys, extra variables named confirm_<what>)
#   (a dict: {"oncall_notified": "Anna, 2026-11-27"}) and from tasks named "Confirm: <what>"
#   whose result has confirmed_by and confirmed_at (top level or, for set_fact, in
#   ansible_facts; a pause task's user_input counts as confirmed_by). Both are recorded.
# Report data that is not a check is published with ansible.builtin.set_stats (per_host:
#   false, aggregate: true) under the key `erni_report`: environment, release,
#   previous_release, outcome, backup {file, sha256, verified}, rollback {triggered, reason,
#   detected_at, restored_at, seconds}, baseline_comparison [{metric, staging, production,
#   status, unit}], notifications, and anything else (kept under "published").
#   release/environment fall back to the extra vars release_version / deploy_environment,
#   then to the deploy_environment of the first host of the first play that has one.
# outcome: erni_report.outcome when set; else rolled_back when erni_report.rollback says a
#   rollback was triggered; else aborted when a host failed or the run was interrupted;
#   else dry_run for a --check run; else deployed.
#
# THE OUTPUT: <report_dir>/<20261127T120000Z>-<environment>-<release>/ with report.json,
# report.md and junit.xml, and <report_dir>/latest pointing at it (replaced atomically).
# Written at the end of every playbook (also after a failed play), and at exit or on
# SIGTERM/SIGINT when the run stops before its end. Every string written goes through a
# redaction pass that replaces the value of every secret-named variable (see
# _is_secret_name) with ********. Results of no_log tasks are only ever read in the
# censored form Ansible hands to callbacks.
#
# Imports come before DOCUMENTATION here (unlike our modules): ansible-doc reads the string
# wherever it is, and the project's lint config exempts only plugins/modules/ from E402.

from __future__ import annotations

import atexit
import getpass
import json
import math
import os
import re
import shutil
import signal
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ansible import context
from ansible.plugins.callback import CallbackBase
from ansible.release import __version__ as ANSIBLE_VERSION
from ansible.template import Templar

DOCUMENTATION = r"""
name: erni_report
type: notification
short_description: Write the deployment's evidence (JSON, Markdown, JUnit) when the playbook ends
description:
  - Collects every task result of the run and writes, when each playbook ends (also after a
    failed play, and when the run is interrupted), a report directory
    C(<report_dir>/<UTC time>-<environment>-<release>/) holding C(report.json),
    C(report.md) and C(junit.xml), and points C(<report_dir>/latest) at it.
  - "Phases are plays named C(<Phase>: <what>); checks are tasks named C(Check: <name>),
    or the items of a C(checks) list in their result; confirmations come from the extra
    variable C(confirmations) and from tasks named C(Confirm: <what>); other report data is
    published with C(ansible.builtin.set_stats) under the key C(erni_report). The full
    contract is at the top of the plugin's source."
  - Every string written is redacted. The values of variables whose names end in
    C(_password), C(_passwd), C(_pass), C(_passphrase), C(_secret), C(_token), C(_key),
    C(slack_webhook_url), C(discord_webhook_url) or C(teams_webhook_url), or start with
    C(vault_), found in the extra vars and in every host's variables (also as keys of
    dictionaries), are replaced by C(********) wherever they appear, in any letter case.
    Names that say the value is not secret (C(*_version_key), C(*_public_key), ...) are
    left alone, and so are values shorter than 4 characters.
  - Needs enabling, for example C(callbacks_enabled = erni_report) in C(ansible.cfg).
version_added: "1.0.0"
author: erni-deploy
requirements:
  - enable in configuration (callbacks_enabled)
options:
  report_dir:
    description:
      - Directory that receives one sub-directory per run and the C(latest) link.
      - When unset, C(reports/) next to the (first) playbook.
      - A relative path in C(ansible.cfg) is relative to that file's directory; from the
        environment, relative to the current directory.
    type: path
    env:
      - name: ERNI_REPORT_DIR
    ini:
      - section: erni_report
        key: report_dir
"""

EXAMPLES = r"""
# ansible.cfg
# [defaults]
# callbacks_enabled = erni_report
# [erni_report]
# report_dir = reports

# One check per item of the module's `checks` list ("staging endpoints respond: health", ...):
- name: "Check: staging endpoints respond"
  http_probe:
    checks:
      - {name: health, url: "{{ public_url }}/health"}
      - {name: models, url: "{{ public_url }}/api/v1/models"}

# One check; a module may add check_value, check_limit and check_reason to its result:
- name: "Check: the CHANGELOG has an entry for the release"
  ansible.builtin.assert:
    that: release_version in changelog
    success_msg: "entry for {{ release_version }} found"

# A step only a person can do, confirmed in the run:

- name: "Confirm: QA sign-off"
  ansible.builtin.set_fact:
    confirmed_by: "{{ qa_engineer }}"
    confirmed_at: "{{ now(utc=true).strftime('%Y-%m-%dT%H:%M:%SZ') }}"

- name: Publish the backup for the report
  ansible.builtin.set_stats:
    data:
      erni_report:
        backup: {file: /backups/db.sql.gz, sha256: "{{ backup_sha256 }}", verified: true}
    per_host: false
    aggregate: true
"""

MASK = "********"
CHECK_PREFIX = "Check: "
CONFIRM_PREFIX = "Confirm: "
OUTCOMES = ("deployed", "rolled_back", "aborted")
_FAILING = ("fail",)
_NOT_MEASURED = ("inconclusive", "nodata")
_STATUS_ALIASES = {"ok": "pass", "passed": "pass", "success": "pass", "succeeded": "pass",
                   "warning": "warn", "failed": "fail", "failure": "fail", "error": "fail",
                   "skip": "skipped", "no_data": "nodata"}

# Secret variable names: a suffix names what the value is, not what it is used for, so
# "compose_rollout_version_key" (a dictionary key) and "*_public_key" are not secrets.
# Chat webhook URLs carry their token in the path; other webhook URLs (a receiver's
# address) are not secret.
_SECRET_SUFFIXES = ("_password", "_passwd", "_pass", "_passphrase", "_secret", "_token", "_key",
                    "slack_webhook_url", "discord_webhook_url", "teams_webhook_url")
_SECRET_NAMES = frozenset({"password", "passwd", "passphrase", "secret", "token"})
_NOT_SECRET_SUFFIXES = ("_version_key", "_baseline_key", "_sort_key", "_lookup_key", "_label_key",
                        "_public_key", "_pub_key")
# Variables that hold other variables or facts: never walked for secret-named keys.
_SKIP_VARS = frozenset({"hostvars", "vars", "groups", "group_names", "ansible_facts", "ansible_local",
                        "omit", "play_hosts", "ansible_play_hosts", "ansible_play_hosts_all",
                        "ansible_play_batch", "role_names", "ansible_role_names"})
_MIN_SECRET_LEN = 4  # shorter values cannot be removed from text without destroying it
_SECRET_WINDOW = 8  # the shortest piece of a longer secret that is masked wherever it appears
_BOOKKEEPING_ACTIONS = frozenset({"meta", "ansible.builtin.meta", "ansible.legacy.meta",
                                  "gather_facts", "ansible.builtin.gather_facts", "ansible.legacy.gather_facts",
                                  "setup", "ansible.builtin.setup", "ansible.legacy.setup",
                                  "validate_argument_spec", "ansible.builtin.validate_argument_spec"})
_INCLUDE_ACTIONS = frozenset({"include_role", "ansible.builtin.include_role", "ansible.legacy.include_role",
                              "include_tasks", "ansible.builtin.include_tasks", "ansible.legacy.include_tasks"})
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _is_secret_name(name: str) -> bool:
    n = name.lower()
    if n.endswith(_NOT_SECRET_SUFFIXES):
        return False
    return n.startswith("vault_") or n in _SECRET_NAMES or n.endswith(_SECRET_SUFFIXES)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a).total_seconds(), 3)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _phase_of(play_name: str) -> tuple[str, str]:
    """'Staging: deploy and validate' -> ('Staging', 'deploy and validate')."""
    head, sep, rest = play_name.partition(":")
    if not sep:
        return play_name.strip() or "(unnamed play)", ""
    return head.strip() or "(unnamed play)", rest.strip()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "unknown"


def _short(text: Any, limit: int = 2000) -> str:
    s = _ANSI.sub("", str(text)).strip()
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (results are native already; this guards the rest)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def _message(res: Mapping[str, Any]) -> str:
    """Why a task failed, from its (already censored) result."""
    if res.get("censored"):
        return "the output was hidden (no_log)"
    msg = res.get("msg")
    parts: list[str] = []
    if msg:
        parts.append(str(msg))
    stderr = res.get("stderr")
    if isinstance(stderr, str) and stderr.strip() and (not msg or "non-zero return code" in str(msg)):
        parts.append(stderr.strip()[-500:])
    loop = res.get("results")
    if not parts and isinstance(loop, list):
        for i, item in enumerate(loop):
            if isinstance(item, Mapping) and item.get("failed"):
                label = f"item {i + 1}" if item.get("censored") else item.get("_ansible_item_label", f"item {i + 1}")
                parts.append(f"{label}: {_message(item)}")
    if not parts and res.get("unreachable"):
        parts.append("host unreachable")
    return _short("; ".join(parts) or "failed without a message")


def _item_status(item: Mapping[str, Any]) -> str:
    status = item.get("status")
    if isinstance(status, str) and status.strip():
        s = status.strip().lower()
        return _STATUS_ALIASES.get(s, s)
    if isinstance(item.get("ok"), bool):
        return "pass" if item["ok"] else "fail"
    return "inconclusive"


def _secrets_utils() -> Any:
    """plugins/module_utils/erni_secrets.py, the one redaction implementation: from the collection
    when the repository is installed as erni.deploy, else from this checkout."""
    try:
        from ansible_collections.erni.deploy.plugins.module_utils import erni_secrets
        return erni_secrets
    except ImportError:
        pass
    import importlib.util
    import sys
    name = "erni_report_secrets"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parent.parent / "module_utils" / "erni_secrets.py")
        if spec is None or spec.loader is None:
            raise ImportError("plugins/module_utils/erni_secrets.py not found beside the callback")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class Redactor:
    """Masks every piece of a known secret, _SECRET_WINDOW characters or longer, in any letter
    case (a secret lower-cased into a slug is still the secret), and shorter secrets where they
    occur whole: a secret split by quoting (its tail after a quote) cannot slip through.
    `whole` values (a chat webhook URL: its scheme, host and short path words are no secret,
    its token is) are masked only where they occur whole."""

    def __init__(self, secrets: Iterable[str], whole: Iterable[str] = ()) -> None:
        self._window = _secrets_utils().Redactor(secrets, window=_SECRET_WINDOW, ignore_case=True,
                                                 min_short=_MIN_SECRET_LEN, whole=whole)

    def text(self, s: str) -> str:
        return self._window.text(s)

    def deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_PARTS = re.compile(r"[/?&=#@:]")
_URL_TOKEN_LEN = 16  # a URL's path or query part this long is its token


def _secret_variants(value: Any, out: set[str], whole: set[str]) -> None:
    """Every string form of a secret value worth removing from text: into `out`, whose pieces
    are masked too, or, for a URL, into `whole` (masked only whole), with its token-like parts
    (long path or query parts, a password in its user part) into `out`."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        s = str(value)
        if len(s) >= 6:
            out.add(s)
        return
    if isinstance(value, Mapping):
        for v in value.values():
            _secret_variants(v, out, whole)
        return
    if isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _secret_variants(v, out, whole)
        return
    s = str(value)
    forms = {form for form in {s, s.strip(), quote(s, safe=""), json.dumps(s)[1:-1]} if len(form) >= _MIN_SECRET_LEN}
    if _URL.match(s.strip()) and "\n" not in s.strip():
        whole.update(forms)
        authority, _, path = _URL.sub("", s.strip()).partition("/")
        password = authority.rpartition("@")[0].partition(":")[2]
        if len(password) >= _MIN_SECRET_LEN:
            out.add(password)
        out.update(part for part in _URL_PARTS.split(path) if len(part) >= _URL_TOKEN_LEN)
        return
    out.update(forms)
    lines = [ln.strip() for ln in s.strip().splitlines()]
    if len(lines) > 1:  # a key file: its lines may show up one by one
        out.update(ln for ln in lines if len(ln) >= 16 and not ln.startswith("-----"))


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "erni_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pid = os.getpid()
        self._started: datetime | None = None
        self._playbooks: list[str] = []
        self._basedir: str | None = None
        self._phases: dict[str, dict[str, Any]] = {}
        self._phase: dict[str, Any] | None = None
        self._play_what = ""
        self._play_name = ""
        self._last_play: Any = None
        self._checks: list[dict[str, Any]] = []
        self._task_order: dict[str, int] = {}  # task uuid -> first seen, to list checks task by task
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}  # include-checks by (uuid, host)
        self._failures: list[dict[str, Any]] = []
        self._warnings: list[dict[str, Any]] = []
        self._confirmations: list[dict[str, Any]] = []
        self._published: dict[str, Any] = {}  # set_stats data as seen in results (fallback)
        self._counts: dict[str, dict[str, int]] = {}
        self._starts: dict[tuple[str, str], tuple[datetime, Any, dict[str, Any] | None, str, str]] = {}
        self._secrets: set[str] = set()
        self._whole_secrets: set[str] = set()  # URLs: masked whole only
        self._extra_vars: dict[str, Any] = {}
        self._inventory_env: str | None = None
        self._run_dir: Path | None = None
        self._dirty = False
        self._interrupted: str | None = None
        self._lock = threading.RLock()
        atexit.register(self._at_exit)
        self._chain_signals()

    # ---------------------------------------------------------------- interruption
    def _chain_signals(self) -> None:
        """Write what we have on SIGTERM/SIGINT, then let Ansible's own handler act."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)

            def handler(num: int, frame: Any, _previous: Any = previous) -> None:
                if os.getpid() == self._pid:
                    self._interrupted = signal.Signals(num).name
                    if num == signal.SIGTERM:  # Ansible re-raises SIGTERM and dies: no atexit
                        self._safe_write(None)
                if callable(_previous):
                    _previous(num, frame)
                elif _previous == signal.SIG_DFL:
                    signal.signal(num, signal.SIG_DFL)
                    os.kill(os.getpid(), num)

            try:
                signal.signal(signum, handler)
            except (ValueError, OSError):  # pragma: no cover - not the main thread after all
                return

    def _at_exit(self) -> None:
        if os.getpid() == self._pid and self._dirty:
            if self._interrupted is None:
                self._interrupted = "the run ended before the playbook did"
            self._safe_write(None)

    # ---------------------------------------------------------------- playbook and plays
    def v2_playbook_on_start(self, playbook: Any) -> None:
        if self._started is None:
            self._started = _now()
        name = getattr(playbook, "_file_name", None) or "playbook"
        self._playbooks.append(os.path.relpath(name) if os.path.isabs(name) and
                               not os.path.relpath(name).startswith("..") else name)
        if self._basedir is None:
            self._basedir = getattr(playbook, "_basedir", None) or os.getcwd()
        self._dirty = True

    def v2_playbook_on_play_start(self, play: Any) -> None:
        now = _now()
        if self._started is None:
            self._started = now
        name = str(play.get_name() or "").strip()
        phase_name, what = _phase_of(name)
        phase = self._phases.get(phase_name)
        if phase is None:
            phase = self._phases[phase_name] = {"name": phase_name, "plays": [], "started": now, "ended": now,
                                                "ran": 0, "task_failures": 0}
        phase["plays"].append(name)
        phase["ended"] = now
        self._phase, self._play_what, self._play_name = phase, what, name
        self._last_play = play
        self._dirty = True
        try:
            self._scan_play(play)
        except Exception as ex:  # never let the evidence stop the deployment
            self._display.warning(f"erni_report: could not read the play's variables for redaction: {ex}")

    # ---------------------------------------------------------------- variables and secrets
    def _scan_play(self, play: Any) -> None:
        vm = play.get_variable_manager()
        if vm is None:
            return
        loader = getattr(play, "_loader", None) or getattr(vm, "_loader", None)
        self._extra_vars = dict(getattr(vm, "extra_vars", {}) or {})
        sources: list[tuple[Any, Mapping[str, Any]]] = [(None, vm.get_vars(play=play))]
        inventory = getattr(vm, "_inventory", None)
        hosts = list(inventory.get_hosts()) if inventory is not None else []
        for host in hosts:
            sources.append((host, vm.get_vars(play=play, host=host)))
        for _host, variables in sources:
            templar = Templar(loader=loader, variables=variables)
            for name, raw in variables.items():
                self._scan_var(templar, str(name), raw, 0)
        if self._inventory_env is None and inventory is not None:
            try:
                play_hosts = inventory.get_hosts(play.hosts)
            except Exception:
                play_hosts = []
            for host in play_hosts:
                variables = vm.get_vars(play=play, host=host)
                if "deploy_environment" in variables:
                    try:
                        env = Templar(loader=loader, variables=variables).template(variables["deploy_environment"])
                    except Exception as ex:
                        self._display.vvv(f"erni_report: deploy_environment of {host}: {ex}")
                        continue
                    if env:
                        self._inventory_env = str(env)
                        break

    def _scan_var(self, templar: Any, name: str, raw: Any, depth: int) -> None:
        if depth > 8 or name in _SKIP_VARS:
            return
        if _is_secret_name(name):
            try:
                value = templar.template(raw)
            except Exception:  # undefined, or a lookup that fails here: nothing to redact
                return
            _secret_variants(value, self._secrets, self._whole_secrets)
            return
        if depth == 0 and name.startswith("ansible_") and isinstance(raw, Mapping):
            return  # facts
        if isinstance(raw, Mapping):
            for k, v in raw.items():
                self._scan_var(templar, str(k), v, depth + 1)
        elif isinstance(raw, list | tuple):
            for v in raw:
                if isinstance(v, Mapping):
                    for k, vv in v.items():
                        self._scan_var(templar, str(k), vv, depth + 1)

    # ---------------------------------------------------------------- task results
    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._starts[(host.get_name(), task._uuid)] = (_now(), task, self._phase, self._play_what, self._play_name)

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "changed" if result.is_changed() else "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed", ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

    def _record(self, result: Any, state: str, ignored: bool = False) -> None:
        try:
            with self._lock:
                self._record_unsafe(result, state, ignored)
        except Exception as ex:  # pragma: no cover - defensive: evidence must not break a run
            self._display.warning(f"erni_report: could not record a result: {ex}")

    def _record_unsafe(self, result: Any, state: str, ignored: bool) -> None:
        now = _now()
        self._dirty = True
        host = result.host.get_name()
        task = result.task
        res: Mapping[str, Any] = result.result
        name = str(result.task_fields.get("name") or task.get_name() or task.action)
        started, _t, phase, what, play_name = self._starts.pop(
            (host, task._uuid), (now, task, self._phase, self._play_what, self._play_name))
        phase = phase if phase is not None else self._ensure_phase()
        action = str(getattr(task, "action", "") or "")
        bookkeeping = bool(getattr(task, "implicit", False)) or action in _BOOKKEEPING_ACTIONS

        counts = self._counts.setdefault(host, {"ok": 0, "changed": 0, "failed": 0, "unreachable": 0,
                                                "skipped": 0, "rescued": 0, "ignored": 0})
        if state == "changed":
            counts["ok"] += 1
            counts["changed"] += 1
        else:
            counts["ignored" if state == "failed" and ignored else state] += 1
        phase["ended"] = now
        if state != "skipped" and not bookkeeping:
            phase["ran"] += 1
        failed = state in ("failed", "unreachable")
        message = _message(res) if failed else None
        # The includes named "Check: ..." this task runs in (innermost first).
        groups: list[dict[str, Any]] = []
        parent = getattr(task, "_parent", None)
        while parent is not None:
            group = self._groups.get((str(getattr(parent, "_uuid", "")), host))
            if group is not None:
                groups.append(group)
            parent = getattr(parent, "_parent", None)
        if failed:
            if not ignored:
                phase["task_failures"] += 1
            in_check = name[len(CHECK_PREFIX):].strip() if name.startswith(CHECK_PREFIX) else None
            self._failures.append({"task": name, "host": host, "message": message, "phase": phase["name"],
                                   "play": play_name, "check": in_check or (groups[0]["name"] if groups else None),
                                   "ignored": ignored, "unreachable": state == "unreachable", "at": _iso(now)})
        for w in res.get("warnings") or []:
            text = w.get("msg") if isinstance(w, Mapping) else w
            self._warnings.append({"task": name, "host": host, "message": _short(text, 1000)})
        stats = res.get("ansible_stats")
        if isinstance(stats, Mapping) and not stats.get("per_host"):
            report = (stats.get("data") or {}).get("erni_report")
            if isinstance(report, Mapping):
                self._published = _merge(self._published, dict(report))

        base = {"host": host, "phase": phase["name"], "play": what, "task": name,
                "started": _iso(started), "ended": _iso(now), "duration_s": _seconds(started, now),
                "_order": self._task_order.setdefault(task._uuid, len(self._task_order))}
        new_checks: list[dict[str, Any]] = []
        if name.startswith(CHECK_PREFIX):
            check_name = name[len(CHECK_PREFIX):].strip()
            if action in _INCLUDE_ACTIONS and not failed and state != "skipped":
                self._groups[(task._uuid, host)] = {
                    **base, "name": check_name, "status": "skipped", "value": None, "limit": None,
                    "reason": None, "_ran": 0, "_failed": False}
                self._checks.append(self._groups[(task._uuid, host)])
            else:
                new_checks = self._checks_from(check_name, state, res, base, message)
                self._checks.extend(new_checks)
        elif name.startswith(CONFIRM_PREFIX) and state in ("ok", "changed"):
            self._confirm_from_task(name[len(CONFIRM_PREFIX):].strip(), res, host, now)

        # Tasks inside an include named "Check: ..." decide that check.
        for group in groups:
            group["ended"] = _iso(now)
            group["duration_s"] = _seconds(_parse_time(group["started"]), now)
            if state != "skipped" and not bookkeeping:
                group["_ran"] += 1
            inner_fail = (failed and not ignored) or any(c["status"] == "fail" for c in new_checks)
            if inner_fail and not group["_failed"]:
                group["_failed"] = True
                first = next((c for c in new_checks if c["status"] == "fail"), None)
                group["reason"] = f"{name}: {message or (first or {}).get('reason') or 'failed'}"

    def _ensure_phase(self) -> dict[str, Any]:
        now = _now()
        if "(no play)" not in self._phases:
            self._phases["(no play)"] = {"name": "(no play)", "plays": [], "started": now, "ended": now,
                                         "ran": 0, "task_failures": 0}
        return self._phases["(no play)"]

    def _checks_from(self, check_name: str, state: str, res: Mapping[str, Any], base: dict[str, Any],
                     message: str | None) -> list[dict[str, Any]]:
        task_status = {"ok": "pass", "changed": "pass", "failed": "fail", "unreachable": "fail",
                       "skipped": "skipped"}[state]
        out: list[dict[str, Any]]
        items = res.get("checks")
        if isinstance(items, list) and items and all(isinstance(i, Mapping) for i in items):
            out = [self._item_check(f"{check_name}: {i.get('name', n + 1)}", i, base) for n, i in enumerate(items)]
            if task_status == "fail" and not any(c["status"] == "fail" for c in out):
                # The task failed for a reason none of its items shows (a gate that fails on
                # "inconclusive", a timeout): the check must not look passed.
                out.append({**base, "name": check_name, "status": "fail", "value": None, "limit": None,
                            "reason": message})
            return out
        loop = res.get("results")
        if isinstance(loop, list) and loop and all(isinstance(r, Mapping) for r in loop) and state != "unreachable":
            out = []
            for n, r in enumerate(loop):
                label = (f"item {n + 1}" if r.get("censored")
                         else str(r.get("_ansible_item_label", r.get("item", n + 1))))
                label = label if len(label) <= 80 else label[:79] + "…"
                sub = r.get("checks")
                if isinstance(sub, list) and sub and all(isinstance(i, Mapping) for i in sub):
                    out.extend(self._item_check(f"{check_name}: {label}: {i.get('name', k + 1)}", i, base)
                               for k, i in enumerate(sub))
                    continue
                r_state = ("failed" if r.get("failed") else "skipped" if r.get("skipped")
                           else "changed" if r.get("changed") else "ok")
                out.append(self._plain_check(f"{check_name}: {label}", r_state, r, base,
                                             _message(r) if r_state == "failed" else None))
            return out
        check = self._plain_check(check_name, state, res, base, message)
        check["status"] = task_status
        return [check]

    @staticmethod
    def _plain_check(name: str, state: str, res: Mapping[str, Any], base: dict[str, Any],
                     message: str | None) -> dict[str, Any]:
        status = {"ok": "pass", "changed": "pass", "failed": "fail", "unreachable": "fail",
                  "skipped": "skipped"}[state]
        reason = res.get("check_reason")
        if reason is None and status == "fail":
            reason = message
        if reason is None and status == "skipped":
            cond = res.get("false_condition")
            reason = f"condition false: {cond}" if cond else res.get("skip_reason")
        check = {**base, "name": name, "status": status, "value": _jsonable(res.get("check_value")),
                 "limit": _jsonable(res.get("check_limit")), "reason": _short(reason) if reason else None}
        detail = res.get("msg")
        if status == "pass" and isinstance(detail, str) and detail and detail != "All assertions passed" \
                and check["value"] is None and not res.get("censored"):
            check["detail"] = _short(detail, 500)
        return check

    @staticmethod
    def _item_check(name: str, item: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        check = {**base, "name": name, "status": _item_status(item), "value": _jsonable(item.get("value")),
                 "limit": _jsonable(item.get("limit")),
                 "reason": _short(item["reason"]) if item.get("reason") else None}
        for key in ("unit", "baseline"):
            if item.get(key) not in (None, ""):
                check[key] = _jsonable(item[key])
        started, ended = _parse_time(item.get("started")), _parse_time(item.get("ended"))
        if started and ended:
            check.update(started=_iso(started), ended=_iso(ended), duration_s=_seconds(started, ended))
        return check

    def _confirm_from_task(self, what: str, res: Mapping[str, Any], host: str, now: datetime) -> None:
        facts: Mapping[str, Any] = res["ansible_facts"] if isinstance(res.get("ansible_facts"), Mapping) else {}
        by = res.get("confirmed_by") or facts.get("confirmed_by") or res.get("user_input")
        if not by:
            return
        at = res.get("confirmed_at") or facts.get("confirmed_at") or _iso(now)
        self._confirmations.append({"what": what, "confirmed_by": _short(by, 200),
                                    "confirmed_at": str(at), "source": "task", "host": host})

    # ---------------------------------------------------------------- the end
    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._safe_write(stats)
        self._dirty = False  # written, or failed with a warning: exit has nothing to add

    def _safe_write(self, stats: Any) -> None:
        try:
            with self._lock:
                path = self._write(stats)
        except Exception as ex:
            self._display.warning(f"erni_report: could not write the report: {ex}")
            return
        self._display.display(f"erni_report: evidence in {path}")

    def _write(self, stats: Any) -> Path:
        if self._last_play is not None:
            try:  # facts and variables set during the run may hold new secrets
                self._scan_play(self._last_play)
            except Exception as ex:
                self._display.warning(f"erni_report: could not re-read variables for redaction: {ex}")
        for v in self._extra_vars.items():
            if _is_secret_name(str(v[0])):
                _secret_variants(v[1], self._secrets, self._whole_secrets)
        redactor = Redactor(self._secrets, self._whole_secrets)
        report = redactor.deep(self._build(stats, redactor))

        root = self._report_root()
        if self._run_dir is None:
            stamp = (self._started or _now()).strftime("%Y%m%dT%H%M%SZ")
            base = f"{stamp}-{_safe_name(report['environment'])}-{_safe_name(report['release'])}"
            root.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                candidate = root / (base if n == 1 else f"{base}-{n}")
                try:
                    candidate.mkdir(mode=0o750)
                except FileExistsError:
                    continue
                self._run_dir = candidate
                break
            else:  # pragma: no cover
                raise RuntimeError(f"no free report directory name under {root}")
        run_dir = self._run_dir
        assert run_dir is not None
        report["directory"] = str(run_dir.resolve())
        report["files"] = {"json": "report.json", "markdown": "report.md", "junit": "junit.xml"}
        # playbooks publish attachments under keys starting with "attachments" (set_stats
        # replaces lists when it aggregates, so each kind has its own key)
        published = report.get("published", {})
        items = [i for k in sorted(published) if k.startswith("attachments")
                 for i in (published.pop(k) or []) if isinstance(i, Mapping)]
        report["attachments"] = _attach(items, run_dir)

        _write_file(run_dir / "report.json", redactor.text(json.dumps(report, indent=2, ensure_ascii=False) + "\n"))
        _write_file(run_dir / "report.md", redactor.text(render_markdown(report)))
        _write_file(run_dir / "junit.xml", redactor.text(render_junit(report)))
        link = root / "latest"
        tmp_link = root / f".latest.{os.getpid()}.tmp"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(run_dir.name, tmp_link)
        os.replace(tmp_link, link)
        self._dirty = False
        return run_dir

    def _report_root(self) -> Path:
        try:
            configured = self.get_option("report_dir")
        except KeyError:
            configured = None
        if configured:
            return Path(os.path.expanduser(str(configured)))
        return Path(self._basedir or os.getcwd()) / "reports"

    def _build(self, stats: Any, redactor: Redactor) -> dict[str, Any]:
        ended = _now()
        published: dict[str, Any] = dict(self._published)
        if stats is not None:
            custom = getattr(stats, "custom", {}) or {}
            run_data = (custom.get("_run") or {}).get("erni_report")
            if isinstance(run_data, Mapping):
                published = dict(run_data)
            for host, data in custom.items():  # per_host by mistake: still evidence
                if host != "_run" and isinstance(data, Mapping) and isinstance(data.get("erni_report"), Mapping):
                    published = _merge(dict(data["erni_report"]), published)
        published = _jsonable(published)

        hosts: dict[str, dict[str, int]] = {}
        if stats is not None and getattr(stats, "processed", None):
            for host in sorted(stats.processed):
                s = stats.summarize(host)
                hosts[host] = {"ok": s.get("ok", 0), "changed": s.get("changed", 0), "failed": s.get("failures", 0),
                               "unreachable": s.get("unreachable", 0), "skipped": s.get("skipped", 0),
                               "rescued": s.get("rescued", 0), "ignored": s.get("ignored", 0)}
        else:
            hosts = {h: dict(c) for h, c in sorted(self._counts.items())}

        # Task by task, and within a task host by host (results arrive in any order).
        ordered = sorted(enumerate(self._checks), key=lambda ic: (ic[1]["_order"], ic[1]["host"], ic[0]))
        checks = [{k: v for k, v in c.items() if not k.startswith("_")} for _i, c in ordered]
        for c, (_i, raw) in zip(checks, ordered, strict=True):
            if "_ran" in raw:  # an include named "Check: ...": decided by what it ran
                c["status"] = "fail" if raw["_failed"] else ("pass" if raw["_ran"] else "skipped")
        failures = list(self._failures)
        if self._interrupted:
            for (host, _uuid), (started, task, phase, what, _play) in self._starts.items():
                name = str(getattr(task, "name", "") or task.get_name())
                msg = f"interrupted ({self._interrupted}) before it finished"
                ph = (phase or self._ensure_phase())["name"]
                is_check = name.startswith(CHECK_PREFIX)
                failures.append({"task": name, "host": host, "message": msg, "phase": ph, "play": _play,
                                 "check": name[len(CHECK_PREFIX):].strip() if is_check else None,
                                 "ignored": False, "unreachable": False, "at": _iso(ended)})
                if name.startswith(CHECK_PREFIX):
                    checks.append({"host": host, "phase": ph, "play": what, "task": name,
                                   "name": name[len(CHECK_PREFIX):].strip(), "status": "fail", "value": None,
                                   "limit": None, "reason": msg, "started": _iso(started), "ended": _iso(ended),
                                   "duration_s": _seconds(started, ended)})

        phases = []
        for ph in self._phases.values():
            ph_checks = [c for c in checks if c["phase"] == ph["name"]]
            failed = (any(c["status"] in _FAILING for c in ph_checks) or ph["task_failures"] > 0
                      or any(f["phase"] == ph["name"] and not f["ignored"] for f in failures))
            ran = ph["ran"] > 0 or any(c["status"] != "skipped" for c in ph_checks)
            status = "failed" if failed else ("passed" if ran else "skipped")
            phases.append({"name": ph["name"], "status": status, "plays": ph["plays"],
                           "started": _iso(ph["started"]), "ended": _iso(ph["ended"]),
                           "duration_s": _seconds(ph["started"], ph["ended"]),
                           "checks": [{k: v for k, v in c.items() if k != "phase"} for c in ph_checks]})

        extra = self._extra_vars
        environment = (published.get("environment") or extra.get("deploy_environment")
                       or self._inventory_env or "unknown")
        release = published.get("release") or extra.get("release_version") or "unknown"
        rollback = _rollback(published.get("rollback"))
        host_failed = any(h["failed"] or h["unreachable"] for h in hosts.values())
        outcome = published.get("outcome")
        if not outcome:
            if rollback["triggered"]:
                outcome = "rolled_back"
            elif host_failed or self._interrupted:
                outcome = "aborted"
            elif context.CLIARGS and context.CLIARGS.get("check", False):
                outcome = "dry_run"   # --check: nothing was deployed
            else:
                outcome = "deployed"

        confirmations: dict[str, dict[str, Any]] = {}
        given = extra.get("confirmations")
        if isinstance(given, str):
            try:
                given = json.loads(given)
            except ValueError:
                given = {}
        # Keys are made from redacted text: a slug is lower case, which would hide a secret
        # from the redaction pass.
        if not isinstance(given, Mapping):
            given = {}
        # AWX surveys cannot build a dict: their answers come as confirm_<what> variables.
        given = {**{k[len("confirm_"):]: v for k, v in extra.items()
                    if isinstance(k, str) and k.startswith("confirm_") and v not in (None, "")},
                 **given}
        for key, value in given.items():
            confirmations[_slug(redactor.text(str(key)))] = _confirmation(str(key), value)
        for entry in self._confirmations:
            key = _slug(redactor.text(entry["what"]))
            if key in confirmations:
                confirmations[key]["task"] = entry
            else:
                confirmations[key] = dict(entry)

        known = {"environment", "release", "previous_release", "outcome", "backup", "rollback",
                 "baseline_comparison", "notifications"}
        backup: Mapping[str, Any] = published["backup"] if isinstance(published.get("backup"), Mapping) else {}
        summary = {s: sum(1 for c in checks if c["status"] == s)
                   for s in ("pass", "warn", "fail", "skipped", "inconclusive", "nodata")}
        summary["total"] = len(checks)
        started = self._started or ended
        return {
            "schema": 1,
            "environment": str(environment),
            "release": str(release),
            "previous_release": published.get("previous_release"),
            "outcome": str(outcome),
            "interrupted": self._interrupted,
            "check_mode": bool(context.CLIARGS.get("check", False)) if context.CLIARGS else False,
            "started": _iso(started),
            "ended": _iso(ended),
            "duration_s": _seconds(started, ended),
            "playbook": self._playbooks[0] if self._playbooks else None,
            "playbooks": list(self._playbooks),
            "controller": {"user": _user(), "host": socket.gethostname(), "ansible": ANSIBLE_VERSION},
            "summary": {"checks": summary, "phases": {s: sum(1 for p in phases if p["status"] == s)
                                                      for s in ("passed", "failed", "skipped")}},
            "phases": phases,
            "backup": {"file": None, "sha256": None, "verified": None, **dict(backup)},
            "rollback": rollback,
            "confirmations": confirmations,
            "baseline_comparison": _comparison(published.get("baseline_comparison")),
            "notifications": published.get("notifications") or {},
            "failures": failures,
            "warnings": list(self._warnings),
            "hosts": hosts,
            "published": {k: v for k, v in published.items() if k not in known},
        }


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """b over a, dictionaries merged recursively (as set_stats aggregates them)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _attach(items: Any, run_dir: Path) -> list[dict[str, Any]]:
    """Copy files the playbooks published (charts, diagnostics) into the report directory."""
    out: list[dict[str, Any]] = []
    if not isinstance(items, list):
        return out
    for item in items:
        if not isinstance(item, Mapping) or not item.get("path"):
            continue
        src = Path(str(item["path"]))
        entry: dict[str, Any] = {"title": str(item.get("title") or src.name), "file": src.name}
        try:
            if src.is_dir():
                shutil.copytree(src, run_dir / src.name, dirs_exist_ok=True)
            else:
                shutil.copy2(src, run_dir / src.name)
        except OSError as exc:
            entry["error"] = f"not copied: {exc.strerror or exc}"
        out.append(entry)
    return out


def _rollback(data: Any) -> dict[str, Any]:
    data = dict(data) if isinstance(data, Mapping) else {}
    triggered = bool(data.get("triggered", bool(data)))
    detected, restored = _parse_time(data.get("detected_at")), _parse_time(data.get("restored_at"))
    seconds = data.get("seconds")
    if seconds is None and detected and restored:
        seconds = _seconds(detected, restored)
    return {**data, "triggered": triggered, "reason": data.get("reason"), "detected_at": data.get("detected_at"),
            "restored_at": data.get("restored_at"), "seconds": seconds}


def _confirmation(key: str, value: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"what": key, "source": "extra_vars"}
    if isinstance(value, Mapping):
        entry["confirmed_by"] = value.get("confirmed_by") or value.get("by") or value.get("name")
        entry["confirmed_at"] = value.get("confirmed_at") or value.get("at") or value.get("date")
        entry["value"] = _jsonable(value)
        return entry
    text = str(value).strip()
    entry["value"] = text
    name, sep, when = text.rpartition(",")
    if sep and name.strip() and when.strip():
        entry["confirmed_by"], entry["confirmed_at"] = name.strip(), when.strip()
    else:
        entry["confirmed_by"], entry["confirmed_at"] = text, None
    return entry


def _comparison(rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        return []
    out = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        status = row.get("status")
        out.append({**dict(row), "metric": row.get("metric"), "staging": row.get("staging"),
                    "production": row.get("production"),
                    "status": _STATUS_ALIASES.get(str(status).lower(), str(status).lower()) if status else None})
    return out


def _write_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -------------------------------------------------------------------- rendering for people
def _fmt(value: Any, unit: Any = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, Mapping | list):
        text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    else:
        text = str(value)
    if unit and isinstance(value, int | float) and not isinstance(value, bool):
        u = str(unit)
        if u in ("ratio", "fraction"):
            return f"{value * 100:.4g}%"
        return f"{text}{u}" if u in ("%", "ms", "s") else f"{text} {u}"
    return text


def _migration_md(add: Any, migration: Any) -> None:
    """Per environment: the pending migrations, how long writes were held, and a failure's undo."""
    if not isinstance(migration, Mapping) or not migration:
        return
    add("## Migrations")
    add("")
    for env, m in sorted(migration.items()):
        if not isinstance(m, Mapping):
            continue
        pending = m.get("pending") or []
        line = f"- {_md(str(env))}: " + (f"pending {_md(', '.join(map(str, pending)))}" if pending else "none pending")
        if m.get("held"):
            line += f"; writes held (503 with Retry-After) for {_fmt(m.get('hold_seconds'))} s"
        if m.get("failed"):
            undo: Mapping[str, Any] = m["undo"] if isinstance(m.get("undo"), Mapping) else {}
            line += f"; failed: {_md(str(m.get('error') or ''))[:300]}"
            changed = _md(", ".join(map(str, undo.get("changed_tables") or [])))
            if undo.get("restored"):
                line += f"; undone with `{_md(str(undo.get('file') or ''))}` ({changed} had changed)"
            elif undo and not changed:
                line += "; the database equalled the snapshot, nothing restored"
            elif undo:
                line += f"; not undone (writes not held): {_md(str(undo.get('differences') or ''))}"
        add(line)
    add("")


def _canary_md(add: Any, canary: Any, gate: Any) -> None:
    """The canary's steps: per step and metric, the counts, the test, its p-value and the effect."""
    steps = canary.get("steps") if isinstance(canary, Mapping) else None
    if not steps:
        return
    add("## Canary steps (the new colour against the old one, same window)")
    add("")
    add(f"Source: {_md(canary.get('source') or '-')}. A metric fails only when the difference is significant "
        "(p < 0.02) and larger than its allowed increase; too few requests is inconclusive.")
    add("")
    add("| Step | Metric | Verdict | Requests new / old | New | Old | Effect | Allowed | p-value | Test |")
    add("| ---- | ------ | ------- | ------------------ | --- | --- | ------ | ------- | ------- | ---- |")
    for st in steps:
        if not isinstance(st, Mapping):
            continue
        window = "" if st.get("baseline_window") != "adjacent" else " (old: window before)"
        metrics = st.get("metrics")
        for m in metrics if isinstance(metrics, list) else []:
            if not isinstance(m, Mapping):
                continue
            ratio = m.get("unit") == "ratio"

            def val(v: Any, ratio: bool = ratio) -> str:
                if not isinstance(v, int | float) or isinstance(v, bool):
                    return "-"
                return f"{v * 100:.2f}%" if ratio else f"{v * 1000:.1f} ms"

            p = m.get("p_value")
            p_text = f"{p:.3g}" if isinstance(p, int | float) and not isinstance(p, bool) else "-"
            add(f"| {_fmt(st.get('weight'))}%{window}, {_fmt(st.get('seconds'))} s | {_md(m.get('name'))} | "
                f"{_md(str(m.get('verdict') or '').upper())} | {_fmt(m.get('n_canary'))} / "
                f"{_fmt(m.get('n_baseline'))} | {val(m.get('canary'))} | {val(m.get('baseline'))} | "
                f"{val(m.get('effect'))} | {val(m.get('threshold'))} | {p_text} | "
                f"{_md(m.get('test'))} |")
        trig = st.get("triggers")
        for t in trig if isinstance(trig, list) else []:
            add(f"| {_fmt(st.get('weight'))}% | rollback trigger | FAIL | | | | | | | {_md(t)} |")
    add("")
    shadow = gate.get("staging_only") if isinstance(gate, Mapping) else None
    if isinstance(shadow, Mapping) and shadow.get("verdict"):
        add(f"The staging baseline alone (as the gate judged before the live judge) would say: "
            f"{_md(str(shadow['verdict']).upper())}; it decides nothing.")
        add("")


def _md(text: Any) -> str:
    """One line of Markdown text: no newlines, no table breaks."""
    text = re.sub(r"\s+", " ", _ANSI.sub("", str(text))).strip()
    return text.replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


def _check_line(c: Mapping[str, Any]) -> str:
    name = _md(c["name"])
    host = f" [{_md(c['host'])}]" if c.get("_many_hosts") else ""
    value = _fmt(c.get("value"), c.get("unit"))
    limit = _fmt(c.get("limit"), c.get("unit"))
    measured = (f" — {_md(value)}" if value else "") + (f" (limit {_md(limit)})" if limit else "")
    if not measured and c.get("detail"):
        measured = f" — {_md(c['detail'])}"
    reason = _md(c.get("reason") or "")
    status = c["status"]
    if status == "pass":
        return f"- [x] {name}{host}{measured}"
    if status == "warn":
        return f"- [x] {name}{host}{measured} — WARN: {reason or 'see the report'}"
    if status == "fail":
        numbers = ", ".join(x for x in (f"value {_md(value)}" if value else "",
                                         f"limit {_md(limit)}" if limit else "") if x)
        return f"- [ ] {name}{host} — FAILED: {reason or 'no reason given'}" + (f" ({numbers})" if numbers else "")
    if status == "skipped":
        return f"- [ ] {name}{host} — skipped" + (f": {reason}" if reason else "")
    return f"- [ ] {name}{host} — {status.upper()}: {reason or 'not measured'}"


# The checklist's "Post-Deployment Sign-Off": (line, confirmation keys that fill it).
_SIGN_OFF: list[tuple[str, tuple[str, ...]]] = [
    ("QA Engineer: All tests passed", ("qasignoff", "qaengineer", "qa")),
    ("DevOps Engineer: Infrastructure stable", ("devopssignoff", "devopsengineer", "devops")),
    ("Tech Lead: Code review approved", ("techleadsignoff", "techlead", "codereview")),
]
_COMMUNICATION: list[tuple[str, tuple[str, ...]]] = [
    ("Customers notified (if relevant)", ("customersnotified",)),
    ("Status page updated", ("statuspageupdated",)),
    ("Release notes published", ("releasenotespublished",)),
    ("Changelog updated", ("changelogupdated",)),
]


def _find_confirmation(confirmations: Mapping[str, Any], keys: Iterable[str]) -> Mapping[str, Any] | None:
    wanted = set(keys)
    for key, value in confirmations.items():
        if _squash(key) in wanted:
            return value if isinstance(value, Mapping) else {"confirmed_by": value}
    return None


def _who(conf: Mapping[str, Any]) -> str:
    by, at = conf.get("confirmed_by"), conf.get("confirmed_at")
    return _md(f"{by}, {at}" if by and at else (by or conf.get("value") or "confirmed"))


def render_markdown(r: Mapping[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    outcome = str(r["outcome"])
    add(f"# Deployment report: {_md(r['environment'])} {_md(r['release'])} — {outcome.upper().replace('_', ' ')}")
    add("")
    prev = f" (previous: {_md(r['previous_release'])})" if r.get("previous_release") else ""
    checks = r["summary"]["checks"]
    add("| | |")
    add("| --- | --- |")
    add(f"| Environment | {_md(r['environment'])} |")
    add(f"| Release | {_md(r['release'])}{prev} |")
    add(f"| Outcome | **{_md(outcome)}**" + (f" (interrupted: {_md(r['interrupted'])})" if r.get("interrupted") else "")
        + (" (check mode: nothing was changed)" if r.get("check_mode") else "") + " |")
    add(f"| Started | {r['started']} |")
    add(f"| Ended | {r['ended']} ({r['duration_s']} s) |")
    add(f"| Playbook | {_md(', '.join(r.get('playbooks') or []) or '-')} |")
    add(f"| Checks | {checks['pass']} passed, {checks['warn']} warnings, {checks['fail']} failed, "
        f"{checks['skipped']} skipped, {checks['inconclusive'] + checks['nodata']} not measured |")
    add(f"| Run by | {_md(r['controller']['user'])} on {_md(r['controller']['host'])} "
        f"(ansible-core {_md(r['controller']['ansible'])}) |")
    image = r.get("published", {}).get("image")
    if isinstance(image, Mapping) and image.get("name"):
        add(f"| Image | {_md(image['name'])}" + (f" ({_md(image['digest'])})" if image.get("digest") else "") + " |")
    add("")

    many_hosts = len(r.get("hosts") or {}) > 1
    for ph in r["phases"]:
        add(f"## {_md(ph['name'])} — {ph['status']}")
        add("")
        if not ph["checks"]:
            add(f"_No checks. Plays: {_md(', '.join(ph['plays']))}._")
            add("")
            continue
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for c in ph["checks"]:
            groups.setdefault(c.get("play") or "", []).append(c)
        for play, cs in groups.items():
            if play:
                add(f"### {_md(play)}")
                add("")
            for c in cs:
                add(_check_line({**c, "_many_hosts": many_hosts}))
            add("")

    add("## Performance Comparison")
    add("")
    rows = r.get("baseline_comparison") or []
    if rows:
        add("| Metric | Staging | Production | Status |")
        add("| ------ | ------- | ---------- | ------ |")
        for row in rows:
            unit = row.get("unit")
            status = _md(str(row.get("status") or "").upper()) or "-"
            add(f"| {_md(row.get('metric') or '')} | {_md(_fmt(row.get('staging'), unit)) or '-'} | "
                f"{_md(_fmt(row.get('production'), unit)) or '-'} | {status} |")
    else:
        add("_No comparison with the staging baseline was published in this run._")
    add("")

    try:
        _canary_md(add, (r.get("published") or {}).get("canary"), (r.get("published") or {}).get("gate"))
    except Exception as exc:  # evidence of the rest must still be written
        add(f"_The canary steps could not be shown: {_md(type(exc).__name__)}._")
        add("")

    try:
        _migration_md(add, (r.get("published") or {}).get("migration"))
    except Exception as exc:  # evidence of the rest must still be written
        add(f"_The migrations could not be shown: {_md(type(exc).__name__)}._")
        add("")

    backup = r.get("backup") or {}
    if any(backup.get(k) is not None for k in ("file", "sha256", "verified")):
        add("## Backup")
        add("")
        add(f"- File: `{_md(backup.get('file') or '-')}`")
        add(f"- SHA-256: `{_md(backup.get('sha256') or '-')}`")
        add(f"- Verified (restored and checked): {_fmt(backup.get('verified')) or 'unknown'}")
        add("")

    k8s = (r.get("published") or {}).get("kubernetes")
    if isinstance(k8s, Mapping):
        add("## Kubernetes rollout")
        add("")
        add(f"- Deployment: `{_md(k8s.get('deployment') or '-')}`")
        add(f"- Image: `{_md(k8s.get('image') or '-')}` (before: `{_md(k8s.get('previous_image') or '-')}`)")
        add(f"- Revision before: {_fmt(k8s.get('revision_before')) or 'none (first deploy)'}; "
            f"after the rollout: {_fmt(k8s.get('revision_after')) or 'not reached'}")
        if k8s.get("rolled_back_to_revision") is not None:
            add(f"- Rolled back to the template of revision {_fmt(k8s['rolled_back_to_revision'])}, "
                f"now revision {_fmt(k8s.get('revision_now')) or '-'}")
        if k8s.get("drained_node"):
            add(f"- Node drained before the update and uncordoned after: {_md(k8s['drained_node'])}")
        add("")

    rb = r.get("rollback") or {}
    if rb.get("triggered"):
        add("## Incident: rollback")
        add("")
        add(f"- Reason: {_md(rb.get('reason') or 'not recorded')}")
        if rb.get("switched_at"):
            add(f"- Switched to the new release at: {_md(rb['switched_at'])}")
        add(f"- Detected at: {_md(rb.get('detected_at') or '-')}")
        add(f"- Restored at: {_md(rb.get('restored_at') or '-')}")
        secs = rb.get("seconds")
        within = ""
        if isinstance(secs, int | float):
            within = " (within the 5-minute target)" if secs < 300 else " (OVER the 5-minute target)"
        add(f"- Rollback time: {_fmt(secs) or '-'} s{within}")
        if r.get("previous_release"):
            add(f"- Serving again: {_md(r['previous_release'])}")
        measured = rb.get("measured") or []
        if measured:
            add("")
            add("| Metric | Measured | Baseline | Limit | Status | Why |")
            add("| ------ | -------- | -------- | ----- | ------ | --- |")
            for m in measured:
                if isinstance(m, Mapping):
                    add(f"| {_md(m.get('name'))} | {_fmt(m.get('value')) or '-'} | {_fmt(m.get('baseline')) or '-'} | "
                        f"{_fmt(m.get('limit')) or '-'} | {_md(m.get('status'))} | {_md(m.get('reason') or '')} |")
        add("")

    if r.get("failures"):
        add("## Failures")
        add("")
        for f in r["failures"]:
            tag = " (ignored)" if f.get("ignored") else ""
            add(f"- {_md(f['phase'])} / {_md(f['task'])} on {_md(f['host'])}{tag}: {_md(f['message'])}")
        add("")
    if r.get("warnings"):
        add("## Warnings")
        add("")
        for w in r["warnings"]:
            add(f"- {_md(w['task'])} on {_md(w['host'])}: {_md(w['message'])}")
        add("")

    confirmations = r.get("confirmations") or {}
    all_checks = [c for ph in r["phases"] for c in ph["checks"]]
    no_failures = not any(not f.get("ignored") for f in r.get("failures") or [])
    add("## Post-Deployment Sign-Off")
    add("")
    add("### Engineering Sign-Off")
    add("")
    used: set[str] = set()
    for line, keys in _SIGN_OFF:
        conf = _find_confirmation(confirmations, keys)
        used.update(k for k in confirmations if _squash(k) in keys)
        add(f"- [x] {line}: {_who(conf)}" if conf else f"- [ ] {line}: not signed")
    add("")
    add("### Production Verification")
    add("")
    comparison_ok = bool(rows) and all(str(row.get("status") or "") in ("pass", "warn") for row in rows)
    derived = [
        ("Deployment completed successfully", outcome == "deployed"),
        ("All smoke tests passed", bool(all_checks) and not any(c["status"] == "fail" for c in all_checks)),
        ("Performance baselines met", comparison_ok),
        ("No critical issues identified", no_failures and outcome == "deployed"),
    ]
    for line, ok in derived:
        add(f"- [{'x' if ok else ' '}] {line}")
    for line, keys in (("24-hour monitoring period started", ("monitoringstarted", "monitoring24hstarted")),
                       ("Rollback plan validated", ("rollbackplanvalidated",))):
        conf = _find_confirmation(confirmations, keys)
        used.update(k for k in confirmations if _squash(k) in keys)
        add(f"- [x] {line}: {_who(conf)}" if conf else f"- [ ] {line}: not confirmed")
    add("")
    add("### Communication")
    add("")
    notes = r.get("notifications") or {}
    success = notes.get("success") if isinstance(notes, Mapping) else None
    delivered = [ch for ch, v in (success or {}).items() if isinstance(v, Mapping) and v.get("delivered")]
    conf = _find_confirmation(confirmations, ("teamnotified",))
    used.update(k for k in confirmations if _squash(k) == "teamnotified")
    if delivered:
        add(f"- [x] Team notified of successful deployment: {_md(', '.join(sorted(delivered)))}")
    elif conf:
        add(f"- [x] Team notified of successful deployment: {_who(conf)}")
    else:
        add("- [ ] Team notified of successful deployment")
    for line, keys in _COMMUNICATION:
        conf = _find_confirmation(confirmations, keys)
        used.update(k for k in confirmations if _squash(k) in keys)
        add(f"- [x] {line}: {_who(conf)}" if conf else f"- [ ] {line}: not confirmed")
    add("")
    deployed_by = _find_confirmation(confirmations, ("deployedby",))
    approved_by = _find_confirmation(confirmations, ("approvedby",))
    used.update(k for k in confirmations if _squash(k) in ("deployedby", "approvedby"))
    add(f"Document deployment time: {r['ended']} Deployed by: "
        f"{_who(deployed_by) if deployed_by else _md(r['controller']['user'])} "
        f"Approved by: {_who(approved_by) if approved_by else 'not signed'}")
    add("")
    others = {k: v for k, v in confirmations.items() if k not in used}
    if others:
        add("### Other confirmations")
        add("")
        for key, conf in others.items():
            add(f"- [x] {_md(conf.get('what') or key)}: {_who(conf)}")
        add("")

    if r.get("hosts"):
        add("## Hosts")
        add("")
        add("| Host | ok | changed | failed | unreachable | skipped | rescued | ignored |")
        add("| ---- | -- | ------- | ------ | ----------- | ------- | ------- | ------- |")
        for host, s in r["hosts"].items():
            add(f"| {_md(host)} | {s['ok']} | {s['changed']} | {s['failed']} | {s['unreachable']} | "
                f"{s['skipped']} | {s['rescued']} | {s['ignored']} |")
        add("")

    if r.get("attachments"):
        add("## Charts and diagnostics")
        add("")
        for a in r["attachments"]:
            if a.get("error"):
                add(f"- {_md(a['title'])}: {_md(a['error'])}")
            elif str(a["file"]).endswith(".png"):
                add(f"![{_md(a['title'])}]({a['file']})")
                add("")
            else:
                add(f"- [{_md(a['title'])}]({a['file']}/)")
        add("")

    add("## Files")
    add("")
    directory = r.get("directory") or "."
    add(f"- Machine-readable report: `{directory}/report.json`")
    add(f"- JUnit (one test suite per phase): `{directory}/junit.xml`")
    add(f"- This summary: `{directory}/report.md`")
    add("")
    return "\n".join(out)


def _xml_text(value: Any) -> str:
    return _XML_INVALID.sub("", _ANSI.sub("", str(value)))


def render_junit(r: Mapping[str, Any]) -> str:
    suites = ET.Element("testsuites", name=_xml_text(f"erni-deploy {r['environment']} {r['release']}"))
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for ph in r["phases"]:
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite = ET.SubElement(suites, "testsuite", name=_xml_text(ph["name"]), timestamp=str(ph["started"] or ""),
                              time=str(ph["duration_s"] or 0))
        cases: list[tuple[Mapping[str, Any], str]] = [(c, c["status"]) for c in ph["checks"]]
        # A task failure outside any check would be invisible to CI: it gets a test case too.
        for f in r.get("failures") or []:
            if f["phase"] == ph["name"] and not f.get("ignored") and not f.get("check"):
                cases.append(({"name": f"task failed: {f['task']}", "host": f["host"],
                               "play": _phase_of(str(f.get("play") or ""))[1], "reason": f["message"],
                               "duration_s": 0}, "fail"))
        for c, status in cases:
            counts["tests"] += 1
            classname = f"{ph['name']}.{c.get('play') or ''}".rstrip(".")
            case = ET.SubElement(suite, "testcase", name=_xml_text(f"{c['name']} [{c.get('host', '')}]"),
                                 classname=_xml_text(classname), time=str(c.get("duration_s") or 0))
            measured = _fmt(c.get("value"), c.get("unit"))
            limit = _fmt(c.get("limit"), c.get("unit"))
            detail = (f"value: {measured}" if measured else "") + (f" limit: {limit}" if limit else "")
            reason = str(c.get("reason") or "")
            if status == "fail":
                counts["failures"] += 1
                el = ET.SubElement(case, "failure", message=_xml_text(reason or "failed"), type="fail")
                el.text = _xml_text("\n".join(x for x in (reason, detail.strip()) if x))
            elif status == "skipped":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=_xml_text(reason or "skipped"))
            elif status in _NOT_MEASURED or status not in ("pass", "warn"):
                counts["errors"] += 1
                el = ET.SubElement(case, "error", message=_xml_text(f"{status}: {reason}".strip(": ")), type=status)
                el.text = _xml_text(detail.strip() or status)
            if detail.strip() or status == "warn":
                out = ET.SubElement(case, "system-out")
                out.text = _xml_text((f"WARN: {reason}\n" if status == "warn" else "") + detail.strip())
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        suites.set(k, str(v))
    suites.set("time", str(r.get("duration_s") or 0))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
