#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: the canary judge.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: canary_judge
short_description: Judge one canary step, the new colour against the old one in the same window
description:
  - Reads both colours' requests over the same seconds, from nginx's JSON access log (each
    request attributed to a colour by C($upstream_addr)) or from the service's Prometheus
    counters and latency histograms per colour, and compares them (see
    C(plugins/module_utils/erni_judge.py) for the rule).
  - "Error ratio: Fisher's exact test. Latency: the Mann-Whitney U test on the per-request
    times, with the Hodges-Lehmann shift as the effect. A metric fails only when the
    difference is significant (p below 1 - O(confidence)) and its effect exceeds the allowed
    increase (tolerance x the old colour's value + floor); too few samples, or an effect beyond
    the allowance that is not yet significant, is V(inconclusive)."
  - The step is looked at every O(interval) seconds. The checklist's absolute rollback triggers,
    (error rate above O(error_rate_limit), p95 above O(latency_limit), no successful answer for
    O(unavailable_seconds)), and a failing metric end it at once. After O(step_seconds) it passes
    when both metrics pass; an inconclusive metric extends it up to O(max_seconds), after which
    it fails closed.
  - With O(baseline_start) and O(baseline_end) the old colour is read over that window instead
    (the last step, at 100 %, has no traffic on the old colour, so its window just before is used).
  - Read-only; in check mode nothing is measured.
version_added: "1.0.0"
author: erni-deploy
options:
  source:
    description: Where the requests' outcomes are read.
    type: str
    choices: [access_log, prometheus]
    default: access_log
  access_log:
    description: Path of nginx's JSON access log (for O(source=access_log)), on the host the module runs on.
    type: path
  upstreams:
    description:
      - "For O(source=access_log), each colour's upstream address as nginx logs it, as V({blue: 127.0.0.1:18001})."
    type: dict
  log_fields:
    description:
      - Field names of the access log's JSON lines when they differ from nginx's variable names
        (keys C(time), C(uri), C(status), C(upstream_addr), C(upstream_status), C(upstream_time)).
      - C(time) is epoch seconds (C($msec)) or ISO 8601 (C($time_iso8601)).
    type: dict
    default: {}
  include:
    description: Regular expression; only request paths that match are judged (access log).
    type: str
    default: ""
  exclude:
    description:
      - Regular expression; request paths that match are not judged (access log), such as health and metrics routes.
    type: str
    default: ""
  selectors:
    description:
      - For O(source=prometheus), each colour's label matchers, as C(job="erni-ki",colour="blue") for blue.
    type: dict
  selector:
    description:
      - For O(source=prometheus) without O(selectors), the label matchers both colours share; each
        side adds O(colour_label) with its colour's name.
    type: str
  colour_label:
    description: The label that names the colour, with O(selector).
    type: str
    default: colour
  requests_metric:
    description: Counter of requests, with a status label (O(source=prometheus)).
    type: str
    default: http_requests_total
  histogram_metric:
    description: Histogram of request durations in seconds, without the C(_bucket) suffix (O(source=prometheus)).
    type: str
    default: http_request_duration_seconds
  extra_matchers:
    description: Label matchers added to every Prometheus selector, such as the routes to leave out.
    type: str
    default: ""
  canary:
    description: Name of the new colour.
    type: str
    required: true
  baseline:
    description: Name of the old colour.
    type: str
    required: true
  weight:
    description: The new colour's share of traffic in this step, in percent.
    type: float
    required: true
  start:
    description: When the step began (epoch seconds); the window runs from here. Default now.
    type: float
  switched_at:
    description:
      - When the rollout first sent traffic to the new colour (epoch seconds); default O(start).
      - At O(weight=100) the old colour has no traffic left, so it is read over O(step_seconds)
        just before this time, when it carried all of it, unless O(baseline_start) says otherwise.
    type: float
  end:
    description:
      - End of a window that is already over (epoch seconds), to judge it after the fact, once;
        the step's length limits are then not waited for.
    type: float
  baseline_start:
    description: Start of the old colour's window when it is not the step's own (epoch seconds).
    type: float
  baseline_end:
    description: End of the old colour's window (epoch seconds); default O(start).
    type: float
  step_seconds:
    description: The step's length; it passes no earlier.
    type: float
    default: 30
  max_seconds:
    description: The most the step may be extended to while a metric is inconclusive.
    type: float
    default: 90
  interval:
    description: Seconds between looks.
    type: float
    default: 2
  confidence:
    description: Confidence of the tests; a difference is significant when p is below 1 - confidence (Kayenta's 98 %).
    type: float
    default: 0.98
  min_samples:
    description: Requests each colour needs in the window before a metric can pass or fail.
    type: int
    default: 50
  error_tolerance:
    description: Allowed relative increase of the error ratio (the checklist's 10 %).
    type: float
    default: 0.10
  error_floor:
    description: Allowed absolute increase of the error ratio on top of the tolerance (0.01 is one point).
    type: float
    default: 0.01
  latency_tolerance:
    description: Allowed relative increase of the latency (the checklist's 10 %).
    type: float
    default: 0.10
  latency_floor:
    description: Allowed absolute increase of the latency in seconds on top of the tolerance.
    type: float
    default: 0.010
  error_rate_limit:
    description: Absolute trigger, the new colour's error ratio above this rolls back at once.
    type: float
    default: 0.05
  latency_limit:
    description: Absolute trigger, the new colour's p95 in seconds above this rolls back at once.
    type: float
    default: 5.0
  unavailable_seconds:
    description: Absolute trigger, no successful answer from the new colour for this long.
    type: float
    default: 30
  fail_on:
    description: Verdicts that fail the task.
    type: list
    elements: str
    choices: [fail, inconclusive]
    default: [fail, inconclusive]
  steps:
    description: With O(validate_only), the canary steps to check (increasing weights in (0, 100] ending in 100).
    type: list
    elements: raw
  validate_only:
    description: Check the settings and O(steps) and return; nothing is read.
    type: bool
    default: false
  prometheus_url:
    description: Base URL of Prometheus (O(source=prometheus)).
    type: str
  bearer_token:
    description: Bearer token for Prometheus.
    type: str
  username:
    description: Basic auth user for Prometheus.
    type: str
  password:
    description: Basic auth password for Prometheus.
    type: str
  ca_path:
    description: CA bundle for Prometheus's certificate.
    type: path
  validate_certs:
    description: Verify Prometheus's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each Prometheus query.
    type: float
    default: 10
extends_documentation_fragment:
  - erni_loki
requirements: [scipy, numpy]
"""

EXAMPLES = r"""
- name: "Check: canary at 10 %"
  erni.deploy.canary_judge:
    access_log: /var/log/nginx/access.json
    upstreams: {blue: "127.0.0.1:18001", green: "127.0.0.1:18002"}
    exclude: '^/(health|metrics|api/version)'
    canary: green
    baseline: blue
    weight: 10
    start: "{{ step_started_t }}"
    step_seconds: 30
    max_seconds: 90
"""

RETURN = r"""
verdict:
  description: pass, fail or inconclusive.
  returned: always, except with validate_only
  type: str
reason:
  description: Why, in words, with the figures.
  returned: always, except with validate_only
  type: str
metrics:
  description: >-
    Per metric (error_ratio, latency): verdict, test, n_canary, n_baseline, canary and baseline
    values (ratio, or median seconds), statistic, p_value, effect, threshold, worse, reason.
  returned: always, except with validate_only
  type: list
  elements: dict
triggers:
  description: The absolute rollback triggers that fired, in words.
  returned: always, except with validate_only
  type: list
  elements: str
seconds:
  description: How long the step was judged.
  returned: always, except with validate_only
  type: float
extended_s:
  description: Seconds the step ran past step_seconds because a metric was inconclusive.
  returned: always, except with validate_only
  type: float
step:
  description: What the report keeps of the step (verdict, reason, weight, window, metrics, triggers, times).
  returned: always, except with validate_only
  type: dict
judge_seconds:
  description: The judge's own time (reading and computing), without the waits.
  returned: always, except with validate_only
  type: float
checks:
  description: The metrics and triggers as report checks.
  returned: always, except with validate_only
  type: list
  elements: dict
steps:
  description: With validate_only, the steps as numbers.
  returned: with validate_only
  type: list
  elements: float
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_accesslog import LOG_SOURCE_SPEC, log_source
from ansible.module_utils.erni_judge import (
    JudgeInputError,
    PrometheusSource,
    Settings,
    Step,
    as_checks,
    judge_step,
    parse_steps,
)
from ansible.module_utils.erni_prometheus import PrometheusError, client_from_params, prometheus_argument_spec

try:
    import scipy  # noqa: F401

    HAS_SCIPY = True
except ImportError:
    HAS_SCIPY = False

SETTINGS = ("confidence", "min_samples", "error_tolerance", "error_floor", "latency_tolerance", "latency_floor",
            "error_rate_limit", "latency_limit", "unavailable_seconds")


def main() -> None:
    spec = dict(
        source=dict(type="str", choices=["access_log", "prometheus"], default="access_log"),
        access_log=dict(type="path"),
        upstreams=dict(type="dict"),
        log_fields=dict(type="dict", default={}),
        include=dict(type="str", default=""),
        exclude=dict(type="str", default=""),
        selectors=dict(type="dict"),
        selector=dict(type="str"),
        colour_label=dict(type="str", default="colour"),
        requests_metric=dict(type="str", default="http_requests_total"),
        histogram_metric=dict(type="str", default="http_request_duration_seconds"),
        extra_matchers=dict(type="str", default=""),
        canary=dict(type="str", required=True),
        baseline=dict(type="str", required=True),
        weight=dict(type="float", required=True),
        start=dict(type="float"),
        switched_at=dict(type="float"),
        end=dict(type="float"),
        baseline_start=dict(type="float"),
        baseline_end=dict(type="float"),
        step_seconds=dict(type="float", default=30),
        max_seconds=dict(type="float", default=90),
        interval=dict(type="float", default=2),
        confidence=dict(type="float", default=0.98),
        min_samples=dict(type="int", default=50),
        error_tolerance=dict(type="float", default=0.10),
        error_floor=dict(type="float", default=0.01),
        latency_tolerance=dict(type="float", default=0.10),
        latency_floor=dict(type="float", default=0.010),
        error_rate_limit=dict(type="float", default=0.05),
        latency_limit=dict(type="float", default=5.0),
        unavailable_seconds=dict(type="float", default=30),
        fail_on=dict(type="list", elements="str", choices=["fail", "inconclusive"], default=["fail", "inconclusive"]),
        steps=dict(type="list", elements="raw"),
        validate_only=dict(type="bool", default=False),
    )
    # Prometheus's connection options, as every module that queries it has them; the access
    # log source needs none, so the URL is asked for only with source=prometheus
    spec.update(LOG_SOURCE_SPEC)
    spec.update(prometheus_argument_spec())
    spec["prometheus_url"] = dict(type="str")
    module = AnsibleModule(
        argument_spec=spec, supports_check_mode=True,
        required_if=[("source", "access_log", ("access_log", "loki_url"), True),
                     ("source", "access_log", ("upstreams",), False),
                     ("source", "prometheus", ("prometheus_url",), False),
                     ("source", "prometheus", ("selectors", "selector"), True)])
    p = module.params
    if p["source"] == "prometheus" and not p["selectors"]:
        p["selectors"] = {side: f'{p["selector"]},{p["colour_label"]}="{side}"'
                          for side in (p["canary"], p["baseline"])}
    settings = Settings(**{k: p[k] for k in SETTINGS})
    try:
        settings.check()
        steps = parse_steps(p["steps"]) if p["steps"] is not None else None
        for side in (p["canary"], p["baseline"]):
            key = "upstreams" if p["source"] == "access_log" else "selectors"
            table = p[key] or {}
            if side not in table:
                raise JudgeInputError(f"colour {side!r} is not in {key} "
                                      f"(it has: {', '.join(sorted(table)) or 'nothing'})")
        start = p["start"] if p["start"] is not None else time.time()
        step = Step.after_switch(p["weight"], p["switched_at"] if p["switched_at"] is not None else start,
                                 canary=p["canary"], baseline=p["baseline"], start=start,
                                 min_seconds=p["step_seconds"], max_seconds=p["max_seconds"], interval=p["interval"],
                                 baseline_start=p["baseline_start"], baseline_end=p["baseline_end"], end=p["end"])
    except JudgeInputError as exc:
        module.fail_json(msg=str(exc))
    if p["validate_only"]:
        module.exit_json(changed=False, validated=True, steps=steps)
    if module.check_mode:
        module.exit_json(changed=False, skipped=True, verdict="skipped",
                         msg=f"dry run: {p['canary']} at {p['weight']:g}% would be judged against {p['baseline']} "
                             f"for {p['step_seconds']:g} s (up to {p['max_seconds']:g} s)")
    if not HAS_SCIPY:
        module.fail_json(msg=missing_required_lib("scipy"))

    client = None
    try:
        if p["source"] == "access_log":
            source = log_source(p, {k: str(v) for k, v in p["upstreams"].items()}, p["include"], p["exclude"],
                                p["log_fields"])
            source.start_at(min(step.start, step.baseline_start or step.start))
        else:
            try:
                client = client_from_params(p, module.warn)
            except PrometheusError as exc:
                module.fail_json(msg=str(exc))
            source = PrometheusSource(client, {k: str(v) for k, v in p["selectors"].items()}, p["requests_metric"],
                                      p["histogram_metric"], extra_matchers=p["extra_matchers"])
        result = judge_step(source, step, settings)
    except JudgeInputError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # a query error is never a pass: the judge fails closed
        module.fail_json(msg=f"the judge could not read the colours ({type(exc).__name__}: {exc}); "
                             f"no data is never a pass")
    finally:
        if client is not None:
            client.close()
    result["checks"] = as_checks(result)
    msg = f"{p['canary']} at {p['weight']:g}% against {p['baseline']}: {result['verdict']} after " \
          f"{result['seconds']:.0f} s: {result['reason']}"
    if result["verdict"] in p["fail_on"]:
        module.fail_json(msg=msg, changed=False, **result)
    module.exit_json(changed=False, msg=msg, **result)


if __name__ == "__main__":
    main()
