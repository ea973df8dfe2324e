"""prometheus_query and prometheus_gate against a real Prometheus holding known data.

The data (see `known`) describes an old colour (blue: 0.5% errors, p95 about 0.23 s) and a
bad new colour (green: 30% errors, p95 about 0.45 s), plus series made to test the edges:
NaN only, a step in the last minute, a higher-is-better availability.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modules_harness import run_module
from prom import KnownData, PromServer, start_prometheus
from servers import LocalServer, json_route

ERR = ('sum(rate(http_requests_total{{colour="{c}",status=~"5.."}}[1m]))'
       ' / sum(rate(http_requests_total{{colour="{c}"}}[1m]))')
P95 = 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{colour="{c}"}}[1m])))'


@pytest.fixture(scope="module")
def known() -> KnownData:
    d = KnownData(minutes=15)
    for colour, ok, bad in (("blue", 9.95, 0.05), ("green", 7.0, 3.0)):
        d.counter("http_requests_total", {"job": "erni-ki", "colour": colour, "status": "200"}, ok)
        d.counter("http_requests_total", {"job": "erni-ki", "colour": colour, "status": "500"}, bad)
    d.histogram("http_request_duration_seconds", {"colour": "blue"}, 10,
                {0.1: 0.5, 0.25: 0.96, 0.5: 0.99, 1: 1.0})
    d.histogram("http_request_duration_seconds", {"colour": "green"}, 10,
                {0.1: 0.3, 0.25: 0.6, 0.5: 0.97, 1: 1.0})
    d.gauge("memory_usage_ratio", {"colour": "blue"}, 0.55)
    d.gauge("memory_usage_ratio", {"colour": "green"}, 0.58)
    d.gauge("availability_ratio", {"colour": "green"}, 0.999)
    d.add("idle_ratio", {"colour": "green"}, lambda t: math.nan)
    last_minute = d.minutes * 60 - 45
    d.add("step_latency_seconds", {}, lambda t: 0.9 if t >= last_minute else 0.2)
    return d


@pytest.fixture(scope="module")
def prom(known: KnownData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    srv = start_prometheus(tmp_path_factory.mktemp("prom"), known)
    yield srv
    srv.stop()


def gate(prom: PromServer, known: KnownData, metrics: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return run_module("prometheus_gate", {"prometheus_url": prom.url, "time": known.end, "metrics": metrics, **kw})


# ------------------------------------------------------------------ prometheus_query

def test_instant_query_returns_floats_with_labels(prom: PromServer, known: KnownData) -> None:
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "time": known.end,
                                          "query": 'memory_usage_ratio'})
    assert not res.get("failed"), res
    got = {s["labels"]["colour"]: s["value"] for s in res["samples"]}
    assert got == {"blue": 0.55, "green": 0.58}
    assert res["count"] == 2 and res["empty"] is False and res["changed"] is False


def test_error_rate_from_counters_is_what_the_data_says(prom: PromServer, known: KnownData) -> None:
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "time": known.end,
                                          "query": ERR.format(c="blue")})
    assert res["samples"][0]["value"] == pytest.approx(0.005, rel=1e-6)


def test_scalar_nan_and_inf_values(prom: PromServer, known: KnownData) -> None:
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "time": known.end, "query": "scalar(vector(2))"})
    assert res["samples"][0]["value"] == 2.0
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "time": known.end, "query": "idle_ratio"})
    assert res["samples"][0]["value"] is None and res["samples"][0]["raw"] == "NaN"
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "time": known.end, "query": "vector(1) / 0"})
    assert res["samples"][0]["value"] is None and res["samples"][0]["raw"] == "+Inf"


def test_empty_result_is_not_an_error_unless_asked(prom: PromServer, known: KnownData) -> None:
    args = {"prometheus_url": prom.url, "time": known.end, "query": 'gpu_utilization_ratio'}
    res = run_module("prometheus_query", args)
    assert res["empty"] is True and res["count"] == 0 and not res.get("failed")
    res = run_module("prometheus_query", {**args, "fail_on_empty": True})
    assert res["failed"] is True and "returned no series" in res["msg"]


def test_range_query(prom: PromServer, known: KnownData) -> None:
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "type": "range", "query": "step_latency_seconds",
                                          "start": known.end - 120, "end": known.end, "step": 30})
    values = [v for _, v in res["series"][0]["values"]]
    assert res["result_type"] == "matrix" and len(values) == 5
    assert values[0] == 0.2 and values[-1] == 0.9


def test_a_bad_query_fails_with_prometheus_own_message(prom: PromServer) -> None:
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "query": "sum(rate(x[5m]"})
    assert res["failed"] is True
    assert "Prometheus rejected the query (bad_data)" in res["msg"]
    res = run_module("prometheus_query", {"prometheus_url": prom.url, "query": "memory_usage_ratio[5m]"})
    assert res["failed"] is True and "range vector" in res["msg"]


def test_unreachable_prometheus_fails_clearly() -> None:
    res = run_module("prometheus_query", {"prometheus_url": "http://127.0.0.1:1", "query": "up"})
    assert res["failed"] is True and "unreachable" in res["msg"]
    res = run_module("prometheus_query", {"prometheus_url": "127.0.0.1:9090", "query": "up"})
    assert res["failed"] is True and "'127.0.0.1:9090' is not an http(s) URL" in res["msg"]


def test_bearer_token_is_sent_and_refusal_is_explained_without_the_token() -> None:
    token = "prom-bearer-token-never-printed-123"
    seen: list[str] = []

    def api(handler, _body):
        seen.append(handler.headers.get("Authorization", ""))
        if handler.headers.get("Authorization") != f"Bearer {token}":
            return 401, {}, b'{"status": "error", "error": "unauthorized"}'
        answer = {"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}
        return json_route(200, answer)(handler, b"")

    srv = LocalServer(routes={"/api/v1/query": api})
    try:
        ok = run_module("prometheus_query", {"prometheus_url": srv.url, "query": "1", "bearer_token": token})
        assert ok["samples"][0]["value"] == 1.0
        bad = run_module("prometheus_query", {"prometheus_url": srv.url, "query": "1", "bearer_token": "wrong"})
        assert bad["failed"] is True and "refused the credentials (HTTP 401)" in bad["msg"]
        assert seen[0] == f"Bearer {token}"
        assert token not in str(ok) and token not in str(bad)
    finally:
        srv.close()


# ------------------------------------------------------------------ prometheus_gate

def test_a_healthy_colour_passes_with_full_score(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [
        {"name": "error_rate", "query": ERR.format(c="blue"), "limit": 0.05, "unit": "ratio"},
        {"name": "p95", "query": P95.format(c="blue"), "limit": 5, "unit": "s"},
    ])
    assert not res.get("failed"), res.get("msg")
    assert res["verdict"] == "pass" and res["score"] == 100
    assert [c["status"] for c in res["checks"]] == ["pass", "pass"]
    assert res["metrics"][0]["value"] == pytest.approx(0.005)


def test_an_error_rate_above_the_limit_fails_the_gate(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [{"name": "error_rate", "query": ERR.format(c="green"), "limit": 0.05, "unit": "ratio"}])
    assert res["failed"] is True
    assert res["verdict"] == "fail"
    m = res["metrics"][0]
    assert m["status"] == "fail" and m["value"] == pytest.approx(0.3)
    assert m["reason"] == "30.00% is above the limit 5.00%"
    assert res["msg"].startswith("gate verdict fail")


def test_regression_against_the_old_colour_beyond_tolerance_fails(prom: PromServer, known: KnownData) -> None:
    metric = {"name": "p95", "query": P95.format(c="green"), "baseline_query": P95.format(c="blue"),
              "tolerance": 0.10, "unit": "s"}
    res = gate(prom, known, [metric])
    m = res["metrics"][0]
    assert res["verdict"] == "fail" and m["status"] == "fail"
    assert m["baseline"] < m["value"]
    assert "worse than the baseline" in m["reason"] and "tolerance 10%" in m["reason"]
    # the same difference inside a generous noise floor is not a regression
    res = gate(prom, known, [{**metric, "noise_floor": 0.5}])
    assert res["verdict"] == "pass", res["reason"]


def test_a_metric_worse_than_staging_is_degraded_not_a_rollback_unless_the_live_judge_agrees(
        prom: PromServer, known: KnownData, tmp_path: Path) -> None:
    f = tmp_path / "baseline.yml"
    f.write_text("Baselines (Staging):\n  api_latency_p95: 50ms\n")
    metric = {"name": "api_latency_p95", "query": P95.format(c="green"), "baseline_key": "api_latency_p95",
              "tolerance": 0.10, "unit": "s", "limit": 5}
    # warn: the checklist's DEGRADED, with "consider rollback if critical"; the run goes on
    res = gate(prom, known, [{**metric, "staging_comparison": "warn"}], baseline_file=str(f))
    m = res["metrics"][0]
    assert res["verdict"] == "warn" and m["status"] == "warn", res["reason"]
    assert m["reason"].startswith("DEGRADED: ") and "consider rollback if critical" in m["reason"]
    # ... and what the staging baseline alone would have said is kept
    assert res["staging_only"]["verdict"] == "fail"
    # blocking, and the live judge did not find the new colour worse: still only DEGRADED
    res = gate(prom, known, [{**metric, "staging_comparison": "blocking"}], baseline_file=str(f))
    assert res["verdict"] == "warn" and "did not find the new colour worse" in res["metrics"][0]["reason"]
    # blocking, and the live judge agrees: it fails
    res = gate(prom, known, [{**metric, "staging_comparison": "blocking", "live_worse": True}],
               baseline_file=str(f))
    assert res["verdict"] == "fail" and "the live judge found the new colour worse" in res["reason"]
    # a limit is absolute whatever the comparison says
    res = gate(prom, known, [{**metric, "limit": 0.1, "staging_comparison": "warn"}], baseline_file=str(f))
    assert res["verdict"] == "fail" and "above the limit" in res["reason"]


def test_baseline_file_in_the_checklists_shape(prom: PromServer, known: KnownData, tmp_path: Path) -> None:
    f = tmp_path / "baseline.yml"
    f.write_text("Baselines (Staging):\n  api_latency_p95: 1.2s\n  db_query_p95: 450ms\n"
                 "  memory_usage: 55%\n  cpu_usage: 45%\n")
    res = gate(prom, known, [
        {"name": "api_latency_p95", "query": P95.format(c="green"), "baseline_key": "api_latency_p95",
         "tolerance": 0.1, "unit": "s"},
        {"name": "memory", "query": 'memory_usage_ratio{colour="green"}', "baseline_key": "memory_usage",
         "tolerance": 0.1},
    ], baseline_file=str(f))
    assert res["verdict"] == "pass", res["reason"]
    assert res["metrics"][0]["baseline"] == 1.2
    assert res["metrics"][1]["baseline"] == 0.55
    assert res["metrics"][1]["baseline_source"].endswith("baseline.yml:memory_usage")


def test_no_data_is_decided_by_policy_and_fails_by_default(prom: PromServer, known: KnownData) -> None:
    metric = {"name": "gpu", "query": "gpu_utilization_ratio", "limit": 0.8}
    res = gate(prom, known, [metric])
    assert res["failed"] is True and res["verdict"] == "fail"
    assert res["metrics"][0]["status"] == "nodata"
    assert "no data: the query returned no series" in res["metrics"][0]["reason"]
    assert gate(prom, known, [{**metric, "no_data": "pass"}])["verdict"] == "pass"
    res = gate(prom, known, [{**metric, "no_data": "inconclusive"}])
    assert res["verdict"] == "inconclusive" and res["failed"] is True


def test_nan_only_is_no_data(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [{"name": "idle", "query": "idle_ratio", "limit": 1}])
    assert res["metrics"][0]["status"] == "nodata"
    assert "NaN" in res["metrics"][0]["reason"]


def test_a_stopped_prometheus_never_passes(known: KnownData, tmp_path: Path) -> None:
    srv = start_prometheus(tmp_path / "p", known)
    url = srv.url
    srv.stop()
    res = run_module("prometheus_gate", {"prometheus_url": url, "metrics": [
        {"name": "error_rate", "query": ERR.format(c="blue"), "limit": 0.05, "no_data": "pass"}]})
    assert res["failed"] is True
    assert res["verdict"] == "inconclusive"
    assert "unreachable" in res["reason"]


def test_a_query_error_is_never_a_pass(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [{"name": "broken", "query": "rate(nope", "limit": 1, "no_data": "pass"}], count=3)
    assert res["verdict"] == "inconclusive"
    assert res["metrics"][0]["status"] == "inconclusive"


def test_a_lone_non_critical_warning_scores_below_the_warn_score(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [{"name": "memory", "query": 'memory_usage_ratio{colour="green"}', "limit": 0.5,
                              "critical": False}])
    assert res["verdict"] == "fail" and res["score"] == 50
    assert res["reason"] == "score 50.0 is below 75"


def test_a_non_critical_regression_warns_and_lowers_the_score(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [
        {"name": "error_rate", "query": ERR.format(c="blue"), "limit": 0.05, "weight": 3},
        {"name": "memory", "query": 'memory_usage_ratio{colour="green"}', "limit": 0.5, "critical": False},
    ])
    assert not res.get("failed")
    assert res["verdict"] == "warn"
    assert res["score"] == pytest.approx(87.5)
    assert res["metrics"][1]["status"] == "warn"


def test_higher_is_better_direction(prom: PromServer, known: KnownData) -> None:
    metric = {"name": "availability", "query": 'availability_ratio{colour="green"}', "direction": "higher"}
    assert gate(prom, known, [{**metric, "limit": 0.99}])["verdict"] == "pass"
    res = gate(prom, known, [{**metric, "limit": 0.9999}])
    assert res["verdict"] == "fail" and "below the limit" in res["metrics"][0]["reason"]


def test_failure_limit_counts_failed_measurements(prom: PromServer, known: KnownData) -> None:
    metric = {"name": "step", "query": "step_latency_seconds", "limit": 0.5, "unit": "s"}
    # three measurements a minute apart ending at the data's end: only the last sees the step
    res = gate(prom, known, [metric], count=3, interval=60, failure_limit=1)
    assert res["verdict"] == "pass", res["reason"]
    assert [x["status"] for x in res["metrics"][0]["measurements"]] == ["pass", "pass", "fail"]
    res = gate(prom, known, [metric], count=3, interval=60, failure_limit=0)
    assert res["verdict"] == "fail"
    assert "1 of 3 measurements failed, limit 0" in res["metrics"][0]["reason"]


def test_measuring_stops_as_soon_as_the_verdict_cannot_change(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [{"name": "error_rate", "query": ERR.format(c="green"), "limit": 0.05}],
               count=10, interval=5)
    assert res["verdict"] == "fail"
    assert res["stopped_early"] is True and res["measurements_taken"] == 1


def test_live_measurements_wait_between_rounds(prom: PromServer) -> None:
    # without `time` the rounds are taken now, interval apart (the data is in the past: no data)
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "count": 2, "interval": 0.5,
                                         "metrics": [{"name": "m", "query": "vector(1)", "limit": 2}]})
    assert res["verdict"] == "pass" and res["measurements_taken"] == 2
    assert res["elapsed_s"] >= 0.5


def test_warn_can_be_made_to_fail_the_task(prom: PromServer, known: KnownData) -> None:
    res = gate(prom, known, [{"name": "error_rate", "query": ERR.format(c="blue"), "limit": 0.05, "weight": 3},
                             {"name": "memory", "query": 'memory_usage_ratio{colour="green"}', "limit": 0.5,
                              "critical": False}], fail_on=["fail", "inconclusive", "warn"])
    assert res["failed"] is True and res["verdict"] == "warn"


@pytest.mark.parametrize("metric, extra, message", [
    ({"limit": float("nan")}, {}, "metric 'm': limit=nan is not a finite number"),
    ({"tolerance": -0.1, "baseline": 1}, {}, "metric 'm': tolerance=-0.1 must not be negative"),
    ({"tolerance": 0.1}, {}, "metric 'm' has a tolerance but no baseline"),
    ({"baseline_key": "x"}, {}, "names baseline_key 'x' but no baseline_file was given"),
    ({"weight": 0}, {}, "metric 'm': weight=0.0 must be positive"),
    ({"baseline": 1, "baseline_query": "up"}, {}, "mutually exclusive"),
    ({}, {"count": 0}, "count=0 must be at least 1"),
    ({}, {"warn_score": 95}, "warn_score=95.0 must be from 0 to pass_score"),
])
def test_bad_input_is_refused_naming_it(prom: PromServer, metric: dict[str, Any], extra: dict[str, Any],
                                        message: str) -> None:
    res = run_module("prometheus_gate", {"prometheus_url": prom.url,
                                         "metrics": [{"name": "m", "query": "up", **metric}], **extra})
    assert res["failed"] is True
    assert message in res["msg"], res["msg"]


def test_bad_baseline_files_are_refused_naming_the_file_and_key(prom: PromServer, tmp_path: Path) -> None:
    metrics = [{"name": "m", "query": "up", "baseline_key": "api_latency_p95", "tolerance": 0.1}]
    bad = tmp_path / "bad.yml"
    bad.write_text("Baselines (Staging):\n  api_latency_p95: fast\n")
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "baseline_file": str(bad), "metrics": metrics})
    assert res["failed"] is True and f"{bad}: api_latency_p95: 'fast' is not a number" in res["msg"]
    other = tmp_path / "other.yml"
    other.write_text("cpu_usage: 45%\n")
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "baseline_file": str(other), "metrics": metrics})
    assert res["failed"] is True and "baseline_key 'api_latency_p95' is not in" in res["msg"]
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "baseline_file": str(tmp_path / "none.yml"),
                                         "metrics": metrics})
    assert res["failed"] is True and "cannot be read" in res["msg"]
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "baseline_file": str(tmp_path / "list.yml"),
                                         "metrics": metrics})
    assert res["failed"] is True and "must map metric names to values" in res["msg"]


def test_duplicate_metric_names_are_refused(prom: PromServer) -> None:
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "metrics": [
        {"name": "a", "query": "up"}, {"name": "a", "query": "up"}]})
    assert res["failed"] is True and "repeated: a" in res["msg"]


def test_runs_in_check_mode(prom: PromServer, known: KnownData) -> None:
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "time": known.end, "metrics": [
        {"name": "e", "query": ERR.format(c="blue"), "limit": 0.05}]}, check_mode=True)
    assert res["verdict"] == "pass" and res["changed"] is False


def test_baseline_from_another_series_at_a_fixed_time(prom: PromServer, known: KnownData) -> None:
    # the step series before its step (0.2 s) is the baseline of a 0.9 s value now
    metric = {"name": "step_vs_before", "query": "step_latency_seconds", "baseline_query": "step_latency_seconds",
              "baseline_at": known.end - 300, "tolerance": 0.10, "noise_floor": 0.01, "unit": "s"}
    res = gate(prom, known, [metric])
    m = res["metrics"][0]
    assert m["baseline"] == 0.2 and m["value"] == 0.9
    assert res["verdict"] == "fail" and "worse than the baseline" in m["reason"]
    res = gate(prom, known, [{**metric, "baseline_query": None}])
    assert res["failed"] is True and "baseline_at needs a baseline_query" in res["msg"]


# --- validate_only: inputs checked before anything changes, nothing queried ---------------------------

def test_validate_only_accepts_good_inputs_without_querying(tmp_path: Path) -> None:
    baseline = tmp_path / "staging-baseline.yml"
    baseline.write_text("Baselines (Staging):\n  api_latency_p95: 450ms\n  error_rate: 0.5%\n")
    res = run_module("prometheus_gate", {
        "prometheus_url": "http://127.0.0.1:9",   # nothing listens: validating must not query
        "baseline_file": str(baseline), "validate_only": True,
        "metrics": [{"name": "api_latency_p95", "query": "up", "limit": 5, "tolerance": 0.1},
                    {"name": "error_rate", "query": "up", "limit": 0.05, "tolerance": 0.1, "noise_floor": 0.01}]})
    assert not res.get("failed"), res
    assert res["validated"] is True and res["metrics"] == ["api_latency_p95", "error_rate"]
    assert res["baselines"] == {"api_latency_p95": pytest.approx(0.45), "error_rate": pytest.approx(0.005)}


@pytest.mark.parametrize(("metric", "message"), [
    ({"name": "m", "query": "up", "limit": -1}, "metric 'm': limit=-1.0 must not be negative"),
    ({"name": "m", "query": "up", "limit": 1, "tolerance": "NaN"}, "metric 'm': tolerance=nan is not a finite number"),
    ({"name": "m", "query": "up", "limit": 1, "noise_floor": -0.1},
     "metric 'm': noise_floor=-0.1 must not be negative"),
])
def test_validate_only_refuses_bad_limits(metric: dict[str, Any], message: str) -> None:
    res = run_module("prometheus_gate", {"prometheus_url": "http://127.0.0.1:9", "validate_only": True,
                                         "metrics": [metric]})
    assert res["failed"] is True and res["msg"] == message


def test_validate_only_refuses_a_malformed_baseline_file_and_a_bad_url(tmp_path: Path) -> None:
    bad = tmp_path / "b.yml"
    bad.write_text("Baselines (Staging):\n  p95: fast\n")
    res = run_module("prometheus_gate", {"prometheus_url": "http://127.0.0.1:9", "validate_only": True,
                                         "baseline_file": str(bad), "metrics": [{"name": "p95", "query": "up"}]})
    assert res["failed"] is True and res["msg"].startswith(f"{bad}: p95: 'fast' is not a number")
    res = run_module("prometheus_gate", {"prometheus_url": "127.0.0.1:9090", "validate_only": True,
                                         "metrics": [{"name": "p95", "query": "up"}]})
    assert res["failed"] is True and "is not an http(s) URL" in res["msg"]


# ------------------------------------------------------------------ metrics from the access log

def write_access_log(path: Path, end: float, seconds: int, per_second: int, error_every: int,
                     latency: float, upstream: str = "10.0.3.7:8080") -> None:
    """nginx JSON lines with ERNI-KI's field names (timestamp, request), one upstream."""
    import json
    from datetime import UTC, datetime

    with path.open("w", encoding="utf-8") as fh:
        n = 0
        for s in range(seconds):
            for k in range(per_second):
                t = end - seconds + s + k / per_second
                n += 1
                status = 502 if error_every and n % error_every == 0 else 200
                fh.write(json.dumps({
                    "timestamp": datetime.fromtimestamp(t, UTC).isoformat(),
                    "request": f"GET /api/v1/chats?n={n} HTTP/1.1",
                    "status": status, "upstream_addr": upstream, "upstream_status": str(status),
                    "upstream_response_time": f"{latency * (1 + (n % 10) / 10):.3f}"}) + "\n")
        fh.write(json.dumps({"timestamp": datetime.fromtimestamp(end - 1, UTC).isoformat(),
                             "request": "GET /health HTTP/1.1", "status": 500, "upstream_addr": upstream,
                             "upstream_status": "500", "upstream_response_time": "9.000"}) + "\n")


FIELDS = {"time": "timestamp", "uri": "request"}


def test_error_rate_and_p95_are_read_from_the_access_log(prom: PromServer, tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    end = 1_800_000_000.0
    write_access_log(log, end, seconds=60, per_second=5, error_every=50, latency=0.1)
    metrics = [{"name": "error_rate", "source": "access_log", "measure": "error_ratio", "window": 60,
                "limit": 0.05, "unit": "ratio"},
               {"name": "api_latency_p95", "source": "access_log", "measure": "latency_p95", "window": 60,
                "limit": 5, "unit": "s"}]
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "time": end, "metrics": metrics,
                                         "access_log": str(log), "log_fields": FIELDS, "log_exclude": "^/health"})
    assert not res.get("failed"), res.get("msg")
    got = {m["name"]: m for m in res["metrics"]}
    # 300 requests, every 50th a 502; the /health line (a 500 taking 9 s) is left out
    assert got["error_rate"]["value"] == pytest.approx(6 / 300)
    assert got["error_rate"]["measurements"][0]["series"] == 300
    assert 0.18 <= got["api_latency_p95"]["value"] <= 0.2
    assert got["error_rate"]["query"] == "access log: error_ratio over 60 s"
    assert res["verdict"] == "pass"


LOG_END = 1_800_000_000.0


def log_error_rate(prom: PromServer, log: Path, window: float, **extra: Any) -> dict[str, Any]:
    """The gate on one error-rate metric read from `log` over `window` seconds up to LOG_END."""
    metric = {"name": "error_rate", "source": "access_log", "measure": "error_ratio", "window": window,
              "limit": 0.05, "unit": "ratio"}
    return run_module("prometheus_gate", {"prometheus_url": prom.url, "time": LOG_END, "access_log": str(log),
                                          "log_fields": FIELDS, "metrics": [metric], **extra})


def test_an_error_rate_from_the_log_above_the_limit_fails(prom: PromServer, tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    write_access_log(log, LOG_END, seconds=30, per_second=4, error_every=10, latency=0.05)
    res = log_error_rate(prom, log, 30, log_exclude="^/health")
    assert res.get("failed") and res["verdict"] == "fail"
    assert res["metrics"][0]["reason"] == "10.00% is above the limit 5.00%"


def test_too_few_requests_in_the_log_is_no_data_never_a_pass(prom: PromServer, tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    write_access_log(log, LOG_END, seconds=5, per_second=1, error_every=0, latency=0.05)
    res = log_error_rate(prom, log, 60, log_exclude="^/health")
    assert res.get("failed") and res["verdict"] == "fail"
    reason = res["metrics"][0]["measurements"][0]["reason"]
    assert reason == "no data: 5 requests in the access log over the 60 s window, at least 20 needed"


def test_only_the_named_colours_requests_are_counted(prom: PromServer, tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    write_access_log(log, LOG_END, seconds=30, per_second=2, error_every=0, latency=0.05, upstream="10.0.3.9:8080")
    res = log_error_rate(prom, log, 60, log_upstreams={"blue": "10.0.3.7:8080"}, log_side="blue")
    assert res.get("failed")
    reason = res["metrics"][0]["measurements"][0]["reason"]
    assert reason.startswith("no data: 0 blue's requests in the access log over the 60 s window")
    assert "requests to addresses that are no colour's: 10.0.3.9:8080 (61)" in reason


@pytest.mark.parametrize(("metric", "extra", "message"), [
    ({"name": "e", "source": "access_log", "measure": "error_ratio"}, {},
     "metrics e read the access log, but neither access_log nor loki_url is set"),
    ({"name": "e", "source": "access_log"}, {"access_log": "/dev/null"},
     "metric 'e' reads the access log but names no measure"),
    ({"name": "e", "source": "access_log", "measure": "error_ratio", "baseline_query": "x"},
     {"access_log": "/dev/null"}, "metric 'e' reads the access log: its baseline is a number or a baseline_key"),
    ({"name": "e"}, {}, "metric 'e' has no query"),
    ({"name": "e", "source": "access_log", "measure": "error_ratio"},
     {"access_log": "/dev/null", "log_side": "red", "log_upstreams": {"blue": "a:1"}},
     "log_side 'red' is not one of log_upstreams (blue)"),
])
def test_bad_access_log_metrics_are_refused_naming_them(prom: PromServer, metric: dict[str, Any],
                                                        extra: dict[str, Any], message: str) -> None:
    res = run_module("prometheus_gate", {"prometheus_url": prom.url, "metrics": [metric], **extra})
    assert res.get("failed") and message in res["msg"], res["msg"]
