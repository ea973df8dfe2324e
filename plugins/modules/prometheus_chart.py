#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: draw what Prometheus saw around a deploy, for the report.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: prometheus_chart
short_description: Draw PromQL series over a time window as a PNG, with bands and marked events
description:
  - "Runs a range query per panel and draws the panels one above the other in a PNG
    (matplotlib, headless): the series, the baseline as a band (baseline plus or minus the
    tolerance), the limit as a dashed line, and vertical lines for events such as the
    switch and the rollback."
  - Writes the file only when its content would change; check mode draws nothing.
version_added: "1.0.0"
author: erni-deploy
options:
  dest:
    description: Path of the PNG to write.
    type: path
    required: true
  title:
    description: Title above the panels.
    type: str
    default: ""
  start:
    description: Start of the window, Unix seconds.
    type: float
    required: true
  end:
    description: End of the window, Unix seconds; default now.
    type: float
  step:
    description: Resolution in seconds.
    type: float
    default: 2
  panels:
    description: One panel per entry.
    type: list
    elements: dict
    required: true
    suboptions:
      title:
        description: Panel title.
        type: str
        required: true
      query:
        description: PromQL; every series it returns is drawn.
        type: str
        required: true
      unit:
        description: V(ratio) draws percent, V(s) milliseconds, otherwise the raw value.
        type: str
        default: ""
      baseline:
        description: Baseline value, drawn as a band.
        type: float
      tolerance:
        description: Relative width of the band around the baseline (0.10 is 10%).
        type: float
        default: 0.10
      limit:
        description: Absolute limit, drawn as a dashed line.
        type: float
  marks:
    description: Events drawn as vertical lines.
    type: list
    elements: dict
    default: []
    suboptions:
      label:
        description: What happened.
        type: str
        required: true
      time:
        description: When, Unix seconds.
        type: float
        required: true
extends_documentation_fragment:
  - erni_prometheus
requirements:
  - requests
  - matplotlib
"""

EXAMPLES = r"""
- name: Chart the soak window
  prometheus_chart:
    prometheus_url: http://127.0.0.1:9090
    dest: /tmp/soak.png
    start: "{{ switched_t | float - 60 }}"
    panels:
      - title: 5xx error rate
        query: sum(rate(http_requests_total{status=~"5.."}[30s])) / sum(rate(http_requests_total[30s]))
        unit: ratio
        limit: 0.05
    marks:
      - {label: switch, time: "{{ switched_t }}"}
  delegate_to: localhost
"""

RETURN = r"""
dest:
  description: The PNG written.
  returned: always
  type: str
series:
  description: Number of series drawn per panel.
  returned: always
  type: list
  elements: int
"""

import hashlib
import io
import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_prometheus import PrometheusError, client_from_params, prometheus_argument_spec

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    HAS_MATPLOTLIB = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_MATPLOTLIB = False

SCALE = {"ratio": (100.0, "%"), "s": (1000.0, "ms")}


def draw(series_per_panel, panels, marks, start, title):
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), sharex=True, squeeze=False)
    for ax, panel, series in zip([a[0] for a in axes], panels, series_per_panel, strict=True):
        factor, suffix = SCALE.get(panel["unit"] or "", (1.0, panel["unit"] or ""))
        for s in series:
            xs = [t - start for t, v in s.points if v == v]
            ys = [v * factor for _, v in s.points if v == v]
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("__name__", "job"))
            ax.plot(xs, ys, linewidth=1.6, label=label or panel["title"])
        if panel.get("baseline") is not None:
            b = panel["baseline"] * factor
            tol = abs(b) * (panel.get("tolerance") or 0)
            ax.axhspan(b - tol, b + tol, color="tab:green", alpha=0.15, label="baseline ± tolerance")
            ax.axhline(b, color="tab:green", linewidth=0.8)
        if panel.get("limit") is not None:
            ax.axhline(panel["limit"] * factor, color="tab:red", linestyle="--", linewidth=1, label="limit")
        for m in marks:
            ax.axvline(m["time"] - start, color="black", linestyle=":", linewidth=1)
            ax.annotate(m["label"], (m["time"] - start, 1), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(suffix)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1][0].set_xlabel("seconds from the start of the window")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def main() -> None:
    spec = prometheus_argument_spec()
    spec.update(
        dest=dict(type="path", required=True),
        title=dict(type="str", default=""),
        start=dict(type="float", required=True),
        end=dict(type="float"),
        step=dict(type="float", default=2),
        panels=dict(type="list", elements="dict", required=True, options=dict(
            title=dict(type="str", required=True),
            query=dict(type="str", required=True),
            unit=dict(type="str", default=""),
            baseline=dict(type="float"),
            tolerance=dict(type="float", default=0.10),
            limit=dict(type="float"),
        )),
        marks=dict(type="list", elements="dict", default=[], options=dict(
            label=dict(type="str", required=True),
            time=dict(type="float", required=True),
        )),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_MATPLOTLIB:
        module.fail_json(msg=missing_required_lib("matplotlib"))
    p = module.params
    end = p["end"] if p["end"] is not None else time.time()
    if end <= p["start"]:
        module.fail_json(msg=f"end {end} is not after start {p['start']}")
    if p["step"] <= 0:
        module.fail_json(msg=f"step={p['step']} must be positive")
    if not p["panels"]:
        module.fail_json(msg="panels is empty: there is nothing to draw")
    try:
        client = client_from_params(p, module.warn)
        series = [client.range(panel["query"], p["start"], end, p["step"]) for panel in p["panels"]]
    except PrometheusError as exc:
        module.fail_json(msg=f"cannot draw {p['dest']}: {exc}")
    counts = [len(s) for s in series]
    if module.check_mode:
        module.exit_json(changed=False, dest=p["dest"], series=counts)
    png = draw(series, p["panels"], p["marks"], p["start"], p["title"])
    old = None
    if os.path.exists(p["dest"]):
        with open(p["dest"], "rb") as fh:
            old = hashlib.sha256(fh.read()).hexdigest()
    changed = old != hashlib.sha256(png).hexdigest()
    if changed:
        os.makedirs(os.path.dirname(os.path.abspath(p["dest"])), exist_ok=True)
        tmp = p["dest"] + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(png)
        os.replace(tmp, p["dest"])
    module.exit_json(changed=changed, dest=p["dest"], series=counts)


if __name__ == "__main__":
    main()
