#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: the deployment gate.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: prometheus_gate
short_description: Decide whether a release is healthy, from Prometheus metrics against limits and a baseline
description:
  - Measures each metric's PromQL query one or more times and judges every value against
    an absolute limit (the checklist's rollback triggers, such as an error rate above 5% or
    a response time above 5 s) and against a baseline with a relative tolerance (the
    checklist's 10%) and an absolute noise floor, below which a difference is not counted.
  - The baseline is a number, a key of a baseline file in the checklist's YAML shape
    (C(Baselines (Staging)) with values such as C(1.2s), C(450ms), C(65%)), the result of
    another query (for example the old colour's series), or the same query an offset earlier.
  - Over several measurements a metric fails when more measurements failed than
    O(failure_limit) allows; query errors beyond O(consecutive_error_limit) make it inconclusive.
    Measuring stops early once a critical metric cannot pass any more.
  - "The verdict is V(fail) when a critical metric fails, V(inconclusive) when a critical
    metric could not be measured, otherwise it comes from the weighted score (pass 1, warn 0.5,
    fail 0): V(pass) at O(pass_score) or more without warnings, V(warn) at
    O(warn_score) or more, else V(fail). It fails closed: Prometheus unreachable or a query
    error is never a pass."
  - Read-only; runs in check mode and never reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  metrics:
    description: The metrics to judge.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Metric name in the results.
        type: str
        required: true
      query:
        description:
          - PromQL giving one value (several series are reduced to the worst).
          - Required unless O(metrics[].source=access_log).
        type: str
      source:
        description:
          - Where the value comes from. V(access_log) reads a window of nginx's JSON access log
            (O(access_log)), each request's status and upstream time, as the canary judge does,
            for a platform whose service exports no request metrics.
        type: str
        choices: [prometheus, access_log]
        default: prometheus
      measure:
        description:
          - For O(metrics[].source=access_log), the figure of the window. V(error_ratio) is 5xx answers
            and unreachable upstreams over all attempts; V(latency_p95) (and V(latency_p50),
            V(latency_p99)) the quantile of the upstream times in seconds; V(requests) the count.
        type: str
        choices: [error_ratio, latency_p50, latency_p95, latency_p99, requests]
      window:
        description: For O(metrics[].source=access_log), seconds of log before each measurement.
        type: float
        default: 60
      min_requests:
        description:
          - For O(metrics[].source=access_log), requests the window needs before it gives a value;
            fewer is no data (O(metrics[].no_data) decides).
        type: int
        default: 20
      direction:
        description: Whether lower or higher values are better.
        type: str
        choices: [lower, higher]
        default: lower
      limit:
        description: Absolute limit; worse than this fails (or warns, when not critical).
        type: float
      tolerance:
        description: Allowed relative worsening against the baseline, as a fraction (0.10 is 10%).
        type: float
      noise_floor:
        description: Absolute difference from the baseline that is never counted as a regression.
        type: float
        default: 0
      baseline:
        description: Baseline value.
        type: float
      baseline_key:
        description: Key of the baseline in O(baseline_file).
        type: str
      baseline_query:
        description: PromQL whose value is the baseline (for example the old colour).
        type: str
      baseline_offset:
        description: Seconds; the baseline is the metric's own query this much earlier.
        type: float
      baseline_at:
        description:
          - "Unix time at which O(metrics[].baseline_query) is evaluated (for example the old colour
            just before the switch, the pre-deploy window's live figures); default the measurement's time."
        type: float
      no_data:
        description: What a measurement without data counts as.
        type: str
        choices: [fail, pass, inconclusive]
        default: fail
      critical:
        description: A critical metric that fails fails the gate; others only lower the score.
        type: bool
        default: true
      weight:
        description: Weight in the score.
        type: float
        default: 1
      unit:
        description: How values are shown in reasons (V(ratio) as percent, V(s) as seconds or ms).
        type: str
        default: ""
      staging_comparison:
        description: This metric's O(staging_comparison); default the module's.
        type: str
        choices: [fail, warn, blocking]
      live_worse:
        description: The canary judge found the new colour significantly worse than the old one on this metric.
        type: bool
        default: false
      judge_metric:
        description: The canary judge's metric that stands for this one (O(live_judge)).
        type: str
        choices: [error_ratio, latency]
  staging_comparison:
    description:
      - What exceeding the baseline's tolerance does. V(fail) fails the metric. V(warn) is the
        checklist's DEGRADED (reported; consider rollback if critical), never a rollback on its own.
        V(blocking) fails only when the live canary judge found the new colour worse than the old
        one (O(metrics[].live_worse), or O(live_judge) on the metric's O(metrics[].judge_metric)).
        Limits always fail.
    type: str
    choices: [fail, warn, blocking]
    default: fail
  live_judge:
    description: The canary judge's steps (their C(step) results), which blocking comparisons consult.
    type: list
    elements: dict
    default: []
  baseline_file:
    description: YAML file of baselines in the checklist's shape.
    type: path
  access_log:
    description:
      - nginx's JSON access log, on the host the module runs on, for the metrics with
        O(metrics[].source=access_log) (the canary judge's format; see C(canary_judge)).
    type: path
  log_fields:
    description: Field names of the log's JSON lines where they differ (as C(canary_judge)'s O(log_fields)).
    type: dict
    default: {}
  log_upstreams:
    description:
      - "Each colour's upstream address as nginx logs it, as V({blue: 10.0.3.7:8080}); with
        O(log_side), only that colour's requests are counted."
    type: dict
    default: {}
  log_side:
    description: The colour whose requests are counted (one of O(log_upstreams)); empty counts every upstream's.
    type: str
    default: ""
  log_include:
    description: Regular expression; only request paths that match are counted.
    type: str
    default: ""
  log_exclude:
    description: Regular expression; request paths that match are not counted (health and metrics routes).
    type: str
    default: ""
  count:
    description: Number of measurements.
    type: int
    default: 1
  interval:
    description: Seconds between measurements.
    type: float
    default: 0
  failure_limit:
    description: Failed measurements a metric may have and still pass.
    type: int
    default: 0
  consecutive_error_limit:
    description: Consecutive query errors a metric may have before it is inconclusive.
    type: int
    default: 4
  time:
    description:
      - Evaluate at this Unix time instead of now; with O(count) above 1 the measurements are
        spaced O(interval) apart, ending at this time, without waiting.
    type: float
  pass_score:
    description: Score (0-100) at or above which the gate passes.
    type: float
    default: 90
  warn_score:
    description: Score at or above which the gate warns instead of failing.
    type: float
    default: 75
  fail_on:
    description: Verdicts that fail the task (the results are returned either way).
    type: list
    elements: str
    choices: [fail, inconclusive, warn]
    default: [fail, inconclusive]
  concurrency:
    description: Queries in flight at once.
    type: int
    default: 10
  validate_only:
    description:
      - Check the inputs (metrics, limits, the baseline file, the Prometheus URL) and stop without
        querying, so a playbook can refuse bad settings before anything changes.
    type: bool
    default: false
extends_documentation_fragment:
  - erni_loki
  - erni_prometheus
requirements:
  - requests
  - PyYAML
"""

EXAMPLES = r"""
- name: Judge the new colour against the staging baseline and the old colour
  prometheus_gate:
    prometheus_url: http://127.0.0.1:9090
    baseline_file: reports/staging-baseline.yml
    count: 6
    interval: 5
    metrics:
      - name: error_rate
        query: >-
          sum(rate(http_requests_total{colour="green",status=~"5.."}[30s]))
          / sum(rate(http_requests_total{colour="green"}[30s]))
        limit: 0.05
        unit: ratio
      - name: api_latency_p95
        query: >-
          histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{colour="green"}[1m])))
        limit: 5
        baseline_key: api_latency_p95
        tolerance: 0.10
        noise_floor: 0.005
        unit: s
      - name: memory_usage
        query: 1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes
        baseline_key: memory_usage
        tolerance: 0.10
        critical: false
        no_data: inconclusive
  register: gate
"""

RETURN = r"""
staging_only:
  description: >-
    The verdict (verdict, score, reason) the same measurements would get if every baseline
    exceedance failed its metric, as the gate judged before the live canary judge; for
    comparison only, it decides nothing.
  returned: when measured
  type: dict
validated:
  description: True when O(validate_only) checked the inputs and nothing was queried.
  returned: with O(validate_only)
  type: bool
baselines:
  description: The baseline file's values, as numbers (seconds, fractions).
  returned: with O(validate_only)
  type: dict
verdict:
  description: pass, warn, fail or inconclusive.
  returned: unless O(validate_only)
  type: str
score:
  description: Weighted score from 0 to 100.
  returned: unless O(validate_only)
  type: float
reason:
  description: Why the gate decided as it did.
  returned: unless O(validate_only)
  type: str
metrics:
  description: One entry per metric with its status, value, baseline, limit, reason and every measurement (the
    metric names only, with O(validate_only)).
  returned: always
  type: list
  elements: raw
checks:
  description: The metrics in the report's check shape (name, status, value, limit, baseline, reason).
  returned: unless O(validate_only)
  type: list
  elements: dict
measurements_taken:
  description: Measurement rounds made (fewer than count when stopped early).
  returned: always
  type: int
stopped_early:
  description: Whether measuring stopped because a critical metric could no longer pass.
  returned: always
  type: bool
started:
  description: UTC time the first measurement started.
  returned: always
  type: str
ended:
  description: UTC time the decision was made.
  returned: always
  type: str
elapsed_s:
  description: Seconds from start to decision.
  returned: always
  type: float
summary:
  description: Number of metrics in each status.
  returned: always
  type: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_accesslog import LOG_SOURCE_SPEC, JudgeInputError, LogMeasures, log_source
from ansible.module_utils.erni_gate import GateInputError, Metric, load_baselines, run_gate
from ansible.module_utils.erni_prometheus import (
    HAS_REQUESTS,
    PrometheusError,
    client_from_params,
    prometheus_argument_spec,
)

METRIC_SPEC = dict(
    name=dict(type="str", required=True),
    query=dict(type="str"),
    source=dict(type="str", choices=["prometheus", "access_log"], default="prometheus"),
    measure=dict(type="str", choices=["error_ratio", "latency_p50", "latency_p95", "latency_p99", "requests"]),
    window=dict(type="float", default=60),
    min_requests=dict(type="int", default=20),
    direction=dict(type="str", choices=["lower", "higher"], default="lower"),
    limit=dict(type="float"),
    tolerance=dict(type="float"),
    noise_floor=dict(type="float", default=0),
    baseline=dict(type="float"),
    baseline_key=dict(type="str", no_log=False),
    baseline_query=dict(type="str"),
    baseline_offset=dict(type="float"),
    baseline_at=dict(type="float"),
    no_data=dict(type="str", choices=["fail", "pass", "inconclusive"], default="fail"),
    critical=dict(type="bool", default=True),
    weight=dict(type="float", default=1),
    unit=dict(type="str", default=""),
    staging_comparison=dict(type="str", choices=["fail", "warn", "blocking"]),
    live_worse=dict(type="bool", default=False),
    judge_metric=dict(type="str", choices=["error_ratio", "latency"]),
)


def log_measures(p: dict[str, Any], metrics: list[Metric]) -> LogMeasures | None:
    """The access log reader the metrics with source access_log need, or None."""
    readers = [m.name for m in metrics if m.source == "access_log"]
    if not readers:
        return None
    if not p["access_log"] and not p["loki_url"]:
        raise GateInputError(f"metrics {', '.join(readers)} read the access log, but neither access_log nor "
                             f"loki_url is set")
    if p["log_side"] and p["log_side"] not in p["log_upstreams"]:
        raise GateInputError(f"log_side {p['log_side']!r} is not one of log_upstreams "
                             f"({', '.join(sorted(p['log_upstreams'])) or 'none given'})")
    upstreams = {str(k): str(v) for k, v in p["log_upstreams"].items()}
    source = log_source(p, upstreams, p["log_include"], p["log_exclude"], p["log_fields"])
    return LogMeasures(source, p["log_side"] or None)


def main() -> None:
    spec = prometheus_argument_spec()
    spec.update(
        metrics=dict(type="list", elements="dict", required=True, options=METRIC_SPEC,
                     mutually_exclusive=[["baseline", "baseline_key", "baseline_query", "baseline_offset"]]),
        baseline_file=dict(type="path"),
        access_log=dict(type="path"),
        **LOG_SOURCE_SPEC,
        log_fields=dict(type="dict", default={}),
        log_upstreams=dict(type="dict", default={}),
        log_side=dict(type="str", default=""),
        log_include=dict(type="str", default=""),
        log_exclude=dict(type="str", default=""),
        staging_comparison=dict(type="str", choices=["fail", "warn", "blocking"], default="fail"),
        live_judge=dict(type="list", elements="dict", default=[]),
        count=dict(type="int", default=1),
        interval=dict(type="float", default=0),
        failure_limit=dict(type="int", default=0),
        consecutive_error_limit=dict(type="int", default=4),
        time=dict(type="float"),
        pass_score=dict(type="float", default=90, no_log=False),
        warn_score=dict(type="float", default=75),
        fail_on=dict(type="list", elements="str", choices=["fail", "inconclusive", "warn"],
                     default=["fail", "inconclusive"]),
        concurrency=dict(type="int", default=10),
        validate_only=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"))
    p = module.params
    if not p["metrics"]:
        module.fail_json(msg="metrics is empty: a gate with nothing to measure would pass anything")
    checks = [("count", p["count"] >= 1, "at least 1"), ("interval", p["interval"] >= 0, "0 or more"),
              ("failure_limit", p["failure_limit"] >= 0, "0 or more"),
              ("consecutive_error_limit", p["consecutive_error_limit"] >= 0, "0 or more"),
              ("concurrency", p["concurrency"] >= 1, "at least 1"),
              ("pass_score", 0 <= p["pass_score"] <= 100, "from 0 to 100"),
              ("warn_score", 0 <= p["warn_score"] <= p["pass_score"], "from 0 to pass_score")]
    for key, ok, rule in checks:
        if not ok:
            module.fail_json(msg=f"{key}={p[key]} must be {rule}")
    names = [m["name"] for m in p["metrics"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        module.fail_json(msg=f"metric names must be unique; repeated: {', '.join(dupes)}")

    try:
        baselines = None
        if p["baseline_file"]:
            try:
                with open(p["baseline_file"], encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise GateInputError(f"baseline_file {p['baseline_file']} cannot be read: {exc.strerror}") from exc
            baselines = load_baselines(text, p["baseline_file"])
        # validating alone, a tolerance may wait for the baseline the run will name later
        metrics = [Metric.from_params(m, baselines, p["baseline_file"], require_baseline=not p["validate_only"],
                                      staging_comparison=p["staging_comparison"], live_judge=p["live_judge"])
                   for m in p["metrics"]]
        log = log_measures(p, metrics)
    except (GateInputError, JudgeInputError) as exc:
        module.fail_json(msg=str(exc))

    try:
        client = client_from_params(p, module.warn)
    except PrometheusError as exc:
        module.fail_json(msg=str(exc))
    if p["validate_only"]:
        client.close()
        module.exit_json(changed=False, validated=True, metrics=[m.name for m in metrics],
                         baselines=baselines or {})
    try:
        result = run_gate(client, metrics, count=p["count"], interval=p["interval"],
                          failure_limit=p["failure_limit"], consecutive_error_limit=p["consecutive_error_limit"],
                          at=p["time"], pass_score=p["pass_score"], warn_score=p["warn_score"],
                          concurrency=p["concurrency"], log=log)
    finally:
        client.close()
    out = result.as_dict()
    if result.verdict in p["fail_on"]:
        module.fail_json(msg=f"gate verdict {result.verdict} (score {out['score']}): {result.reason}",
                         changed=False, **out)
    module.exit_json(changed=False, **out)


if __name__ == "__main__":
    main()
