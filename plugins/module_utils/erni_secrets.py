# erni-deploy: auditing secrets (secret_audit): strength, placeholders, rotation, reuse, and a code scan.
"""Judge named secrets against a policy per kind, and scan source trees for hard-coded secrets.

audit() is the whole job: every secret gets checks (present, length, classes, placeholder, age
when a rotation record is given, reuse), each a dict {name, status: pass|fail|warn, value, limit,
reason}, and a verdict; scan_trees() runs detect-secrets' plugins over files and reports where
something was found (file, line, type), never what.

The one rule above all: no secret value, nor any piece of it six characters or longer, may
appear in what this returns. Values are only measured (length, character classes, age) and
compared; and everything returned goes through Redactor as a last step, so a name, a file
path or an error message that happens to contain a secret cannot carry it out either.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - JSON records still work
    HAS_YAML = False

try:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    HAS_DETECT_SECRETS = True
    DETECT_SECRETS_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module when a scan is asked for
    HAS_DETECT_SECRETS = False
    DETECT_SECRETS_IMPORT_ERROR = exc

CLASSES = ("lower", "upper", "digit", "symbol")
KINDS = ("password", "webhook_secret", "jwt_secret", "api_key", "token", "generic")
# kind: (minimum length, character classes required). From the checklist: database passwords
# 20+ with mixed case, numbers and symbols; webhook HMAC secrets 32+. JWT and API keys are
# signing or bearer material of the same weight as the webhook secret; tokens and anything
# else get a floor that a generated value always meets.
POLICY: dict[str, tuple[int, tuple[str, ...]]] = {
    "password": (20, CLASSES),
    "webhook_secret": (32, ()),
    "jwt_secret": (32, ()),
    "api_key": (32, ()),
    "token": (20, ()),
    "generic": (16, ()),
}
PLACEHOLDERS = frozenset({
    "changeme", "change_me", "change-me", "changeit", "password", "passw0rd", "secret", "default",
    "example", "test", "admin", "<set>", "<strong>", "todo",
})
PLACEHOLDER_PARTS = ("changeme", "change_me", "change-me", "example")
_ONLY_X = re.compile(r"[xX]{3,}(?:[-_.: /][xX]+)*")
_BRACKETED = re.compile(r"<[^<>]*>")
ALWAYS_SKIPPED = frozenset({".git", ".venv", "node_modules", "__pycache__"})
FUTURE_TOLERANCE_S = 300  # clocks of the host that wrote the record and of this one may differ a little
MASK = "********"
WINDOW = 6  # the shortest piece of a secret that must never appear


class AuditInputError(ValueError):
    """Bad input found while auditing (a rotation record, a scan path); the message names it."""


# --- redaction -------------------------------------------------------------------------------

class Redactor:
    """Masks every run of text that shares `window` or more characters with a secret value.

    Values shorter than `window` (and at least `min_short` long), and the `whole` ones, are
    masked where they occur whole, as Ansible's no_log does. With `ignore_case`, a secret lower-cased into a slug or a
    key is still found. Dict keys are left alone by apply(): they are the result's fixed schema,
    never input. The report callback uses the same class on everything it writes.

    Written here rather than taken from a library: redaction libraries match whole values or
    known token formats; a piece of a secret (the tail left after a quote split it) is what
    leaks in practice, and only a sliding window over every value finds it.
    """

    def __init__(self, values: Iterable[str], window: int = WINDOW, ignore_case: bool = False,
                 min_short: int = 1, whole: Iterable[str] = ()) -> None:
        self.window, self.ignore_case = window, ignore_case
        self.windows: set[str] = set()
        self.short: set[str] = set()
        for value in values:
            if not value or value == MASK or len(value) < min_short:
                continue
            value = self._fold(value)
            if len(value) >= window:
                self.windows.update(value[i:i + window] for i in range(len(value) - window + 1))
            else:
                self.short.add(value)
        self.short.update(self._fold(value) for value in whole if value and value != MASK)

    def _fold(self, text: str) -> str:
        """Lower case that keeps every character's position (a few lower-case to two)."""
        if not self.ignore_case:
            return text
        return "".join(low if len(low := ch.lower()) == 1 else ch for ch in text)

    def text(self, text: str) -> str:
        if not text or not (self.windows or self.short):
            return text
        folded, window = self._fold(text), self.window
        marked = [False] * len(text)
        for i in range(len(text) - window + 1):
            if folded[i:i + window] in self.windows:
                marked[i:i + window] = [True] * window
        for value in self.short:
            start = folded.find(value)
            while start != -1:
                marked[start:start + len(value)] = [True] * len(value)
                start = folded.find(value, start + 1)
        if not any(marked):
            return text
        out: list[str] = []
        for i, ch in enumerate(text):
            if not marked[i]:
                out.append(ch)
            elif i == 0 or not marked[i - 1]:
                out.append(MASK)
        return "".join(out)

    def apply(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {key: self.apply(value) for key, value in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.apply(item) for item in data]
        return data


# --- one secret ------------------------------------------------------------------------------

def check(name: str, status: str, value: Any, limit: Any, reason: str | None) -> dict[str, Any]:
    return {"name": name, "status": status, "value": value, "limit": limit,
            "reason": None if status == "pass" else reason}


def char_classes(value: str) -> list[str]:
    """The character classes present, in CLASSES order (any non-alphanumeric is a symbol)."""
    found = set()
    for ch in value:
        if ch.islower():
            found.add("lower")
        elif ch.isupper():
            found.add("upper")
        elif ch.isdigit():
            found.add("digit")
        elif not ch.isalnum():
            found.add("symbol")
    return [c for c in CLASSES if c in found]


def placeholder_source(value: str, extra: Iterable[str] = ()) -> str | None:
    """Why the value is a placeholder ("built-in" or "given"), or None when it is not one."""
    folded = value.strip().casefold()
    if folded in {p.strip().casefold() for p in extra if p and p.strip()}:
        return "given"
    if (folded in PLACEHOLDERS or any(part in folded for part in PLACEHOLDER_PARTS)
            or len(set(folded)) == 1 or _ONLY_X.fullmatch(folded) or _BRACKETED.fullmatch(folded)):
        return "built-in"
    return None


def policy_for(spec: dict[str, Any]) -> tuple[int, list[str]]:
    min_length, classes = POLICY[spec.get("kind") or "generic"]
    if spec.get("min_length") is not None:
        min_length = int(spec["min_length"])
    if spec.get("require_classes") is not None:
        classes = tuple(spec["require_classes"])
    return min_length, [c for c in CLASSES if c in classes]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def strength_checks(value: str, min_length: int, required: list[str],
                    extra_placeholders: Iterable[str]) -> list[dict[str, Any]]:
    length = len(value)
    present = char_classes(value)
    missing = [c for c in required if c not in present]
    source = placeholder_source(value, extra_placeholders)
    return [
        check("length", "pass" if length >= min_length else "fail", length, min_length,
              f"{_plural(length, 'character')}, needs at least {min_length}: generate a longer one"),
        check("classes", "fail" if missing else "pass", present, required,
              f"missing {', '.join(missing)} (needs {', '.join(required)})"),
        check("placeholder", "fail" if source else "pass", bool(source), False,
              "the value is a well-known placeholder: set a real secret" if source == "built-in"
              else "the value is one of the given placeholders: set a real secret"),
    ]


def parse_when(raw: Any) -> datetime | None:
    """A rotation date (ISO 8601 date or datetime, or what YAML made of one) as aware UTC."""
    if isinstance(raw, datetime):
        moment = raw
    elif isinstance(raw, date):
        moment = datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str) and raw.strip():
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a date without a zone is read as UTC
    return moment.astimezone(UTC)


def age_check(name: str, record: dict[str, Any], record_path: str, max_age_days: float,
              now: datetime) -> dict[str, Any]:
    if name not in record:
        return check("age", "warn", None, max_age_days,
                     f"no rotation record for it in {record_path}: add the date it was last rotated")
    when = parse_when(record[name])
    if when is None:
        return check("age", "fail", None, max_age_days,
                     f"its entry in {record_path} is not an ISO 8601 date or datetime: fix the record")
    seconds = (now - when).total_seconds()
    age = round(seconds / 86400.0, 1)
    if seconds < -FUTURE_TOLERANCE_S:
        return check("age", "fail", age, max_age_days,
                     f"rotation date {when.strftime('%Y-%m-%dT%H:%M:%SZ')} is {-age:.1f} days in the "
                     f"future: fix its entry in {record_path}")
    age = max(age, 0.0)
    return check("age", "pass" if age <= max_age_days else "fail", age, max_age_days,
                 f"rotated {age:.1f} days ago, limit {max_age_days:g}: rotate it and update the record")


def audit_secrets(secrets: list[dict[str, Any]], placeholders: Iterable[str] = (),
                  record: dict[str, Any] | None = None, record_path: str | None = None,
                  max_age_days: float = 30.0, now: datetime | None = None) -> list[dict[str, Any]]:
    """One result per secret: {name, kind, verdict, checks}. Not yet redacted (audit() does it)."""
    now = now or datetime.now(UTC)
    extra = list(placeholders)
    names_by_value: dict[str, list[str]] = {}
    for spec in secrets:
        value = spec.get("value") or ""
        if value.strip():
            names_by_value.setdefault(value, []).append(spec["name"])

    results = []
    for spec in secrets:
        name = spec["name"]
        kind = spec.get("kind") or "generic"
        value = spec.get("value") or ""
        if not value.strip():
            checks = [check("present", "fail", False, True, "not set")]
        else:
            min_length, required = policy_for(spec)
            checks = [check("present", "pass", True, True, None),
                      *strength_checks(value, min_length, required, extra)]
            if record is not None:
                checks.append(age_check(name, record, record_path or "the rotation record", max_age_days, now))
            others = [n for n in names_by_value[value] if n != name]
            checks.append(check("reuse", "fail" if others else "pass", len(others), 0,
                                f"same value as {', '.join(others)}: give each secret its own value"))
        statuses = {c["status"] for c in checks}
        verdict = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
        results.append({"name": name, "kind": kind, "verdict": verdict, "checks": checks})
    return results


# --- the rotation record ---------------------------------------------------------------------

def load_rotation_record(path: str) -> dict[str, Any]:
    """The record as {secret name: raw date}. Raises AuditInputError naming the file."""
    if not os.path.exists(path):
        raise AuditInputError(f"rotation_record {path} does not exist: create it (secret name: date "
                              "last rotated) or leave rotation_record out")
    if not os.path.isfile(path):
        raise AuditInputError(f"rotation_record {path} is not a file: point it at a YAML or JSON file")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditInputError(f"rotation_record {path} cannot be read ({type(exc).__name__}): "
                              "check its permissions and encoding (UTF-8)") from exc
    data: Any
    try:
        data = json.loads(text)
    except ValueError:
        if not HAS_YAML:
            raise AuditInputError(f"rotation_record {path} is not valid JSON (and PyYAML is not "
                                  "installed to read YAML): fix the file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            # the parser's own message quotes the file's text; say only where the problem is
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise AuditInputError(f"rotation_record {path} is not valid YAML or JSON{where}: fix the file") from None
    if data is None:
        raise AuditInputError(f"rotation_record {path} is empty: it must map secret names to the dates "
                              "they were last rotated")
    if not isinstance(data, dict):
        raise AuditInputError(f"rotation_record {path} holds a {type(data).__name__}, not a mapping: it must "
                              "map secret names to the dates they were last rotated")
    return {str(key): value for key, value in data.items()}


# --- scanning code for hard-coded secrets -----------------------------------------------------

def compile_excludes(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise AuditInputError(f"scan_exclude[{i}] {pattern!r} is not a valid regular expression "
                                  f"({exc}): fix or remove it") from exc
    return compiled


def _excluded(relative: str, excludes: list[re.Pattern[str]]) -> bool:
    return any(p.search(relative) for p in excludes)


def files_under(root: str, excludes: list[re.Pattern[str]]) -> tuple[list[str], int, int]:
    """(files to scan relative to root, files skipped, directories skipped whole).

    Paths are matched with "/" separators, directories with a trailing "/" ("^vendor/" skips
    the directory vendor). Symbolic links are not followed.
    """
    wanted: list[str] = []
    files_skipped = dirs_skipped = 0
    for current, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(current, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        keep = []
        for d in sorted(dirs):
            if (d in ALWAYS_SKIPPED or _excluded(rel_dir + d + "/", excludes)
                    or os.path.islink(os.path.join(current, d))):
                dirs_skipped += 1
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            relative = rel_dir + name
            if _excluded(relative, excludes) or os.path.islink(os.path.join(current, name)):
                files_skipped += 1
            else:
                wanted.append(relative)
    return wanted, files_skipped, dirs_skipped


def scan_trees(paths: list[str], exclude: Iterable[str] = ()) -> dict[str, Any]:
    """detect-secrets over every file under paths, with its default plugins and filters.

    Returns {paths, files_scanned, files_skipped, dirs_skipped, findings: [{file, line, type}],
    errors: [{file, error}], status, check}. A file is named relative to the scan path it was found under (for a path
    that is a file: its own name).
    """
    if not HAS_DETECT_SECRETS:
        raise AuditInputError(f"scan_paths needs the detect-secrets library ({DETECT_SECRETS_IMPORT_ERROR}): "
                              "install it on the host that runs the audit")
    excludes = compile_excludes(exclude)
    findings: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    scanned = files_skipped = dirs_skipped = 0
    with default_settings():
        for i, path in enumerate(paths):
            if os.path.isdir(path):
                root = os.path.abspath(path)
                files, n_files, n_dirs = files_under(root, excludes)
            elif os.path.isfile(path):
                root, name = os.path.split(os.path.abspath(path))
                files, n_files, n_dirs = ([], 1, 0) if _excluded(name, excludes) else ([name], 0, 0)
            else:
                raise AuditInputError(f"scan_paths[{i}] {path} does not exist: fix the path or remove it")
            files_skipped += n_files
            dirs_skipped += n_dirs
            collection = SecretsCollection(root=root)
            for relative in files:
                try:
                    collection.scan_file(relative)
                except Exception as exc:  # one unreadable file must not stop the audit
                    errors.append({"file": relative, "error": type(exc).__name__})
                    continue
                scanned += 1
            seen = set()
            for filename, secret in collection:
                item = (filename.replace(os.sep, "/"), int(secret.line_number or 0), str(secret.type))
                if item not in seen:
                    seen.add(item)
                    findings.append({"file": item[0], "line": item[1], "type": item[2]})
    findings.sort(key=lambda f: (f["file"], f["line"], f["type"]))
    if findings:
        files_hit = len({f["file"] for f in findings})
        status = "fail"
        reason = (f"{_plural(len(findings), 'possible secret')} in {_plural(files_hit, 'file')}: "
                  "move them to the vault and rotate them")
    elif errors:
        status, reason = "warn", f"{_plural(len(errors), 'file')} could not be scanned"
    else:
        status, reason = "pass", None
    return {
        "paths": list(paths), "files_scanned": scanned, "files_skipped": files_skipped, "dirs_skipped": dirs_skipped,
        "findings": findings, "errors": errors, "status": status,
        "check": check("hardcoded_secrets", status, len(findings), 0, reason),
    }


# --- the whole audit ---------------------------------------------------------------------------

def summarize(verdicts: list[str]) -> dict[str, int]:
    return {"total": len(verdicts), "passed": verdicts.count("pass"),
            "failed": verdicts.count("fail"), "warned": verdicts.count("warn")}


def redactor_for(secrets: list[dict[str, Any]], also: Iterable[str] = ()) -> Redactor:
    """Masks every secret value and the other no_log inputs (given placeholders): masking a
    piece of one of those would stop Ansible's own no_log masking from finding it whole."""
    return Redactor([str(s.get("value") or "") for s in secrets] + [str(v or "") for v in also])


def audit(secrets: list[dict[str, Any]], placeholders: Iterable[str] = (), rotation_record: str | None = None,
          max_age_days: float = 30.0, scan_paths: list[str] | None = None, scan_exclude: Iterable[str] = (),
          now: datetime | None = None) -> dict[str, Any]:
    """{secrets, scan, summary, msg}, redacted. Raises AuditInputError (redacted) for bad input.

    The task has failed when summary.failed > 0; warnings (a secret with no rotation record, a
    file that could not be scanned) do not fail it.
    """
    placeholders = list(placeholders)
    redactor = redactor_for(secrets, placeholders)
    if math.isnan(max_age_days) or max_age_days < 0:
        raise AuditInputError(f"max_age_days={max_age_days} must be a number of days, 0 or more")
    try:
        record = load_rotation_record(rotation_record) if rotation_record else None
        results = audit_secrets(secrets, placeholders, record, rotation_record, max_age_days, now)
        scan = scan_trees(scan_paths, scan_exclude) if scan_paths else None
    except AuditInputError as exc:
        raise AuditInputError(redactor.text(str(exc))) from None

    summary = summarize([r["verdict"] for r in results] + ([scan["status"]] if scan else []))
    problems: dict[str, list[str]] = {"fail": [], "warn": []}
    for r in results:
        for status, found in problems.items():
            reasons = [c["reason"] if c["name"] == "present" else f"{c['name']}: {c['reason']}"
                       for c in r["checks"] if c["status"] == status]
            if reasons:
                found.append(f"{r['name']} ({'; '.join(reasons)})")
    if scan and scan["status"] != "pass":
        problems[scan["status"]].append(f"hardcoded_secrets ({scan['check']['reason']})")
    if problems["fail"]:
        msg = f"{summary['failed']} of {summary['total']} audited items failed: " + ", ".join(problems["fail"])
    elif problems["warn"]:
        msg = (f"no audited item failed, {summary['warned']} of {summary['total']} with warnings: "
               + ", ".join(problems["warn"]))
    else:
        msg = f"all {summary['total']} audited items passed"
    return dict(redactor.apply({"secrets": results, "scan": scan, "summary": summary, "msg": msg}))
