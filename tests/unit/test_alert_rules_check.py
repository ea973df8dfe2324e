"""alert_rules_check with the real promtool and a real Prometheus over known data."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT
from modules_harness import run_module
from prom import KnownData, PromServer, start_prometheus
from servers import LocalServer, json_route

REAL_RULES = ROOT / "sandbox" / "prometheus" / "erni-ki.rules.yml"
TOKEN = "prometheus-bearer-token-that-must-not-leak-0123"
PASSWORD = "prometheus-password-that-must-not-leak-4567"

RULES = """\
groups:
  - name: erni-test
    rules:
      - alert: ServiceDown
        expr: up{job="erni-ki"} == 0
        for: 30s
        labels: {severity: critical}
      - alert: OllamaDown
        expr: up{job="ollama-exporter-typo"} == 0
        labels: {severity: critical}
      - alert: ErniKiTargetMissing
        expr: absent(up{job="nonexistent"})
      - record: job:http_requests:rate5m
        expr: sum by (job) (rate(http_requests_total{job="erni-ki"}[5m]))
      - alert: HighErrorRate
        expr: |
          sum(rate(http_requests_total{job="erni-ki",status=~"5.."}[5m]))
            / sum(rate(http_requests_total{job="erni-ki"}[5m])) > 0.05
      - alert: HighResponseLatency
        expr: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="erni-ki"}[5m]))) > 5
      - alert: NoOllamaInstance
        expr: (sum(up{job="ollama-exporter-typo"}) or vector(0)) == 0
"""

INVALID_RULES = """\
groups:
  - name: broken
    rules:
      - alert: Broken
        expr: sum(rate(up{job="erni-ki"}[5m]) >
"""

PASSING_TEST = """\
rule_files: [rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'up{job="erni-ki", instance="a"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 2m
        alertname: ServiceDown
        exp_alerts:
          - exp_labels: {severity: critical, job: erni-ki, instance: a}
"""

FAILING_TEST = """\
rule_files: [rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'up{job="erni-ki", instance="a"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 2m
        alertname: ServiceDown
        exp_alerts: []
"""


@dataclass
class Setup:
    prom: PromServer
    data: KnownData
    dir: Path

    @property
    def rules(self) -> str:
        return str(self.dir / "rules.yml")

    def args(self, **extra: object) -> dict:
        return {"rule_files": [self.rules], "prometheus_url": self.prom.url,
                "evaluation_time": self.data.end, **extra}


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("rules")
    data = KnownData(minutes=20)
    data.gauge("up", {"job": "erni-ki", "instance": "a"}, 1)
    data.counter("http_requests_total", {"job": "erni-ki", "instance": "a", "status": "200"}, 10)
    data.counter("http_requests_total", {"job": "erni-ki", "instance": "a", "status": "500"}, 0.1)
    data.histogram("http_request_duration_seconds", {"job": "erni-ki", "instance": "a"}, 10,
                   {0.1: 0.5, 0.5: 0.9, 1: 0.99})
    prom = start_prometheus(work / "prom", data)
    for name, text in (("rules.yml", RULES), ("invalid.yml", INVALID_RULES),
                       ("passing_test.yml", PASSING_TEST), ("failing_test.yml", FAILING_TEST)):
        write(work, name, text)
    yield Setup(prom, data, work)
    prom.stop()


def rules_by_name(res: dict) -> dict[str, dict]:
    return {r["name"]: r for r in res["rules"]}


def checks_by_name(res: dict) -> dict[str, dict]:
    return {c["name"]: c for c in res["checks"]}


# ------------------------------------------------------------------------------ promtool

def test_valid_rules_pass_validation_without_prometheus(setup: Setup) -> None:
    res = run_module("alert_rules_check", {"rule_files": [setup.rules]})
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert res["files"] == [{"file": setup.rules, "valid": True, "rules": 7, "reason": None}]
    assert res["checks"] == [{"name": f"rule_file:{setup.rules}", "status": "pass", "value": 7, "limit": None,
                              "reason": None}]
    assert res["summary"] == {"total": 1, "passed": 1, "failed": 0, "dead": 0, "may_fire": 0}
    assert "window" not in res
    record = rules_by_name(res)["job:http_requests:rate5m"]
    assert record["type"] == "record" and record["group"] == "erni-test" and record["status"] == "pass"
    assert record["selectors"] == [{"selector": 'http_requests_total{job="erni-ki"}', "series": None}]
    assert rules_by_name(res)["ServiceDown"]["type"] == "alert"


def test_prometheus_options_without_prometheus_url_give_a_warning(setup: Setup) -> None:
    res = run_module("alert_rules_check", {"rule_files": [setup.rules], "evaluation_time": setup.data.end,
                                           "bearer_token": TOKEN})
    assert not res.get("failed"), res
    assert "bearer_token, evaluation_time ignored: they only matter with prometheus_url" in str(res["warnings"])
    assert TOKEN not in json.dumps(res)


def test_an_invalid_rules_file_fails_with_promtools_message(setup: Setup) -> None:
    invalid = str(setup.dir / "invalid.yml")
    res = run_module("alert_rules_check", {"rule_files": [setup.rules, invalid]})
    assert res["failed"] is True
    bad = res["files"][1]
    assert bad["file"] == invalid and bad["valid"] is False
    assert "could not parse expression" in bad["reason"] and "unclosed left parenthesis" in bad["reason"]
    assert 'group "broken", rule 1, "Broken"' in bad["reason"]
    check = checks_by_name(res)[f"rule_file:{invalid}"]
    assert check["status"] == "fail" and check["reason"] == bad["reason"]
    assert res["files"][0]["valid"] is True
    assert {r["file"] for r in res["rules"]} == {setup.rules}, "rules of an invalid file are not judged"
    assert res["summary"] == {"total": 2, "passed": 1, "failed": 1, "dead": 0, "may_fire": 0}
    assert "unclosed left parenthesis" in res["msg"]


def test_a_missing_rules_file_fails_and_says_so(setup: Setup) -> None:
    missing = str(setup.dir / "nope.yml")
    res = run_module("alert_rules_check", {"rule_files": [missing], "fail_on_error": False})
    assert "failed" not in res
    assert res["files"][0]["valid"] is False
    assert res["files"][0]["reason"] == f"{missing} does not exist: check rule_files"
    assert res["summary"]["failed"] == 1


def test_a_pattern_is_expanded_as_prometheus_does_and_one_matching_nothing_is_named(setup: Setup,
                                                                                     tmp_path: Path) -> None:
    rules = (ROOT / "sandbox" / "prometheus" / "erni-ki.rules.yml").read_text()
    (tmp_path / "rules").mkdir()
    for name in ("20-db.yml", "10-infra.yml"):
        (tmp_path / "rules" / name).write_text(rules)
    res = run_module("alert_rules_check", {"rule_files": [str(tmp_path / "rules" / "*.yml")]})
    assert not res.get("failed"), res.get("msg")
    assert [f["file"] for f in res["files"]] == [str(tmp_path / "rules" / n) for n in ("10-infra.yml", "20-db.yml")]
    nothing = str(tmp_path / "alerts" / "*.yml")
    res = run_module("alert_rules_check", {"rule_files": [nothing]})
    assert res.get("failed") and res["msg"] == f"rule_files pattern {nothing!r} matches no file"


def test_a_file_without_rules_is_a_warning(setup: Setup, tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.yml", "groups: []\n")
    res = run_module("alert_rules_check", {"rule_files": [empty]})
    assert not res.get("failed"), res
    assert res["checks"][0]["status"] == "warn" and res["checks"][0]["reason"] == f"{empty} holds no rules"
    assert res["summary"] == {"total": 1, "passed": 0, "failed": 0, "dead": 0, "may_fire": 0}


def test_promtool_unit_tests_pass_and_fail(setup: Setup) -> None:
    passing, failing = str(setup.dir / "passing_test.yml"), str(setup.dir / "failing_test.yml")
    ok = run_module("alert_rules_check", {"rule_files": [setup.rules], "test_files": [passing]})
    assert not ok.get("failed"), ok
    assert ok["tests"][0]["file"] == passing and ok["tests"][0]["status"] == "pass"
    assert "SUCCESS" in ok["tests"][0]["output"]
    assert checks_by_name(ok)[f"rule_test:{passing}"]["value"] == 0

    res = run_module("alert_rules_check", {"rule_files": [setup.rules], "test_files": [passing, failing]})
    assert res["failed"] is True
    assert [t["status"] for t in res["tests"]] == ["pass", "fail"]
    out = res["tests"][1]["output"]
    assert "FAILED" in out and "alertname: ServiceDown" in out and "exp:[]" in out.replace(" ", "")
    check = checks_by_name(res)[f"rule_test:{failing}"]
    assert check["status"] == "fail" and check["value"] == 1 and check["limit"] == 0 and check["reason"] == out
    assert res["summary"] == {"total": 3, "passed": 2, "failed": 1, "dead": 0, "may_fire": 0}


def test_the_projects_real_rules_validate() -> None:
    res = run_module("alert_rules_check", {"rule_files": [str(REAL_RULES)]})
    assert not res.get("failed"), res
    assert res["files"][0]["valid"] is True and res["files"][0]["rules"] == 3
    assert {r["name"] for r in res["rules"]} == {"OpenWebUIDown", "HighErrorRate", "HighResponseLatency"}
    assert rules_by_name(res)["HighErrorRate"]["selectors"] == [
        {"selector": 'http_requests_total{job="erni-ki",status=~"5.."}', "series": None},
        {"selector": 'http_requests_total{job="erni-ki"}', "series": None},
    ]


def test_the_projects_real_rules_have_no_dead_rule_on_data_like_the_sandboxs(setup: Setup) -> None:
    res = run_module("alert_rules_check", {**setup.args(), "rule_files": [str(REAL_RULES)]})
    assert not res.get("failed"), res
    assert res["summary"]["dead"] == 0
    assert all(s["series"] for r in res["rules"] for s in r["selectors"]), res["rules"]


# ---------------------------------------------------------------------------- dead rules

def test_a_rule_selecting_a_job_no_scrape_has_is_dead(setup: Setup) -> None:
    res = run_module("alert_rules_check", setup.args())
    assert res["failed"] is True
    rules = rules_by_name(res)
    dead = rules["OllamaDown"]
    assert dead["status"] == "dead"
    assert dead["selectors"] == [{"selector": 'up{job="ollama-exporter-typo"}', "series": 0}]
    # the reason now says why (no scrape job has that name) and which jobs up exists for
    assert dead["reason"] == ('rule OllamaDown: no series of up{job="ollama-exporter-typo"} in the last 1h: no scrape '
                              "job produces it (up exists for jobs: erni-ki); the rule can never fire")
    assert [(f["class"], f["label"], f["values"]) for f in dead["findings"]] == [("no_series", "job", ["erni-ki"])]
    check = checks_by_name(res)["dead_rule:erni-test/OllamaDown"]
    assert check["status"] == "fail" and check["value"] == 0 and check["limit"] == 1
    assert check["reason"] == f"{setup.rules}: {dead['reason']}"
    # the others can fire
    for name in ("ServiceDown", "ErniKiTargetMissing", "job:http_requests:rate5m", "HighErrorRate",
                 "HighResponseLatency", "NoOllamaInstance"):
        assert rules[name]["status"] == "pass" and rules[name]["reason"] is None, rules[name]
    assert rules["ServiceDown"]["selectors"] == [{"selector": 'up{job="erni-ki"}', "series": 1}]
    assert rules["HighErrorRate"]["selectors"] == [
        {"selector": 'http_requests_total{job="erni-ki",status=~"5.."}', "series": 1},
        {"selector": 'http_requests_total{job="erni-ki"}', "series": 2}]
    assert rules["HighResponseLatency"]["selectors"][0]["series"] == 4  # three bounds and +Inf
    # absent() is meant to match nothing; `or vector(0)` still gives a sample
    assert rules["ErniKiTargetMissing"]["selectors"] == [{"selector": 'up{job="nonexistent"}', "series": 0}]
    assert rules["NoOllamaInstance"]["selectors"] == [{"selector": 'up{job="ollama-exporter-typo"}', "series": 0}]
    assert checks_by_name(res)["prometheus"] == {"name": "prometheus", "status": "pass", "value": 6, "limit": 6,
                                                 "reason": None}
    assert res["summary"] == {"total": 3, "passed": 2, "failed": 1, "dead": 1, "may_fire": 0}
    assert res["msg"].startswith("1 of 3 rule checks failed: dead_rule:erni-test/OllamaDown: ")


def test_dead_rules_warn_does_not_fail_the_task(setup: Setup) -> None:
    res = run_module("alert_rules_check", setup.args(dead_rules="warn"))
    assert not res.get("failed"), res
    assert rules_by_name(res)["OllamaDown"]["status"] == "dead"
    assert checks_by_name(res)["dead_rule:erni-test/OllamaDown"]["status"] == "warn"
    assert res["summary"] == {"total": 3, "passed": 2, "failed": 0, "dead": 1, "may_fire": 0}


def test_the_lookback_window_is_where_series_are_looked_for(setup: Setup) -> None:
    # two hours after the data ends, a one-hour window sees nothing: every rule needing data is dead
    later = run_module("alert_rules_check", setup.args(evaluation_time=setup.data.end + 7200, fail_on_error=False))
    dead = {r["name"] for r in later["rules"] if r["status"] == "dead"}
    assert dead == {"ServiceDown", "OllamaDown", "job:http_requests:rate5m", "HighErrorRate",
                    "HighResponseLatency"}
    assert later["window"]["end"].endswith("Z")
    # a three-hour window reaches back to the data again
    wide = run_module("alert_rules_check", setup.args(evaluation_time=setup.data.end + 7200, lookback="3h",
                                                      fail_on_error=False))
    assert {r["name"] for r in wide["rules"] if r["status"] == "dead"} == {"OllamaDown"}
    assert 'no series of up{job="ollama-exporter-typo"} in the last 3h' in rules_by_name(wide)["OllamaDown"]["reason"]


def test_a_stopped_prometheus_fails_the_prometheus_check(setup: Setup, tmp_path: Path) -> None:
    prom = start_prometheus(tmp_path / "prom", None)
    url = prom.url
    prom.stop()
    res = run_module("alert_rules_check", {"rule_files": [setup.rules], "prometheus_url": url})
    assert res["failed"] is True
    check = checks_by_name(res)["prometheus"]
    assert check["status"] == "fail" and check["value"] == 0 and check["limit"] == 6
    assert check["reason"].startswith("6 of 6 series lookups failed: connection to " + url + "/api/v1/series failed")
    # nothing is reported as alive, or as dead, without an answer
    assert {r["status"] for r in res["rules"]} == {"warn"}
    assert all(r["reason"].startswith("not checked: connection to") for r in res["rules"])
    assert res["summary"]["dead"] == 0 and res["summary"]["failed"] == 1


def test_a_prometheus_answering_an_error_fails_the_prometheus_check(setup: Setup) -> None:
    srv = LocalServer(routes={"/api/v1/series": json_route(
        503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"})})
    try:
        res = run_module("alert_rules_check", {"rule_files": [setup.rules], "prometheus_url": srv.url})
    finally:
        srv.close()
    assert res["failed"] is True
    reason = checks_by_name(res)["prometheus"]["reason"]
    assert "Prometheus answered 503" in reason and "unavailable: TSDB not ready" in reason


def test_a_server_that_is_not_prometheus_fails_the_prometheus_check(setup: Setup) -> None:
    srv = LocalServer(routes={"/api/v1/series": lambda _h, _b: (200, {}, b"<html>login</html>")})
    try:
        res = run_module("alert_rules_check", {"rule_files": [setup.rules], "prometheus_url": srv.url + "/"})
    finally:
        srv.close()
    assert checks_by_name(res)["prometheus"]["status"] == "fail"
    assert "not a Prometheus API answer" in checks_by_name(res)["prometheus"]["reason"]


def test_the_series_api_gets_each_selector_and_the_window(setup: Setup) -> None:
    one = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}}
    srv = LocalServer(routes={"/api/v1/series": json_route(200, {"status": "success", "data": [{"__name__": "x"}]}),
                              "/api/v1/query": json_route(200, one)})
    try:
        res = run_module("alert_rules_check", {"rule_files": [setup.rules], "prometheus_url": srv.url,
                                               "evaluation_time": 1800000000, "lookback": "30m",
                                               "bearer_token": TOKEN})
    finally:
        srv.close()
    assert not res.get("failed"), res
    from urllib.parse import parse_qs, urlsplit

    asked = [parse_qs(urlsplit(path).query) for _m, path, _h, _b in srv.requests if "/series?" in path]
    queried = [parse_qs(urlsplit(path).query) for _m, path, _h, _b in srv.requests if "/query?" in path]
    assert sorted(q["match[]"][0] for q in asked) == sorted({
        'up{job="erni-ki"}', 'up{job="ollama-exporter-typo"}', 'up{job="nonexistent"}',
        'http_requests_total{job="erni-ki"}', 'http_requests_total{job="erni-ki",status=~"5.."}',
        'http_request_duration_seconds_bucket{job="erni-ki"}'})
    assert {(q["start"][0], q["end"][0]) for q in asked} == {("1799998200.000", "1800000000.000")}
    assert res["window"] == {"start": "2027-01-15T07:30:00Z", "end": "2027-01-15T08:00:00Z"}
    # HighErrorRate's "/" is asked whether its sides match, at the window's end: each side, then both
    assert {q["time"][0] for q in queried} == {"1800000000.000"} and len(queried) == 3
    both = queried[-1]["query"][0]
    assert both.startswith("count((sum(rate(http_requests_total{") and ") and (sum(" in both
    assert {h["Authorization"] for _m, _p, h, _b in srv.requests} == {f"Bearer {TOKEN}"}


def test_credentials_reach_prometheus_and_never_appear_in_the_result(setup: Setup) -> None:
    srv = LocalServer(routes={"/api/v1/series": json_route(
        401, {"status": "error", "errorType": "unauthorized", "error": "bad credentials"})})
    try:
        basic = run_module("alert_rules_check", {"rule_files": [setup.rules], "prometheus_url": srv.url,
                                                 "username": "deploy", "password": PASSWORD})
        bearer = run_module("alert_rules_check", {"rule_files": [setup.rules], "prometheus_url": srv.url,
                                                  "bearer_token": TOKEN})
    finally:
        srv.close()
    import base64

    sent = {h.get("Authorization") for _m, _p, h, _b in srv.requests}
    assert "Basic " + base64.b64encode(f"deploy:{PASSWORD}".encode()).decode() in sent
    assert f"Bearer {TOKEN}" in sent
    assert basic["failed"] and bearer["failed"]
    assert "unauthorized: bad credentials" in checks_by_name(basic)["prometheus"]["reason"]
    text = json.dumps([basic, bearer])
    assert PASSWORD not in text and TOKEN not in text


def test_runs_in_check_mode(setup: Setup) -> None:
    res = run_module("alert_rules_check", setup.args(dead_rules="warn"), check_mode=True)
    assert not res.get("failed"), res
    assert res["changed"] is False and res["summary"]["dead"] == 1


@pytest.mark.parametrize("args, message", [
    ({"lookback": "1 hour"}, "lookback: '1 hour' is not a duration such as 30m, 1h or 1h30m"),
    ({"lookback": "0m"}, "lookback: '0m' is not a duration above 0"),
    ({"promtool": "/nonexistent/promtool"}, "promtool '/nonexistent/promtool' was not found"),
    ({"prometheus_url": "127.0.0.1:9090"}, "prometheus_url '127.0.0.1:9090' is not an http(s) URL"),
    ({"dead_rules": "ignore"}, "value of dead_rules must be one of: fail, warn"),
    ({"bearer_token": TOKEN, "username": "deploy", "password": PASSWORD},
     "parameters are mutually exclusive: bearer_token|username"),
    ({"username": "u"}, "parameters are required together: username, password"),
    ({"rule_files": []}, "rule_files is empty"),
])
def test_bad_input_is_refused_with_a_message_naming_it(args: dict, message: str) -> None:
    res = run_module("alert_rules_check", {"rule_files": [str(REAL_RULES)], **args})
    assert res["failed"] is True
    assert message in res["msg"], res["msg"]
    assert "checks" not in res
    assert TOKEN not in json.dumps(res) and PASSWORD not in json.dumps(res)


# ------------------------------------------------------------------------ reading PromQL
# promql-parser reads the expressions; these pin what we take from its tree.

@pytest.mark.parametrize("expr, selectors", [
    # nested functions and by (...) before and after the argument
    ('histogram_quantile(0.95, sum by (le, job) (rate(http_request_duration_seconds_bucket{job="a"}[5m])))',
     ['http_request_duration_seconds_bucket{job="a"}']),
    ("sum(rate(x_total[5m])) without (instance, pod) > 0", ["x_total"]),
    ("SUM BY (job) (up)", ["up"]),
    ("topk by (job) (3, count_values(\"version\", build_info))", ["build_info"]),
    # strings containing braces, brackets, parentheses, commas and escaped quotes
    ('http_requests_total{path="/api/{id}",handler=~"a(b|c)[0-9],x",msg="say \\"hi\\" }"}',
     ['http_requests_total{path="/api/{id}",handler=~"a(b|c)[0-9],x",msg="say \\"hi\\" }"}']),
    ("up{job='single',env=`raw\\d`}", ['up{job="single",env="raw\\\\d"}']),
    # regex and negative matchers, trailing comma
    ('nginx_http_requests_total{status=~"5..",job!="x",instance!~"test.*",}',
     ['nginx_http_requests_total{status=~"5..",job!="x",instance!~"test.*"}']),
    # offset, @, subqueries
    ("rate(x[5m] offset 1h) - rate(x[5m] offset -1d @ 1700000000)", ["x"]),
    # (the hand-written parser also took `@ end()` after a function call and scalar(time()); promtool
    # refuses both, and so does promql-parser)
    ('max_over_time(deriv(rate(y{a="b"}[1m])[10m:30s] @ end())[1h:])', ['y{a="b"}']),
    ("avg_over_time((a + b)[5m:1m])", ["a", "b"]),
    # binary operators, on/ignoring, group_left/right with and without labels, bool
    ("a / on(instance) group_left(node, role) b", ["a", "b"]),
    ("a * ignoring(code) group_right c > bool 1", ["a", "c"]),
    ("a and b or c unless d", ["a", "b", "c", "d"]),
    ("a atan2 b", ["a", "b"]),
    # selectors without a metric name, recording rule names with colons
    ('{__name__=~"job:.*:rate5m"} and {job="x"}', ['{__name__=~"job:.*:rate5m"}', '{job="x"}']),
    ('{"my.metric", a="b"}', ['{__name__="my.metric",a="b"}']),
    ('job:http_requests:rate5m{job="a"} > 0.5', ['job:http_requests:rate5m{job="a"}']),
    # numbers of every kind, comments, keywords as label names, Inf and NaN
    ("x > 1e3 and y < 0x1F and z != Inf and w == NaN and v > .5  # by (nothing) {a=\"b\"}",
     ["x", "y", "z", "w", "v"]),
    ('up{on="x",by="y",offset="z"}', ['up{on="x",by="y",offset="z"}']),
    # absent stays a selector (it is looked up, but cannot make a rule dead)
    ('absent_over_time(up{job="gone"}[5m]) or absent(up{job="gone2"})', ['up{job="gone"}', 'up{job="gone2"}']),
    ("vector(1) + time()", []),
    ('label_replace(up, "dst", "$1", "src", "(.*)")', ["up"]),
    ("x + x + x + up{} + up", ["x", "up"]),
])
def test_every_selector_is_found(expr: str, selectors: list[str]) -> None:
    from ansible.module_utils.erni_rules import extract_selectors

    assert extract_selectors(expr) == selectors


def test_strings_are_decoded_and_raw_strings_kept_raw() -> None:
    from ansible.module_utils.erni_rules import extract_selectors, parse_expr

    # promql-parser reads escapes inside `raw` strings, PromQL does not: they are rewritten first
    assert extract_selectors('up{a=~`b\\.c`, b="`", c=`"`} # `x\\d`') == ['up{a=~"b\\\\.c",b="`",c="\\""}']
    selector = parse_expr('up{a=~"b\\\\.c",b="\\u00e9\\x41\\101\\n"}')
    assert [(m.name, m.value) for m in selector.matchers.matchers] == [("a", "b\\.c"), ("b", "\u00e9AA\n")]


@pytest.mark.parametrize("expr, message", [
    ('up{job="x}', "unterminated quoted string"),
    ("sum(rate(x[5m])", "unclosed left parenthesis"),
    ("x)", "unexpected right parenthesis ')'"),
    ("up{job=x}", "unexpected identifier 'x' in label matching, expected string"),
    ('up{job~"x"}', "unexpected character inside braces: '~'"),
    ("{} > 0", "vector selector must contain at least one non-empty matcher"),
    ('up{a="\\q"}', "unknown escape sequence 'q'"),
    ("x > 5x", "bad number or duration syntax: 5x"),
    ("x $ y", "unexpected character: '$'"),
    ("rate(x)", "expected type matrix in call to function 'rate', got vector"),
    ("foo(bar)", "unknown function with name 'foo'"),
    ('up{job="a" or job="b"}', "`or` inside a selector is not PromQL"),
])
def test_parse_errors_name_the_problem(expr: str, message: str) -> None:
    from ansible.module_utils.erni_rules import PromQLError, extract_selectors

    with pytest.raises(PromQLError) as err:
        extract_selectors(expr)
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("expr, empty, blockers", [
    ('up{job="a"} == 0', {'up{job="a"}'}, ['up{job="a"}']),
    ('up{job="a"} == 0', set(), []),
    ("absent(x)", {"x"}, []),
    ("absent_over_time(x[5m]) and y", {"x"}, []),
    ("absent_over_time(x[5m]) and y", {"x", "y"}, ["y"]),
    ("(sum(x) or vector(0)) == 0", {"x"}, []),
    ("sum(x) or sum(y)", {"x"}, []),
    ("sum(x) or sum(y)", {"x", "y"}, ["x", "y"]),
    ("a unless b", {"b"}, []),
    ("a unless b", {"a"}, ["a"]),
    ("a and b unless c", {"b", "c"}, ["b"]),
    ("a / on(i) group_left b > 0", {"b"}, ["b"]),
    ("histogram_quantile(0.9, sum by (le) (rate(h[5m])))", {"h"}, ["h"]),
    ("label_replace(a or b, \"x\", \"$1\", \"y\", \"(.*)\")", {"a"}, []),
    ("clamp_min(a, scalar(b))", {"b"}, []),
])
def test_which_empty_selectors_keep_a_rule_from_firing(expr: str, empty: set[str], blockers: list[str]) -> None:
    from ansible.module_utils.erni_rules import blockers_of, parse_expr

    assert blockers_of(parse_expr(expr), empty) == blockers


@pytest.mark.parametrize("expr, dead, blockers", [
    ("a / on(job) b > 0", {"a / on (job) b"}, ["a / on (job) b"]),
    ("(a / on(job) b) or vector(0)", {"a / on (job) b"}, []),
    ("absent(a / on(job) b)", {"a / on (job) b"}, []),
    ("c unless (a / on(job) b)", {"a / on (job) b"}, []),
])
def test_which_dead_operations_keep_a_rule_from_firing(expr: str, dead: set[str], blockers: list[str]) -> None:
    from ansible.module_utils.erni_rules import blockers_of, parse_expr

    assert blockers_of(parse_expr(expr), set(), frozenset(dead)) == blockers


def test_only_vector_operations_that_can_block_are_tested() -> None:
    from ansible.module_utils.erni_rules import matching_of, parse_expr, vector_operations

    ops = list(vector_operations(parse_expr(
        "(a / ignoring(x) group_left b > 0.5) and c * on(job) d unless e - f or absent(g + h) or i + 1")))
    assert [op.prettify() for op in ops] == ["a / ignoring (x) group_left () b", "c * on (job) d"]
    assert [matching_of(op) for op in ops] == [("and ignoring(x)", "without (x)", "ignoring(x)"),
                                               ("and on(job)", "by (job)", "on(job)")]
    assert matching_of(parse_expr("a - b")) == ("and", "without ()", "all labels but __name__")


# ------------------------------------------------------------- why a rule cannot fire
# A Prometheus over data like the erni-ki platform's: three scrape jobs (nginx with the
# stub_status exporter and a log exporter, cAdvisor, node-exporter), rule files in
# tests/fixtures/rules/ with the mistakes each class is about.

FIXTURES = ROOT / "tests" / "fixtures" / "rules"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PromServer, KnownData]]:
    data = KnownData(minutes=20)
    nginx = {"job": "nginx", "instance": "nginx-exporter:9113"}
    cadvisor = {"job": "cadvisor", "instance": "cadvisor:8080"}
    node = {"job": "node-exporter", "instance": "node-exporter:9100"}
    for target in (nginx, cadvisor, node):
        data.gauge("up", target, 1)
    data.counter("nginx_http_requests_total", nginx, 20)  # stub_status: no status label
    data.counter("nginxlog_http_response_count_total", {**nginx, "status": "200"}, 19)
    data.counter("nginxlog_http_response_count_total", {**nginx, "status": "404"}, 1)
    for name in ("erni-ki-openwebui-1", "erni-ki-ollama-1"):
        data.gauge("container_memory_usage_bytes", {**cadvisor, "name": name}, 2e9)
        data.gauge("container_spec_memory_limit_bytes", {**cadvisor, "name": name}, 4e9)
    data.gauge("machine_memory_bytes", cadvisor, 32e9)
    data.gauge("node_memory_MemTotal_bytes", node, 32e9)
    data.counter("node_network_receive_packets_total", {**node, "device": "eth0"}, 100)
    prom = start_prometheus(tmp_path_factory.mktemp("platform"), data)
    yield prom, data
    prom.stop()


def judge(platform: tuple[PromServer, KnownData], fixture: str, **extra: object) -> dict:
    prom, data = platform
    return run_module("alert_rules_check", {"rule_files": [str(FIXTURES / fixture)], "prometheus_url": prom.url,
                                            "evaluation_time": data.end, **extra})


def test_a_label_value_not_seen_yet_is_a_warning_that_the_rule_may_fire(platform) -> None:
    res = judge(platform, "may_fire.yml")  # dead_rules: fail, and still only a warning
    assert not res.get("failed"), res
    rule = rules_by_name(res)["NginxServerErrors"]
    assert rule["status"] == "may_fire"
    assert rule["reason"] == ('rule NginxServerErrors: status=~"5.." has not been seen on '
                              'nginxlog_http_response_count_total{job="nginx"} yet (the label has values 200, 404): '
                              "may fire")
    assert [(f["class"], f["label"], f["values"]) for f in rule["findings"]] == [("may_fire", "status", ["200", "404"])]
    check = checks_by_name(res)["may_fire:nginx-log/NginxServerErrors"]
    assert check["status"] == "warn" and check["reason"].endswith(rule["reason"])
    # the "/" has an empty side: that is the selector's finding, not a second one about matching
    assert res["summary"] == {"total": 3, "passed": 2, "failed": 0, "dead": 0, "may_fire": 1}


def test_a_label_the_metric_never_carries_makes_the_rule_dead(platform) -> None:
    res = judge(platform, "label_never_carried.yml")
    assert res["failed"] is True
    rule = rules_by_name(res)["NginxServerErrors"]
    assert rule["status"] == "dead"
    assert rule["reason"] == ('rule NginxServerErrors: nginx_http_requests_total{job="nginx"} has series, but none '
                              'carries the label status, so status=~"5.." never matches (labels seen: instance, job); '
                              "the rule can never fire")
    assert [(f["class"], f["label"]) for f in rule["findings"]] == [("label_never_carried", "status")]
    assert checks_by_name(res)["dead_rule:nginx-stub-status/NginxServerErrors"]["status"] == "fail"
    warned = judge(platform, "label_never_carried.yml", dead_rules="warn")
    assert not warned.get("failed") and warned["summary"]["dead"] == 1
    assert checks_by_name(warned)["dead_rule:nginx-stub-status/NginxServerErrors"]["status"] == "warn"


def test_a_selector_no_scrape_job_produces_is_dead_and_names_the_jobs_that_exist(platform) -> None:
    res = judge(platform, "no_series.yml")
    assert res["failed"] is True
    rules = rules_by_name(res)
    assert rules["OpenWebUIDown"]["status"] == "dead"
    assert rules["OpenWebUIDown"]["reason"] == (
        'rule OpenWebUIDown: no series of up{job="openwebui"} in the last 1h: no scrape job produces it '
        "(up exists for jobs: cadvisor, nginx, node-exporter); the rule can never fire")
    assert [(f["class"], f["label"], f["values"]) for f in rules["OpenWebUIDown"]["findings"]] == [
        ("no_series", "job", ["cadvisor", "nginx", "node-exporter"])]
    assert rules["OllamaNoModelLoaded"]["status"] == "dead"
    assert rules["OllamaNoModelLoaded"]["reason"] == (
        'rule OllamaNoModelLoaded: no series of ollama_models_loaded{job="ollama-exporter"} in the last 1h: no scrape '
        "job produces it (nor any series of ollama_models_loaded); the rule can never fire")
    assert {c["name"] for c in res["checks"] if c["status"] == "fail"} == {
        "dead_rule:targets/OpenWebUIDown", "dead_rule:targets/OllamaNoModelLoaded"}
    assert res["summary"] == {"total": 4, "passed": 2, "failed": 2, "dead": 2, "may_fire": 0}


def test_an_operation_whose_sides_never_match_makes_the_rule_dead(platform) -> None:
    res = judge(platform, "sides_never_match.yml", dead_rules="warn")
    assert not res.get("failed"), res
    rules = rules_by_name(res)
    assert {name: r["status"] for name, r in rules.items()} == {
        "NginxRequestsPerPacket": "dead", "ContainerUsesMuchOfTheHost": "dead",
        "ContainerUsesMuchOfTheHostIgnoringName": "dead"}
    assert rules["NginxRequestsPerPacket"]["reason"] == (
        'rule NginxRequestsPerPacket: the two sides of "/" both have series but never match on their labels (left '
        'has job="nginx", right job="node-exporter"; matching: on(job)); the rule can never fire')
    finding = rules["NginxRequestsPerPacket"]["findings"][0]
    assert finding["class"] == "sides_never_match" and finding["matching"] == "on(job)"
    assert finding["subject"].startswith('rate(nginx_http_requests_total{job="nginx"}[5m]) / on (job) rate(')
    assert finding["left"] == [{"job": "nginx"}] and finding["right"] == [{"job": "node-exporter"}]
    host = rules["ContainerUsesMuchOfTheHost"]["reason"]
    assert ('left has {instance="cadvisor:8080",job="cadvisor",name="erni-ki-ollama-1"} or '
            '{instance="cadvisor:8080",job="cadvisor",name="erni-ki-openwebui-1"}, right '
            '{instance="node-exporter:9100",job="node-exporter"}; matching: all labels but __name__)') in host
    ignoring = rules["ContainerUsesMuchOfTheHostIgnoringName"]["reason"]
    assert ('left has {instance="cadvisor:8080",job="cadvisor"}, right {instance="node-exporter:9100",'
            'job="node-exporter"}; matching: ignoring(name))') in ignoring
    assert {c["name"]: c["status"] for c in res["checks"] if c["name"].startswith("dead_rule:")} == {
        f"dead_rule:mismatched/{name}": "warn" for name in rules}


def test_operations_whose_sides_match_are_not_reported(platform) -> None:
    res = judge(platform, "sides_match.yml")
    assert not res.get("failed"), res
    assert {r["name"]: (r["status"], r["findings"], r["reason"]) for r in res["rules"]} == {
        name: ("pass", [], None)
        for name in ("ContainerNearMemoryLimit", "ContainerOverMemoryLimit", "ContainerUsesMuchOfTheMachine")}
    assert [c["name"] for c in res["checks"]] == [f"rule_file:{FIXTURES / 'sides_match.yml'}", "prometheus"]
    assert res["summary"] == {"total": 2, "passed": 2, "failed": 0, "dead": 0, "may_fire": 0}


def test_an_operation_prometheus_cannot_evaluate_is_a_warning_on_its_rule(platform, tmp_path: Path) -> None:
    # up has one series per job, cAdvisor has two containers: the inner "*" needs group_right, and
    # Prometheus refuses to count the outer "/"'s right side; Prometheus itself answered, so only the rule warns
    rules = write(tmp_path, "refused.yml", """\
        groups:
          - name: refused
            rules:
              - alert: Refused
                expr: up / on(job) (up * on(job) container_memory_usage_bytes) > 0
        """)
    prom, data = platform
    res = run_module("alert_rules_check", {"rule_files": [rules], "prometheus_url": prom.url,
                                           "evaluation_time": data.end})
    assert not res.get("failed"), res
    rule = rules_by_name(res)["Refused"]
    assert rule["status"] == "warn" and rule["findings"] == []
    assert rule["reason"].startswith("not checked: Prometheus answered 422 for count by (job) ((up * on (job) "
                                     "container_memory_usage_bytes)): execution: ")
    assert "many-to-many matching not allowed" in rule["reason"]
    assert checks_by_name(res)["rule_query:refused/Refused"]["status"] == "warn"
    assert checks_by_name(res)["prometheus"]["status"] == "pass"
