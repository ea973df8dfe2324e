#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: warm a freshly started colour up before it gets users, and measure it.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: warmup
short_description: Send a bounded warm-up to a freshly started colour and measure how it warms
description:
  - Sends GET requests to the colour in batches of O(batch), round-robin over O(paths),
    O(concurrency) at a time, and records each request's latency and status.
  - After each batch it takes the batch's median latency. The warm-up has settled once at least
    O(requests) requests have been sent and the last two batches' medians agree,
    that is |m_k - m_(k-1)| <= O(settle_tolerance) * m_(k-1) + O(settle_floor).
  - It stops when settled, when O(max_seconds) have passed, after 100 batches, or when a whole
    batch gets no HTTP answer. When it did not settle, a warning names the first and the last
    batch's medians.
  - Latency is recorded, never judged. The task fails only on bad options, or when not one
    request got an HTTP answer (nothing listening, TLS refused, ...), with the first error.
  - Settled means stable, not fast. A cold phase that lasts longer than O(requests) requests
    looks settled too, so give O(requests) enough to outlast the cold phase.
  - Never reports a change. In check mode it sends nothing (a warm-up is load, not a probe)
    and says what it would send.
version_added: "1.0.0"
author: erni-deploy
options:
  url:
    description: Base URL of the colour, for example V(http://127.0.0.1:18002); the paths are appended.
    type: str
    required: true
  reference_url:
    description:
      - Base URL of the colour that serves now (the old one). Each batch is sent to it too, and
        the warm-up settles only once the new colour's last two batch medians are within the
        tolerance of the old colour's (as fast as what users get now), not merely stable.
      - A reference for when to stop, never a verdict.
    type: str
  paths:
    description: Paths to request, round-robin, each starting with V(/).
    type: list
    elements: str
    default: ['/']
  headers:
    description: Request headers. Treated as secret (they may carry a bearer token).
    type: dict
    default: {}
  requests:
    description: The minimum number of requests; the warm-up does not settle before this many were sent.
    type: int
    default: 100
  batch:
    description:
      - Requests per batch; each batch gives one median.
      - At most 100 batches are sent, so O(requests) may be at most 100 times O(batch).
    type: int
    default: 20
  concurrency:
    description: Requests in flight at once.
    type: int
    default: 4
  settle_tolerance:
    description: Relative difference between the last two batch medians that still counts as agreement.
    type: float
    default: 0.2
  settle_floor:
    description: Absolute difference in seconds that always counts as agreement (noise on fast answers).
    type: float
    default: 0.002
  max_seconds:
    description: Hard bound on the warm-up's duration, in seconds; no request is started after it.
    type: float
    default: 60
  timeout:
    description: Seconds to wait for one answer (shortened to what is left of O(max_seconds)).
    type: float
    default: 5
  ca_path:
    description: CA bundle to verify TLS certificates with.
    type: path
  validate_certs:
    description: Verify TLS certificates. Turning it off is reported as a warning.
    type: bool
    default: true
requirements:
  - requests
"""

EXAMPLES = r"""
- name: Warm the new colour up before it gets users
  warmup:
    url: http://127.0.0.1:18002
    paths: [/, /api/v1/models]
    headers: {Authorization: "Bearer {{ smoke_token }}"}
    requests: 200
    max_seconds: 60
  register: warmup

- name: Show how it warmed
  ansible.builtin.debug:
    msg: "{{ warmup.msg }}"
"""

RETURN = r"""
msg:
  description: The warm-up in one line.
  returned: always
  type: str
  sample: "warm-up: 140 requests in 14.2 s, median 301.2 ms in the first batch, 4.1 ms in the last; settled"
skipped:
  description: True in check mode, where nothing is sent.
  returned: in check mode
  type: bool
requests:
  description: Requests measured (answered, or failed on their own) and counted in RV(batches).
  returned: unless in check mode
  type: int
abandoned:
  description: Requests cut off unanswered when O(max_seconds) ran out; not measurements, so not counted elsewhere.
  returned: unless in check mode
  type: int
seconds:
  description: Seconds the warm-up took.
  returned: unless in check mode
  type: float
settled:
  description: Whether the last two batch medians agreed after at least O(requests) requests.
  returned: unless in check mode
  type: bool
batches:
  description: One entry per batch, in order.
  returned: unless in check mode
  type: list
  elements: dict
  contains:
    n: {description: Requests sent in the batch., type: int}
    median_ms: {description: Median latency of the answered requests; null when none was answered., type: float}
    p95_ms: {description: 95th percentile (nearest rank) of the answered requests; null when none was., type: float}
    failed: {description: Requests without an HTTP answer or answered with a status of 400 or more., type: int}
reference_median_ms:
  description: The serving colour's median in the last batch sent to it, in ms (with O(reference_url)).
  returned: when run
  type: float
first_median_ms:
  description: The first batch's median latency in milliseconds.
  returned: unless in check mode
  type: float
last_median_ms:
  description: The last batch's median latency in milliseconds.
  returned: unless in check mode
  type: float
statuses:
  description: Requests by HTTP status code (as a string), or C(error:Name) for transport errors.
  returned: unless in check mode
  type: dict
  sample: {"200": 138, "error:ReadTimeout": 2}
per_path:
  description: Per path, the requests sent (C(n)) and the median latency of the answered ones (C(median_ms)).
  returned: unless in check mode
  type: dict
  sample: {"/": {"n": 70, "median_ms": 4.3}, "/api/v1/models": {"n": 70, "median_ms": 5.1}}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_http import HAS_REQUESTS, REQUESTS_IMPORT_ERROR, tls_verify
from ansible.module_utils.erni_warmup import (
    WarmupError,
    WarmupInputError,
    describe_plan,
    validate_options,
    warm_up,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            reference_url=dict(type="str"),
            paths=dict(type="list", elements="str", default=["/"]),
            headers=dict(type="dict", default={}, no_log=True),
            requests=dict(type="int", default=100),
            batch=dict(type="int", default=20),
            concurrency=dict(type="int", default=4),
            settle_tolerance=dict(type="float", default=0.2),
            settle_floor=dict(type="float", default=0.002),
            max_seconds=dict(type="float", default=60),
            timeout=dict(type="float", default=5),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=str(REQUESTS_IMPORT_ERROR))
    p = module.params
    plan = {k: p[k] for k in ("url", "paths", "requests", "batch", "concurrency", "max_seconds")}
    try:
        validate_options(settle_tolerance=p["settle_tolerance"], settle_floor=p["settle_floor"],
                         timeout=p["timeout"], **plan)
    except WarmupInputError as exc:
        module.fail_json(msg=str(exc))

    if module.check_mode:
        module.exit_json(changed=False, skipped=True, msg=f"check mode: {describe_plan(**plan)}")

    verify = tls_verify(p, module.warn, "server")

    try:
        result = warm_up(headers=p["headers"], settle_tolerance=p["settle_tolerance"],
                         settle_floor=p["settle_floor"], timeout=p["timeout"], verify=verify,
                         reference_url=p["reference_url"], **plan)
    except (WarmupError, WarmupInputError) as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
