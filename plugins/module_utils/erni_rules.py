# -*- coding: utf-8 -*-
# erni-deploy: Prometheus alert rule checks (alert_rules_check): validity, unit tests, dead rules.
"""Validate Prometheus rule files and find rules that can never fire, or cannot fire yet.

- promtool does what it is authoritative for: `promtool check rules` and `promtool test rules`.
- Expressions are read with the `promql-parser` package (bindings of the Rust parser GreptimeDB
  maintains after Prometheus's own grammar). It replaced a hand-written tokenizer that saw an
  expression as flat groups of selectors: the library knows precedence, the two sides of each
  operator with its on()/ignoring() matching and each node's value type, which the check of
  sides that never match needs, and it renders any node back to PromQL so that side can be
  queried alone (prettify(); str() leaves quotes inside strings unescaped). Its one divergence
  from PromQL met here, escapes read inside `raw` strings, is undone by rewriting those first.
- A selector matching no series over the lookback window (series API), where it keeps the
  expression from ever having a sample, is told apart by asking again without its matchers
  one at a time: no_series and label_never_carried are dead, may_fire (the label is carried,
  with other values so far) is only a warning. A vector-vector operation other than
  and/or/unless whose sides both have series at the evaluation time but no pair matching
  (`count((lhs) and on(...) (rhs))`) is dead too: sides_never_match.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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

try:
    import promql_parser as pp

    HAS_PROMQL_PARSER = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_PROMQL_PARSER = False

from ansible.module_utils.erni_http import make_session

# ---------------------------------------------------------------------------------------- PromQL

# Functions whose result has samples whatever their argument matches.
ALWAYS_PRODUCE = frozenset(("absent", "absent_over_time", "vector", "scalar"))
# Functions meant to look for selectors that match nothing.
ABSENT_FUNCTIONS = frozenset(("absent", "absent_over_time"))
SET_OPERATORS = frozenset(("and", "or", "unless"))
# Labels the scrape configuration sets: a value never seen is a target nobody scrapes, not a
# condition that has not happened yet.
TARGET_LABELS = ("job", "instance")
_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
_PLAIN_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN_METRIC = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_SHOWN = 10  # values named in a reason before "and N more"


class PromQLError(ValueError):
    """An expression the parser refuses; the message is the parser's."""


def _quote(value: str) -> str:
    # JSON's escapes are a subset of Go's, so this is a valid PromQL double-quoted string
    return json.dumps(value, ensure_ascii=False)


def _label_text(name: str) -> str:
    return name if _PLAIN_LABEL.match(name) else _quote(name)


# strings and comments, in the order a reader meets them; group 1 is a `raw` string's content
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|#[^\n]*|`([^`]*)`')


def _unraw(expr: str) -> str:
    """`raw` strings as double-quoted ones: the parser reads escapes in them, PromQL does not."""
    return _STRINGS.sub(lambda m: m.group(0) if m.group(1) is None else _quote(m.group(1)), expr)


def parse_expr(expr: str) -> pp.Expr:
    """The expression's syntax tree; PromQLError with the parser's message when it is refused."""
    try:
        return pp.parse(_unraw(expr) if "`" in expr else expr)
    except Exception as exc:
        raise PromQLError(str(exc)) from exc
    except BaseException as exc:  # a panic in the Rust parser (pyo3's PanicException)
        if type(exc).__name__ != "PanicException":
            raise
        raise PromQLError(f"the PromQL parser failed on it: {exc}") from exc


@dataclass(frozen=True)
class Selector:
    """A vector selector: metric name and label matchers (range, offset and @ dropped)."""

    metric: str | None
    matchers: tuple[tuple[str, str, str], ...] = ()

    @property
    def text(self) -> str:
        """The selector as Prometheus's series API takes it in match[]."""
        parts = [matcher_text(m) for m in self.matchers]
        if self.metric is None:
            return "{" + ",".join(parts) + "}"
        if not _PLAIN_METRIC.match(self.metric):
            return "{" + ",".join([_quote(self.metric), *parts]) + "}"
        return self.metric + ("{" + ",".join(parts) + "}" if parts else "")

    @property
    def name_part(self) -> Selector:
        """The metric alone: its name and any __name__ matcher."""
        return Selector(self.metric, tuple(m for m in self.matchers if m[0] == "__name__"))

    def but(self, matcher: tuple[str, str, str]) -> Selector:
        return Selector(self.metric, tuple(m for m in self.matchers if m != matcher))

    def plus(self, *matchers: tuple[str, str, str]) -> Selector:
        return Selector(self.metric, self.matchers + matchers)


def matcher_text(matcher: tuple[str, str, str]) -> str:
    return f"{_label_text(matcher[0])}{matcher[1]}{_quote(matcher[2])}"


def selector_of(node: pp.VectorSelector) -> Selector:
    if node.matchers.or_matchers:
        raise PromQLError(f"`or` inside a selector is not PromQL: {node.prettify()}")
    return Selector(node.name, tuple((m.name, _MATCH_OPS[str(m.op)], m.value) for m in node.matchers.matchers))


def _children(node: pp.Expr) -> list[pp.Expr]:
    if isinstance(node, pp.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, pp.Call):
        return list(node.args)
    if isinstance(node, pp.AggregateExpr):
        return [n for n in (node.param, node.expr) if n is not None]
    if isinstance(node, pp.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return [node.expr]
    return []


def iter_selectors(node: pp.Expr, in_absent: bool = False) -> Iterator[tuple[Selector, bool]]:
    """Every selector, with whether it is inside absent() or absent_over_time()."""
    if isinstance(node, pp.VectorSelector):
        yield selector_of(node), in_absent
        return
    inside = in_absent or (isinstance(node, pp.Call) and node.func.name in ABSENT_FUNCTIONS)
    for child in _children(node):
        yield from iter_selectors(child, inside)


def extract_selectors(expr: str) -> list[str]:
    """Distinct selectors of an expression, in order of appearance."""
    return list(dict.fromkeys(sel.text for sel, _ in iter_selectors(parse_expr(expr))))


def _op(node: pp.BinaryExpr) -> str:
    return str(node.op).lower()


def blockers_of(node: pp.Expr, empty: set[str], dead_operations: frozenset[str] = frozenset()) -> list[str]:
    """Empty selectors (texts) and dead operations (rendered) that keep node from ever having a sample."""
    if isinstance(node, pp.VectorSelector):
        text = selector_of(node).text
        return [text] if text in empty else []
    if isinstance(node, pp.Call) and node.func.name in ALWAYS_PRODUCE:
        return []
    if isinstance(node, pp.BinaryExpr):
        left = blockers_of(node.lhs, empty, dead_operations)
        if _op(node) == "unless":  # `a unless b` has samples whenever a has
            return left
        right = blockers_of(node.rhs, empty, dead_operations)
        if _op(node) == "or":  # one branch with samples is enough
            return list(dict.fromkeys(left + right)) if left and right else []
        own = [node.prettify()] if dead_operations and node.prettify() in dead_operations else []
        return list(dict.fromkeys(left + right + own))
    return list(dict.fromkeys(b for child in _children(node) for b in blockers_of(child, empty, dead_operations)))


def _is_vector(node: pp.Expr) -> bool:
    if isinstance(node, (pp.ParenExpr, pp.UnaryExpr)):
        return _is_vector(node.expr)
    if isinstance(node, pp.Call):
        return bool(node.func.return_type == pp.ValueType.Vector)
    if isinstance(node, pp.BinaryExpr):
        return _is_vector(node.lhs) or _is_vector(node.rhs)
    return isinstance(node, (pp.VectorSelector, pp.AggregateExpr))


def vector_operations(node: pp.Expr) -> Iterator[pp.BinaryExpr]:
    """Vector-vector operations other than and/or/unless, where they could keep node from firing."""
    if isinstance(node, pp.Call) and node.func.name in ALWAYS_PRODUCE:
        return
    if isinstance(node, pp.BinaryExpr):
        if _op(node) not in SET_OPERATORS and _is_vector(node.lhs) and _is_vector(node.rhs):
            yield node
        yield from vector_operations(node.lhs)
        if _op(node) != "unless":
            yield from vector_operations(node.rhs)
        return
    for child in _children(node):
        yield from vector_operations(child)


def matching_of(node: pp.BinaryExpr) -> tuple[str, str, str]:
    """How an operation matches its sides: the `and` testing it, the grouping its sides are counted by, words."""
    matching = node.modifier.matching if node.modifier is not None else None
    if matching is None:
        return "and", "without ()", "all labels but __name__"
    labels = ", ".join(_label_text(name) for name in matching.labels)
    how = "on" if matching.type == pp.LabelModifierType.Include else "ignoring"
    return f"and {how}({labels})", f"by ({labels})" if how == "on" else f"without ({labels})", f"{how}({labels})"


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

class Unanswered(Exception):
    """Prometheus could not be asked, or answered an error (refused: it refused the query itself)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _short_error(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("NewConnectionError(", "Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:200]


class RulesClient:
    """The series API over the lookback window and the query API at its end, through one session."""

    def __init__(self, prometheus_url: str, start: float, end: float, verify: bool | str = True,
                 timeout: float = 10.0, bearer_token: str | None = None, username: str | None = None,
                 password: str | None = None, concurrency: int = 8) -> None:
        self.url, self.start, self.end, self.timeout = prometheus_url.rstrip("/"), start, end, timeout
        self.concurrency = concurrency
        self.session = make_session(verify, pool_size=concurrency)
        if bearer_token:
            self.session.headers["Authorization"] = f"Bearer {bearer_token}"
        elif username is not None:
            self.session.auth = (username, password or "")
        self.cache: dict[str, list[dict[str, str]]] = {}

    def _get(self, path: str, params: dict[str, str], what: str) -> Any:
        api = self.url + path
        try:
            resp = self.session.get(api, params=params, timeout=self.timeout, verify=self.session.verify)
        except requests.exceptions.SSLError as exc:
            raise Unanswered(f"TLS error: {_short_error(exc)}") from exc
        except requests.exceptions.Timeout as exc:
            raise Unanswered(f"no answer from {api} within {self.timeout:g} s") from exc
        except requests.exceptions.RequestException as exc:
            raise Unanswered(f"connection to {api} failed: {_short_error(exc)}") from exc
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "status" not in answer:
            raise Unanswered(f"status {resp.status_code} from {api}, not a Prometheus API answer")
        if resp.status_code != 200 or answer.get("status") != "success":
            detail = ": ".join(str(answer[k]) for k in ("errorType", "error") if answer.get(k))
            raise Unanswered(f"Prometheus answered {resp.status_code} for {what}: {detail or 'an error'}",
                             refused=resp.status_code in (400, 422))
        return answer.get("data")

    def series(self, selector: str, keep: bool = True) -> list[dict[str, str]]:
        """The label sets of the series selector matched in the window (kept for the next question)."""
        if selector in self.cache:
            return self.cache[selector]
        data = self._get("/api/v1/series", {"match[]": selector, "start": f"{self.start:.3f}",
                                            "end": f"{self.end:.3f}"}, selector)
        if not isinstance(data, list):
            raise Unanswered(f"Prometheus answered no series list for {selector}")
        if keep or not data:
            self.cache[selector] = data
        return data

    def query(self, expr: str) -> list[dict[str, str]]:
        """The label sets of an instant query's result at the window's end."""
        data = self._get("/api/v1/query", {"query": expr, "time": f"{self.end:.3f}"}, expr)
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise Unanswered(f"Prometheus answered no instant vector for {expr}")
        return [r.get("metric", {}) for r in data.get("result") or []]

    def each(self, work: Callable[[Any], Any], items: list[Any]) -> list[tuple[Any, Any, Unanswered | None]]:
        """work(item) for every item, concurrently: (item, result, None) or (item, None, why not)."""
        def one(item: Any) -> tuple[Any, Any, Unanswered | None]:
            try:
                return item, work(item), None
            except Unanswered as exc:
                return item, None, exc
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(items) or 1))) as pool:
            return list(pool.map(one, items))


# ------------------------------------------------------------------------------ why a rule is dead

def _listed(values: list[str]) -> str:
    more = f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else ""
    return ", ".join(values[:_SHOWN]) + more


def _values(series: list[dict[str, str]], label: str) -> list[str]:
    return sorted({s[label] for s in series if label in s})


def _finding(kind: str, subject: str, reason: str, label: str | None = None,
             values: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"class": kind, "subject": subject, "label": label, "values": values or [], "reason": reason, **extra}


def _label_finding(sel: Selector, matcher: tuple[str, str, str], on: Selector,
                   series: list[dict[str, str]]) -> dict[str, Any]:
    """The matcher alone keeps sel empty among the series of on: never carried, or not seen yet."""
    label, text = matcher[0], matcher_text(matcher)
    values = _values(series, label)
    if values:
        return _finding("may_fire", sel.text, f"{text} has not been seen on {on.text} yet (the label has values "
                        f"{_listed(values)}): may fire", label, values)
    names = sorted({name for s in series for name in s} - {"__name__"})
    return _finding("label_never_carried", sel.text, f"{on.text} has series, but none carries the label {label}, "
                    f"so {text} never matches (labels seen: {_listed(names)})", label, names)


def diagnose(sel: Selector, client: RulesClient, lookback: str) -> list[dict[str, Any]]:
    """Why a selector matched no series in the window (one finding, or one per matcher to blame)."""
    metric = sel.name_part
    labels = [m for m in sel.matchers if m[0] != "__name__"]
    gone = f"no series of {sel.text} in the last {lookback}: no scrape job produces it"
    if metric.matchers or metric.metric:
        everything = client.series(metric.text, keep=False)
        if not everything:
            tail = f" (nor any series of {metric.text})" if labels else ""
            return [_finding("no_series", sel.text, gone + tail)]
    else:
        everything = []
    for matcher in (m for m in labels if m[0] in TARGET_LABELS):
        if not client.series(metric.plus(matcher).text):
            seen = _values(everything, matcher[0])
            tail = f" ({metric.text} exists for {matcher[0]}s: {_listed(seen)})" if seen else ""
            return [_finding("no_series", sel.text, gone + tail, matcher[0], seen)]
    others = [m for m in labels if m[0] not in TARGET_LABELS]
    for matcher in others:  # the one matcher without which sel has series
        rest = sel.but(matcher)
        if rest.text != "{}" and client.series(rest.text):
            return [_label_finding(sel, matcher, rest, client.series(rest.text))]
    base = metric.plus(*(m for m in labels if m[0] in TARGET_LABELS))
    if base.text != "{}" and others:
        blamed = [_label_finding(sel, m, base, client.series(base.text))
                  for m in others if not client.series(base.plus(m).text)]
        if blamed:
            return blamed
        return [_finding("may_fire", sel.text, f"{', '.join(matcher_text(m) for m in others)} have each been seen "
                         f"on {base.text}, but not together yet: may fire")]
    jobs = _values(everything, "job")
    return [_finding("no_series", sel.text, gone + (f" ({metric.text} exists for jobs: {_listed(jobs)})"
                                                  if jobs else ""), "job", jobs)]


def _label_sets(series: list[dict[str, str]]) -> str:
    shown = []
    for labels in series[:3]:
        text = ",".join(f"{_label_text(k)}={_quote(v)}" for k, v in sorted(labels.items()))
        shown.append(text if len(labels) == 1 else "{" + text + "}")
    return " or ".join(shown) + (f" and {len(series) - 3} more" if len(series) > 3 else "")


def sides_never_match(node: pp.BinaryExpr, client: RulesClient) -> dict[str, Any] | None:
    """A finding when both sides of the operation have series now but no pair matches; None otherwise."""
    test, group, words = matching_of(node)
    lhs, rhs = node.lhs.prettify(), node.rhs.prettify()
    left = client.query(f"count {group} ({lhs})")
    right = client.query(f"count {group} ({rhs})") if left else []
    if not left or not right or client.query(f"count(({lhs}) {test} ({rhs}))"):
        return None
    return _finding("sides_never_match", " ".join(node.prettify().split()),
                    f'the two sides of "{_op(node)}" both have series but never match on their labels (left has '
                    f"{_label_sets(left)}, right {_label_sets(right)}; matching: {words})",
                    left=left[:3], right=right[:3], matching=words)


# ---------------------------------------------------------------------------------- the checks

def utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(name: str, status: str, value: Any, limit: Any, reason: str | None) -> dict[str, Any]:
    return {"name": name, "status": status, "value": value, "limit": limit,
            "reason": None if status == "pass" else reason}


def judge_rules(rules: list[dict[str, Any]], trees: dict[int, pp.Expr], client: RulesClient, lookback: str,
                dead_rules: str) -> list[dict[str, Any]]:
    """Look up every selector and operation; set each rule's status, findings and reason; return the checks."""
    selectors = {sel.text: sel for tree in trees.values() for sel, _ in iter_selectors(tree)}
    answers = client.each(lambda text: len(client.series(text, keep=False)), list(selectors))
    counts = {text: count for text, count, error in answers if error is None}
    errors = {text: str(error) for text, _, error in answers if error is not None}
    empty = {text for text, count in counts.items() if count == 0}
    unknown = {i: [errors[s.text] for s, _ in iter_selectors(tree) if s.text in errors] for i, tree in trees.items()}

    operations = {op.prettify(): op for i, tree in trees.items() if not unknown[i] for op in vector_operations(tree)
                  if not any(sel.text in empty for sel, _ in iter_selectors(op))}
    tested = client.each(lambda key: sides_never_match(operations[key], client), list(operations))
    findings = {key: [finding] for key, finding, _ in tested if finding is not None}
    further = {key: error for key, _, error in tested if error is not None}  # refused: the rule's warning

    blockers = {i: blockers_of(tree, empty, frozenset(findings)) for i, tree in trees.items()}
    to_diagnose = list(dict.fromkeys(b for found in blockers.values() for b in found if b in selectors))
    for text, found, error in client.each(lambda text: diagnose(selectors[text], client, lookback), to_diagnose):
        if error is not None:
            further[text] = error
            found = [_finding("no_series", text, f"{text} matches no series in the last {lookback} "
                                                 f"(could not tell why: {error})")]
        findings[text] = found

    failed = list(errors.values()) or [str(e) for e in further.values() if not e.refused]
    what = f"{len(errors)} of {len(selectors)} series lookups" if errors else f"{len(failed)} further lookups"
    checks = [_check("prometheus", "fail" if failed else "pass", len(counts), len(selectors),
                     f"{what} failed: {failed[0]}" if failed else None)]
    for index, tree in trees.items():
        rule = rules[index]
        for entry in rule["selectors"]:
            entry["series"] = counts.get(entry["selector"])
        rule["findings"] = [f for key in blockers[index] for f in findings[key]]
        dead = [f for f in rule["findings"] if f["class"] != "may_fire"]
        name = f"{rule['group']}/{rule['name']}"
        if rule["findings"]:
            said = "; ".join(f["reason"] for f in dead or rule["findings"])
            rule.update(status="dead" if dead else "may_fire",
                        reason=f"rule {rule['name']}: {said}" + ("; the rule can never fire" if dead else ""))
            checks.append(_check(f"dead_rule:{name}" if dead else f"may_fire:{name}",
                                 "fail" if dead and dead_rules == "fail" else "warn", 0, 1,
                                 f"{rule['file']}: {rule['reason']}"))
            continue
        refused = [further[op.prettify()] for op in vector_operations(tree) if op.prettify() in further]
        if unknown[index] or refused:
            rule.update(status="warn", reason=f"not checked: {(unknown[index] or refused)[0]}")
            if refused and refused[0].refused:
                checks.append(_check(f"rule_query:{name}", "warn", None, None, f"{rule['file']}: {rule['reason']}"))
    return checks


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

    trees: dict[int, pp.Expr] = {}
    for index, rule in enumerate(rules):
        rule.update(status="pass", selectors=[], findings=[], reason=None)
        try:
            tree = parse_expr(rule["expr"])
            texts = dict.fromkeys(sel.text for sel, _ in iter_selectors(tree))
        except PromQLError as exc:
            rule.update(status="warn", reason=f"could not read the selectors: {exc}")
            checks.append(_check(f"selectors:{rule['group']}/{rule['name']}", "warn", None, None,
                                 f"{rule['file']}: {rule['reason']}"))
            continue
        trees[index] = tree
        rule["selectors"] = [{"selector": text, "series": None} for text in texts]

    window: dict[str, str] | None = None
    if prometheus_url:
        end = time.time() if evaluation_time is None else float(evaluation_time)
        start = end - parse_duration(lookback)
        window = {"start": utc_iso(start), "end": utc_iso(end)}
        client = RulesClient(prometheus_url, start, end, verify=verify, timeout=timeout, bearer_token=bearer_token,
                             username=username, password=password)
        try:
            checks.extend(judge_rules(rules, trees, client, lookback, dead_rules))
        finally:
            client.session.close()

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
                    "dead": sum(1 for r in rules if r["status"] == "dead"),
                    "may_fire": sum(1 for r in rules if r["status"] == "may_fire")},
    }
    if window is not None:
        result["window"] = window
    return result
