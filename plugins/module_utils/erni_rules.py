# -*- coding: utf-8 -*-
# erni-deploy: Prometheus alert rule checks (alert_rules_check): validity, unit tests, dead rules.
"""Validate Prometheus rule files and find rules that can never fire.

- promtool does what it is authoritative for: `promtool check rules` (syntax, expressions)
  and `promtool test rules` (the rules' own unit tests).
- A small PromQL tokenizer and parser (tokenize(), parse_expr()) find every vector selector
  of a rule's expression, and Prometheus's series API says how many series each one matched
  over a lookback window. A selector matching nothing makes the rule dead, unless it cannot
  stop the rule from producing samples: inside absent(...), absent_over_time(...), vector(...)
  or scalar(...), on the right of `unless`, or in one branch of an `or` whose other branch
  still matches (`sum(x) or vector(0)`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

try:
    import requests

    HAS_REQUESTS = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_REQUESTS = False

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_YAML = False

from ansible.module_utils.erni_http import make_session

# ---------------------------------------------------------------------------------------- PromQL

AGGREGATIONS = frozenset(("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile", "limitk", "limit_ratio"))
LABEL_LIST_KEYWORDS = frozenset(("by", "without", "on", "ignoring", "group_left", "group_right"))
SET_OPERATORS = frozenset(("and", "or", "unless"))
SKIPPED_KEYWORDS = frozenset(("bool", "offset", "atan2"))
# Functions whose result has samples whatever their argument matches.
ALWAYS_PRODUCE = frozenset(("absent", "absent_over_time", "vector", "scalar"))
# Functions meant to look for selectors that match nothing.
ABSENT_FUNCTIONS = frozenset(("absent", "absent_over_time"))
MATCH_OPERATORS = ("=~", "!~", "!=", "=")
_OPERATORS = ("==", "!=", "=~", "!~", ">=", "<=", "=", ">", "<", "+", "-", "*", "/", "%", "^")
_PUNCTUATION = "(){}[],@:"

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_IDENT_IN_BRACKETS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # ':' separates a subquery's range and step
_PLAIN_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN_METRIC = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\Z")
_DURATION = re.compile(r"(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_])")
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?![A-Za-z0-9_.])")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", "'": "'", '"': '"'}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class PromQLError(ValueError):
    """An expression the tokenizer or parser cannot read; the message gives the position."""


@dataclass(frozen=True)
class Token:
    kind: str    # ident, string, number, duration, op, punct
    text: str    # as written in the expression
    pos: int     # offset of its first character
    value: str = ""  # decoded value of a string

    def is_punct(self, char: str) -> bool:
        return self.kind == "punct" and self.text == char


def _read_string(expr: str, start: int) -> tuple[int, str]:
    """Read the string literal starting at start; return the offset after it and its value."""
    quote = expr[start]
    i = start + 1
    if quote == "`":  # raw string: no escapes
        end = expr.find("`", i)
        if end < 0:
            raise PromQLError(f"unterminated raw string starting at offset {start}")
        return end + 1, expr[i:end]
    out: list[str] = []
    while i < len(expr):
        c = expr[i]
        if c == quote:
            return i + 1, "".join(out)
        if c == "\n":
            break
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(expr):
            break
        esc = expr[i + 1]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = expr[i + 2:i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise PromQLError(f"bad \\{esc} escape at offset {i}")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif esc in "01234567":
            digits = expr[i + 1:i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits):
                raise PromQLError(f"bad octal escape at offset {i}")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise PromQLError(f"unknown escape \\{esc} at offset {i}")
    raise PromQLError(f"unterminated string starting at offset {start}")


def tokenize(expr: str) -> list[Token]:
    """PromQL tokens, comments and white space dropped."""
    tokens: list[Token] = []
    i = 0
    brackets = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":  # comment to the end of the line
            end = expr.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c in "\"'`":
            end, value = _read_string(expr, i)
            tokens.append(Token("string", expr[i:end], i, value))
            i = end
            continue
        if c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            m = _DURATION.match(expr, i)
            kind = "duration"
            if not m:
                m = _NUMBER.match(expr, i)
                kind = "number"
            if not m:
                raise PromQLError(f"bad number or duration at offset {i}: {expr[i:i + 12]!r}")
            tokens.append(Token(kind, m.group(), i))
            i = m.end()
            continue
        m = (_IDENT_IN_BRACKETS if brackets else _IDENT).match(expr, i)
        if m:
            tokens.append(Token("ident", m.group(), i))
            i = m.end()
            continue
        op = next((o for o in _OPERATORS if expr.startswith(o, i)), None)
        if op:
            tokens.append(Token("op", op, i))
            i += len(op)
            continue
        if c in _PUNCTUATION:
            brackets += 1 if c == "[" else -1 if c == "]" else 0
            tokens.append(Token("punct", c, i))
            i += 1
            continue
        raise PromQLError(f"unexpected character {c!r} at offset {i}")
    return tokens


@dataclass
class Selector:
    """A vector selector: metric name and label matchers (range, offset and @ dropped)."""

    metric: str | None
    matchers: list[tuple[str, str, str]]
    pos: int

    @property
    def text(self) -> str:
        """The selector as Prometheus's series API takes it in match[]."""
        parts = [f"{_label_text(name)}{op}{_quote(value)}" for name, op, value in self.matchers]
        if self.metric is None:
            return "{" + ",".join(parts) + "}"
        if not _PLAIN_METRIC.match(self.metric):
            return "{" + ",".join([_quote(self.metric), *parts]) + "}"
        return self.metric + ("{" + ",".join(parts) + "}" if parts else "")


@dataclass
class Group:
    """Parentheses: a function's or aggregation's arguments (name set) or plain grouping (name None).

    items holds selectors, nested groups and the separators that matter for whether the
    expression can produce samples: "," and the set operators "and", "or", "unless".
    """

    name: str | None
    items: list[Selector | Group | str] = field(default_factory=list)


def _quote(value: str) -> str:
    # JSON's escapes are a subset of Go's, so this is a valid PromQL double-quoted string
    return json.dumps(value, ensure_ascii=False)


def _label_text(name: str) -> str:
    return name if _PLAIN_LABEL.match(name) else _quote(name)


def _at(tokens: list[Token], i: int, expected: str) -> Token:
    if i >= len(tokens):
        raise PromQLError(f"the expression ends where {expected} was expected")
    return tokens[i]


def _skip_label_list(tokens: list[Token], i: int) -> int:
    """tokens[i] is '(' after by/without/on/ignoring/group_*: return the offset after its ')'."""
    j = i + 1
    while not _at(tokens, j, "')' closing a label list").is_punct(")"):
        tok = tokens[j]
        if tok.kind not in ("ident", "string") and not tok.is_punct(","):
            raise PromQLError(f"unexpected {tok.text!r} in a label list at offset {tok.pos}")
        j += 1
    return j + 1


def _parse_matchers(tokens: list[Token], i: int, metric: str | None, pos: int) -> tuple[Selector, int]:
    """tokens[i] is '{': read the matchers; return the selector and the offset after '}'."""
    matchers: list[tuple[str, str, str]] = []
    j = i + 1
    while True:
        tok = _at(tokens, j, "'}' closing a selector")
        if tok.is_punct("}"):
            j += 1
            break
        if tok.kind not in ("ident", "string"):
            raise PromQLError(f"expected a label name at offset {tok.pos}, found {tok.text!r}")
        nxt = tokens[j + 1] if j + 1 < len(tokens) else None
        if nxt is not None and nxt.kind == "op" and nxt.text in MATCH_OPERATORS:
            value = _at(tokens, j + 2, "a quoted label value")
            if value.kind != "string":
                raise PromQLError(f"expected a quoted label value at offset {value.pos}, found {value.text!r}")
            matchers.append((tok.value if tok.kind == "string" else tok.text, nxt.text, value.value))
            j += 3
        elif tok.kind == "string" and metric is None:
            metric = tok.value  # {"metric.name", ...}: a quoted metric name
            j += 1
        else:
            raise PromQLError(f"expected =, !=, =~ or !~ after {tok.text!r} at offset {tok.pos}")
        sep = _at(tokens, j, "',' or '}' in a selector")
        if sep.is_punct(","):
            j += 1
        elif not sep.is_punct("}"):
            raise PromQLError(f"expected ',' or '}}' at offset {sep.pos}, found {sep.text!r}")
    if metric is None and not matchers:
        raise PromQLError(f"empty selector {{}} at offset {tokens[i].pos}")
    return Selector(metric, matchers, pos), j


def parse_expr(expr: str) -> Group:
    """The expression as nested groups of selectors (the root group has no name)."""
    tokens = tokenize(expr)
    root = Group(None)
    stack = [root]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "punct":
            if tok.text == "(":
                group = Group(None)
                stack[-1].items.append(group)
                stack.append(group)
            elif tok.text == ")":
                if len(stack) == 1:
                    raise PromQLError(f"unexpected ')' at offset {tok.pos}")
                stack.pop()
            elif tok.text == "{":
                selector, i = _parse_matchers(tokens, i, None, tok.pos)
                stack[-1].items.append(selector)
                continue
            elif tok.text == "[":  # range or subquery: durations only
                j = i + 1
                while not _at(tokens, j, "']'").is_punct("]"):
                    j += 1
                i = j
            elif tok.text == ",":
                stack[-1].items.append(",")
            elif tok.text in "}]":
                raise PromQLError(f"unexpected {tok.text!r} at offset {tok.pos}")
            i += 1
            continue
        if tok.kind != "ident":  # numbers, durations, strings, operators
            i += 1
            continue
        word = tok.text.lower()  # keywords are case-insensitive, function names are not
        if word in LABEL_LIST_KEYWORDS:
            i = _skip_label_list(tokens, i + 1) if nxt is not None and nxt.is_punct("(") else i + 1
        elif word in SET_OPERATORS:
            stack[-1].items.append(word)
            i += 1
        elif word in SKIPPED_KEYWORDS or word in ("inf", "nan"):
            i += 1
        elif word in AGGREGATIONS:
            j = i + 1
            if nxt is not None and nxt.kind == "ident" and nxt.text.lower() in ("by", "without"):
                if not _at(tokens, i + 2, "'(' after by/without").is_punct("("):
                    raise PromQLError(f"expected '(' after {nxt.text} at offset {nxt.pos}")
                j = _skip_label_list(tokens, i + 2)
            if not _at(tokens, j, f"'(' after {tok.text}").is_punct("("):
                raise PromQLError(f"expected '(' after aggregation {tok.text} at offset {tok.pos}")
            group = Group(word)
            stack[-1].items.append(group)
            stack.append(group)
            i = j + 1
        elif nxt is not None and nxt.is_punct("("):
            group = Group(tok.text)
            stack[-1].items.append(group)
            stack.append(group)
            i += 2
        elif nxt is not None and nxt.is_punct("{"):
            selector, i = _parse_matchers(tokens, i + 1, tok.text, tok.pos)
            stack[-1].items.append(selector)
        else:
            stack[-1].items.append(Selector(tok.text, [], tok.pos))
            i += 1
    if len(stack) > 1:
        raise PromQLError(f"unclosed '(' of {stack[-1].name or 'a group'}")
    return root


def iter_selectors(group: Group, in_absent: bool = False) -> Iterator[tuple[Selector, bool]]:
    """Every selector, with whether it is inside absent() or absent_over_time()."""
    inside = in_absent or group.name in ABSENT_FUNCTIONS
    for item in group.items:
        if isinstance(item, Selector):
            yield item, inside
        elif isinstance(item, Group):
            yield from iter_selectors(item, inside)


def extract_selectors(expr: str) -> list[str]:
    """Distinct selectors of an expression, in order of appearance."""
    seen: dict[str, None] = {}
    for selector, _ in iter_selectors(parse_expr(expr)):
        seen.setdefault(selector.text)
    return list(seen)


def _split(items: list[Any], separators: frozenset[str]) -> list[tuple[str | None, list[Any]]]:
    parts: list[tuple[str | None, list[Any]]] = [(None, [])]
    for item in items:
        if isinstance(item, str) and item in separators:
            parts.append((item, []))
        else:
            parts[-1][1].append(item)
    return parts


def _blockers_of_operand(items: list[Any], empty: set[str]) -> list[str]:
    """Empty selectors that keep an operand (an argument, or the whole expression) from producing samples."""
    found: list[str] = []
    for _sep, alternative in _split(items, frozenset(("or",))):
        blockers: list[str] = []
        for sep, term in _split(alternative, frozenset(("and", "unless"))):
            if sep == "unless":  # `a unless b` has samples whenever a has
                continue
            for item in term:
                if isinstance(item, Selector):
                    if item.text in empty:
                        blockers.append(item.text)
                elif isinstance(item, Group):
                    blockers.extend(blockers_of(item, empty))
        if not blockers:
            return []  # this branch of the `or` can produce samples
        found.extend(blockers)
    return list(dict.fromkeys(found))


def blockers_of(group: Group, empty: set[str]) -> list[str]:
    """Selectors (texts) matching nothing that keep the group from ever producing a sample."""
    if group.name in ALWAYS_PRODUCE:
        return []
    found: list[str] = []
    for _sep, argument in _split(group.items, frozenset((",",))):
        found.extend(_blockers_of_operand(argument, empty))
    return list(dict.fromkeys(found))


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as 1h, 90s or 1h30m."""
    if not re.fullmatch(r"(?:\d+(?:ms|[smhdwy]))+", text or ""):
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h or 1h30m")
    seconds = sum(int(num) * _DURATION_UNITS[unit] for num, unit in re.findall(r"(\d+)(ms|[smhdwy])", text))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration above 0")
    return float(seconds)


# ------------------------------------------------------------------------------------- promtool

PROMTOOL_TIMEOUT = 120.0


def find_promtool(promtool: str) -> str | None:
    """The executable's path, or None when it cannot be found."""
    if os.sep in promtool:
        return promtool if os.path.isfile(promtool) and os.access(promtool, os.X_OK) else None
    return shutil.which(promtool)


def _run_promtool(promtool: str, args: list[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        return -1, "", f"promtool {' '.join(args)} did not finish within {PROMTOOL_TIMEOUT:g} s"
    return proc.returncode, proc.stdout, proc.stderr


def _tail(text: str, lines: int = 25, chars: int = 3000) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def validate_file(promtool: str, path: str) -> str | None:
    """None when `promtool check rules` accepts the file; else promtool's error text."""
    if not os.path.isfile(path):
        return f"{path} does not exist: check rule_files"
    rc, out, err = _run_promtool(promtool, ["check", "rules", path])
    if rc == 0:
        return None
    lines = [ln.strip() for ln in err.splitlines() if ln.strip() and ln.strip() != "FAILED:"]
    return "; ".join(lines)[:2000] or _tail(out) or f"promtool check rules exited with {rc}"


def run_test_file(promtool: str, path: str) -> dict[str, Any]:
    """`promtool test rules FILE`: status pass or fail, and the tail of promtool's output."""
    if not os.path.isfile(path):
        return {"file": path, "status": "fail", "output": f"{path} does not exist: check test_files", "rc": None}
    rc, out, err = _run_promtool(promtool, ["test", "rules", path])
    return {"file": path, "status": "pass" if rc == 0 else "fail", "output": _tail(out + "\n" + err), "rc": rc}


def load_rules(path: str) -> list[dict[str, Any]]:
    """The rules of a rule file: file, group, name, type and expr of each."""
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    rules = []
    for group in (doc.get("groups") or []) if isinstance(doc, dict) else []:
        for rule in group.get("rules") or []:
            kind = "alert" if "alert" in rule else "record"
            rules.append({"file": path, "group": str(group.get("name")), "name": str(rule.get(kind)),
                          "type": kind, "expr": str(rule.get("expr", "")).strip()})
    return rules


# ----------------------------------------------------------------------------------- Prometheus

def _short_error(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("NewConnectionError(", "Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:200]


def series_counts(prometheus_url: str, selectors: list[str], start: float, end: float,
                  verify: bool | str = True, timeout: float = 10.0, bearer_token: str | None = None,
                  username: str | None = None, password: str | None = None,
                  concurrency: int = 8) -> tuple[dict[str, int], dict[str, str]]:
    """How many series each selector matched in [start, end]; and, per selector, why it could not be asked."""
    session = make_session(verify, pool_size=concurrency)
    if bearer_token:
        session.headers["Authorization"] = f"Bearer {bearer_token}"
    elif username is not None:
        session.auth = (username, password or "")
    api = prometheus_url.rstrip("/") + "/api/v1/series"

    def one(selector: str) -> tuple[str, int | None, str | None]:
        params = {"match[]": selector, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        try:
            resp = session.get(api, params=params, timeout=timeout, verify=session.verify)
        except requests.exceptions.SSLError as exc:
            return selector, None, f"TLS error: {_short_error(exc)}"
        except requests.exceptions.Timeout:
            return selector, None, f"no answer from {api} within {timeout:g} s"
        except requests.exceptions.RequestException as exc:
            return selector, None, f"connection to {api} failed: {_short_error(exc)}"
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "status" not in answer:
            return selector, None, f"status {resp.status_code} from {api}, not a Prometheus API answer"
        if resp.status_code != 200 or answer.get("status") != "success" or not isinstance(answer.get("data"), list):
            detail = ": ".join(str(answer[k]) for k in ("errorType", "error") if answer.get(k))
            return selector, None, f"Prometheus answered {resp.status_code} for {selector}: {detail or 'an error'}"
        return selector, len(answer["data"]), None

    counts: dict[str, int] = {}
    errors: dict[str, str] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(selectors) or 1))) as pool:
            for selector, count, error in pool.map(one, selectors):
                if error is not None:
                    errors[selector] = error
                elif count is not None:
                    counts[selector] = count
    finally:
        session.close()
    return counts, errors


# ---------------------------------------------------------------------------------- the checks

def utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(name: str, status: str, value: Any, limit: Any, reason: str | None) -> dict[str, Any]:
    return {"name": name, "status": status, "value": value, "limit": limit,
            "reason": None if status == "pass" else reason}


def check_rule_files(rule_files: list[str], promtool: str = "promtool", prometheus_url: str | None = None,
                     lookback: str = "1h", evaluation_time: float | None = None,
                     test_files: list[str] | None = None, dead_rules: str = "fail",
                     verify: bool | str = True, timeout: float = 10.0, bearer_token: str | None = None,
                     username: str | None = None, password: str | None = None) -> dict[str, Any]:
    """Validate, look for dead rules (with prometheus_url) and run the unit tests.

    Returns files, rules, tests, checks, summary and, with prometheus_url, window.
    """
    checks: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for path in rule_files:
        error = validate_file(promtool, path)
        found: list[dict[str, Any]] = []
        if os.path.isfile(path):
            try:
                found = load_rules(path)
            except (yaml.YAMLError, OSError, AttributeError, TypeError) as exc:
                error = error or f"cannot read the rules: {_short_error(exc)}"
        files.append({"file": path, "valid": error is None, "rules": len(found), "reason": error})
        if error is not None:
            checks.append(_check(f"rule_file:{path}", "fail", len(found), None, error))
            continue
        if found:
            checks.append(_check(f"rule_file:{path}", "pass", len(found), None, None))
        else:
            checks.append(_check(f"rule_file:{path}", "warn", 0, None, f"{path} holds no rules"))
        rules.extend(found)

    parsed: dict[int, Group] = {}
    for index, rule in enumerate(rules):
        rule.update(status="pass", selectors=[], reason=None)
        try:
            parsed[index] = parse_expr(rule["expr"])
        except PromQLError as exc:
            rule.update(status="warn", reason=f"could not read the selectors: {exc}")
            checks.append(_check(f"selectors:{rule['group']}/{rule['name']}", "warn", None, None,
                                 f"{rule['file']}: {rule['reason']}"))
            continue
        texts = dict.fromkeys(sel.text for sel, _ in iter_selectors(parsed[index]))
        rule["selectors"] = [{"selector": text, "series": None} for text in texts]

    window: dict[str, str] | None = None
    if prometheus_url:
        end = time.time() if evaluation_time is None else float(evaluation_time)
        start = end - parse_duration(lookback)
        window = {"start": utc_iso(start), "end": utc_iso(end)}
        wanted = list(dict.fromkeys(s["selector"] for r in rules for s in r["selectors"]))
        counts, errors = series_counts(prometheus_url, wanted, start, end, verify=verify, timeout=timeout,
                                       bearer_token=bearer_token, username=username, password=password)
        if errors:
            first = next(iter(errors.values()))
            checks.append(_check("prometheus", "fail", len(counts), len(wanted),
                                 f"{len(errors)} of {len(wanted)} series lookups failed: {first}"))
        else:
            checks.append(_check("prometheus", "pass", len(counts), len(wanted), None))
        empty = {sel for sel, count in counts.items() if count == 0}
        for index, group in parsed.items():
            rule = rules[index]
            for entry in rule["selectors"]:
                entry["series"] = counts.get(entry["selector"])
            blockers = blockers_of(group, empty)
            if blockers:
                rule["status"] = "dead"
                rule["reason"] = "; ".join(f"{sel} matches no series in the last {lookback}" for sel in blockers) \
                    + " (the rule can never fire)"
                checks.append(_check(f"dead_rule:{rule['group']}/{rule['name']}",
                                     "fail" if dead_rules == "fail" else "warn", 0, 1,
                                     f"{rule['file']}: {rule['reason']}"))
            else:
                unknown = [e["selector"] for e in rule["selectors"] if e["selector"] in errors]
                if unknown:
                    rule["status"] = "warn"
                    rule["reason"] = f"not checked: {errors[unknown[0]]}"

    tests = []
    for path in test_files or []:
        test = run_test_file(promtool, path)
        rc = test.pop("rc")
        tests.append(test)
        checks.append(_check(f"rule_test:{path}", test["status"], rc, 0, test["output"]))

    failed = sum(1 for c in checks if c["status"] == "fail")
    passed = sum(1 for c in checks if c["status"] == "pass")
    result: dict[str, Any] = {
        "files": files, "rules": rules, "tests": tests, "checks": checks,
        "summary": {"total": len(checks), "passed": passed, "failed": failed,
                    "dead": sum(1 for r in rules if r["status"] == "dead")},
    }
    if window is not None:
        result["window"] = window
    return result
