#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: run a PromQL query.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: prometheus_query
short_description: Run an instant or range PromQL query
description:
  - Runs a PromQL query against Prometheus's HTTP API and returns the samples as floats
    with their labels.
  - NaN and infinite values are returned as C(null) in C(value), with their text in C(raw).
  - Prometheus unreachable, a timeout or a query Prometheus rejects fail the task with a
    message saying which; an empty result is not an error unless O(fail_on_empty) is set.
  - Read-only; runs in check mode and never reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  query:
    description: The PromQL expression.
    type: str
    required: true
  type:
    description: Instant query (one value per series) or range query (a series of values).
    type: str
    choices: [instant, range]
    default: instant
  time:
    description: Evaluation time of an instant query, in Unix seconds; default now.
    type: float
  start:
    description: Start of a range query, Unix seconds; default O(end) minus 5 minutes.
    type: float
  end:
    description: End of a range query, Unix seconds; default now.
    type: float
  step:
    description: Resolution of a range query, in seconds.
    type: float
    default: 15
  fail_on_empty:
    description: Fail when the query returns no series.
    type: bool
    default: false
extends_documentation_fragment:
  - erni_prometheus
requirements:
  - requests
"""

EXAMPLES = r"""
- name: Scrape targets that are down
  prometheus_query:
    prometheus_url: http://127.0.0.1:9090
    query: up == 0
  register: down

- name: 5xx ratio over the last 10 minutes, one point a minute
  prometheus_query:
    prometheus_url: http://127.0.0.1:9090
    type: range
    query: sum(rate(http_requests_total{status=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))
    start: "{{ now(utc=true).timestamp() - 600 }}"
    step: 60
"""

RETURN = r"""
result_type:
  description: C(vector) for instant queries (scalars are returned as one sample), C(matrix) for range queries.
  returned: always
  type: str
samples:
  description: Instant query results.
  returned: when type is instant
  type: list
  elements: dict
  contains:
    labels: {description: The series' labels., type: dict}
    value: {description: The value; null when NaN or infinite., type: float}
    raw: {description: The value as text (C(NaN), C(+Inf) included)., type: str}
    timestamp: {description: Evaluation time in Unix seconds., type: float}
series:
  description: Range query results.
  returned: when type is range
  type: list
  elements: dict
  contains:
    labels: {description: The series' labels., type: dict}
    values: {description: "[time, value] pairs; value null when NaN or infinite.", type: list}
    non_finite: {description: How many values were NaN or infinite., type: int}
count:
  description: Number of series returned.
  returned: always
  type: int
empty:
  description: Whether the query returned no series.
  returned: always
  type: bool
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_prometheus import (
    HAS_REQUESTS,
    PrometheusError,
    client_from_params,
    prometheus_argument_spec,
)


def main() -> None:
    spec = prometheus_argument_spec()
    spec.update(
        query=dict(type="str", required=True),
        type=dict(type="str", choices=["instant", "range"], default="instant"),
        time=dict(type="float"),
        start=dict(type="float"),
        end=dict(type="float"),
        step=dict(type="float", default=15),
        fail_on_empty=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"))
    p = module.params
    if not p["query"].strip():
        module.fail_json(msg="query is empty")
    try:
        client = client_from_params(p, module.warn)
        if p["type"] == "instant":
            samples = client.instant(p["query"], p["time"])
            out = dict(result_type="vector", samples=[s.as_dict() for s in samples], count=len(samples))
        else:
            end = p["end"] if p["end"] is not None else time.time()
            start = p["start"] if p["start"] is not None else end - 300
            series = client.range(p["query"], start, end, p["step"])
            out = dict(result_type="matrix", series=[s.as_dict() for s in series], count=len(series))
    except PrometheusError as exc:
        module.fail_json(msg=f"query {p['query']!r} failed: {exc}")
    out["empty"] = out["count"] == 0
    if out["empty"] and p["fail_on_empty"]:
        module.fail_json(msg=f"query {p['query']!r} returned no series", changed=False, **out)
    module.exit_json(changed=False, **out)


if __name__ == "__main__":
    main()
