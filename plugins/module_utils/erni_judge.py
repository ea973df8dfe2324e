# -*- coding: utf-8 -*-
# erni-deploy: the canary judge's logic (read both colours, compare, decide).
"""The canary judge: the new colour against the old one, over the same seconds, under the
same traffic.

Why a judge of our own: Kayenta (Spinnaker's judge) is a Java service that needs Spinnaker
and a metrics store of its own; Argo Rollouts' and Flagger's analyses need a Kubernetes
controller and a mesh or an ingress controller to split traffic. Here traffic is split by
nginx's upstream weights and each request's outcome is in nginx's access log (which upstream
answered, its status and its time) or in the service's Prometheus histogram per colour. The
statistics are scipy's (``fisher_exact``, ``mannwhitneyu``); what is ours is reading those
sources and the decision rule below.

Per metric, with the canary (new colour) and the baseline (old colour) read over a window:

- **errors** (a 5xx answer, or an upstream that could not be reached): Fisher's exact test,
  one-sided (the canary has the larger error proportion); effect = canary ratio - baseline
  ratio.
- **latency** (per-request upstream time of the user routes): the Mann-Whitney U test,
  one-sided (the canary's latencies are stochastically larger); effect = the Hodges-Lehmann
  shift (the median of all canary-minus-baseline differences), so the whole distributions
  are compared, not one quantile.

A metric **fails** only when the difference is significant (p < 1 - confidence) *and* the
effect is larger than its allowed increase: ``tolerance x baseline + floor`` (the
checklist's 10 % and an absolute floor). It is **inconclusive** when either side has fewer
than ``min_samples`` requests, or when the effect is beyond the allowance but not (yet)
significant: more data decides. Otherwise it **passes**; a significant difference within
the allowance passes and is flagged ``worse`` (what a blocking staging comparison asks for).

The checklist's rollback triggers are absolute and need no significance: the canary's error
ratio above ``error_rate_limit`` (5 %), its p95 above ``latency_limit`` (5 s), or no
successful answer for ``unavailable_seconds`` (30 s) while requests reached it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.erni_accesslog import (  # noqa: F401  (the judge's readers, named here too)
    LOG_MEASURES,
    AccessLogSource,
    Attempt,
    JudgeInputError,
    LogMeasures,
    LokiSource,
    Sample,
)
from ansible.module_utils.erni_accesslog import quantile as _quantile

VERDICTS = ("pass", "fail", "inconclusive")


class PrometheusSource:
    """Request counts and latency histograms per colour, from the service's own metrics.

    Counts come from ``increase()`` of the request counter over the window (rounded: the
    extrapolated increase is not an integer); latencies from ``increase()`` of the histogram
    buckets, each bucket's count standing at the bucket's midpoint (ties, which the
    Mann-Whitney test's tie correction handles). The window must span two scrapes at least.
    """

    def __init__(self, client: Any, selectors: dict[str, str], requests_metric: str,
                 histogram_metric: str, extra_matchers: str = "", error_matcher: str = 'status=~"5.."') -> None:
        self.client = client
        self.selectors = selectors
        self.requests_metric = requests_metric
        self.histogram_metric = histogram_metric
        self.extra = extra_matchers
        self.error_matcher = error_matcher

    def _sel(self, side: str, *more: str) -> str:
        parts = [p for p in (self.selectors[side], self.extra, *more) if p]
        return "{" + ",".join(parts) + "}"

    def _scalar(self, query: str, at: float) -> float:
        samples = self.client.instant(query, at)
        return sum(s.value for s in samples if not math.isnan(s.value))

    def window(self, t0: float, t1: float, sides: Iterable[str]) -> dict[str, Sample]:
        secs = max(1, round(t1 - t0))
        out: dict[str, Sample] = {}
        for side in sides:
            total = self._scalar(f"sum(increase({self.requests_metric}{self._sel(side)}[{secs}s]))", t1)
            errors = self._scalar(
                f"sum(increase({self.requests_metric}{self._sel(side, self.error_matcher)}[{secs}s]))", t1)
            buckets = self.client.instant(
                f"sum by (le) (increase({self.histogram_metric}_bucket{self._sel(side)}[{secs}s]))", t1)
            s = Sample(total=round(total), errors=round(errors))
            s.latencies = histogram_points(
                [(float(b.labels.get("le", "nan")), b.value) for b in buckets if not math.isnan(b.value)])
            if s.total - s.errors > 0:
                s.last_ok = t1
            out[side] = s
        return out


def histogram_points(cumulative: list[tuple[float, float]]) -> list[float]:
    """Cumulative bucket counts [(le, count)] -> one value per observation, spread evenly over
    its bucket (the +Inf bucket's at twice the last bound). A histogram cannot tell apart two
    latencies inside one bucket: the buckets are the Prometheus source's resolution."""
    points: list[float] = []
    prev_le, prev_count = 0.0, 0.0
    finite = sorted((le, c) for le, c in cumulative if math.isfinite(le))
    inf = [c for le, c in cumulative if math.isinf(le)]
    for le, count in finite + ([(math.inf, inf[0])] if inf else []):
        n = round(count - prev_count)
        if n > 0:
            if math.isinf(le):
                points.extend([prev_le * 2] * n)
            else:
                width = le - prev_le
                points.extend(prev_le + width * (i + 0.5) / n for i in range(n))
        prev_le = prev_le if math.isinf(le) else le
        prev_count = max(prev_count, count)
    return points


# --------------------------------------------------------------------------- statistics

@dataclass
class Settings:
    confidence: float = 0.98
    min_samples: int = 50
    error_tolerance: float = 0.10
    error_floor: float = 0.01
    latency_tolerance: float = 0.10
    latency_floor: float = 0.010
    error_rate_limit: float = 0.05
    latency_limit: float = 5.0
    unavailable_seconds: float = 30.0
    trigger_min_samples: int = 20

    def check(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise JudgeInputError(f"confidence={self.confidence} must be in (0.5, 1), as 0.98")
        for name in ("error_tolerance", "error_floor", "latency_tolerance", "latency_floor", "error_rate_limit",
                     "latency_limit", "unavailable_seconds"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise JudgeInputError(f"{name}={v!r} must be a finite number, not negative")
        if self.min_samples < 1 or self.trigger_min_samples < 1:
            raise JudgeInputError(f"min_samples={self.min_samples} and trigger_min_samples="
                                  f"{self.trigger_min_samples} must be at least 1")


def hodges_lehmann(canary: list[float], baseline: list[float], cap: int = 2000) -> float:
    """Median of all canary-minus-baseline differences (each side thinned evenly to `cap`)."""
    import numpy as np

    def thin(v: list[float]) -> Any:
        a = np.sort(np.asarray(v, dtype=float))
        return a if len(a) <= cap else a[np.linspace(0, len(a) - 1, cap).round().astype(int)]

    return float(np.median(np.subtract.outer(thin(canary), thin(baseline))))


def _decide(significant: bool, effect: float, threshold: float) -> str:
    if effect > threshold:
        return "fail" if significant else "inconclusive"
    return "pass"


def compare_errors(c: Sample, b: Sample, s: Settings, alpha: float | None = None) -> dict[str, Any]:
    from scipy.stats import fisher_exact

    alpha = 1 - s.confidence if alpha is None else alpha
    out: dict[str, Any] = {"name": "error_ratio", "test": "fisher_exact", "unit": "ratio",
                           "n_canary": c.total, "n_baseline": b.total,
                           "errors_canary": c.errors, "errors_baseline": b.errors,
                           "canary": c.errors / c.total if c.total else None,
                           "baseline": b.errors / b.total if b.total else None,
                           "statistic": None, "p_value": None, "effect": None, "threshold": None, "worse": False}
    if c.total < s.min_samples or b.total < s.min_samples:
        out.update(verdict="inconclusive", reason=f"too few requests: {c.total} on the new colour, {b.total} on "
                                                  f"the old (at least {s.min_samples} each)")
        return out
    rc, rb = c.errors / c.total, b.errors / b.total
    res = fisher_exact([[c.errors, c.total - c.errors], [b.errors, b.total - b.errors]], alternative="greater")
    p = float(res.pvalue)
    stat = float(res.statistic) if math.isfinite(float(res.statistic)) else None
    effect, threshold = rc - rb, s.error_tolerance * rb + s.error_floor
    significant = p < alpha
    verdict = _decide(significant, effect, threshold)
    out.update(statistic=stat, p_value=p, alpha=alpha, effect=effect, threshold=threshold, verdict=verdict,
               worse=significant and effect > 0,
               reason=f"errors {c.errors}/{c.total} ({rc * 100:.2f}%) on the new colour against {b.errors}/{b.total} "
                      f"({rb * 100:.2f}%) on the old: {effect * 100:+.2f} points, allowed "
                      f"{threshold * 100:.2f}, p={p:.3g}")
    return out


def compare_latency(c: Sample, b: Sample, s: Settings, alpha: float | None = None) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu

    alpha = 1 - s.confidence if alpha is None else alpha
    out: dict[str, Any] = {"name": "latency", "test": "mann_whitney_u", "unit": "s",
                           "n_canary": len(c.latencies), "n_baseline": len(b.latencies),
                           "canary": _quantile(c.latencies, 0.5), "baseline": _quantile(b.latencies, 0.5),
                           "canary_p95": _quantile(c.latencies, 0.95), "baseline_p95": _quantile(b.latencies, 0.95),
                           "statistic": None, "p_value": None, "effect": None, "threshold": None, "worse": False}
    if len(c.latencies) < s.min_samples or len(b.latencies) < s.min_samples:
        out.update(verdict="inconclusive", reason=f"too few timed requests: {len(c.latencies)} on the new colour, "
                                                  f"{len(b.latencies)} on the old (at least {s.min_samples} each)")
        return out
    res = mannwhitneyu(c.latencies, b.latencies, alternative="greater")
    p = float(res.pvalue)
    effect = hodges_lehmann(c.latencies, b.latencies)
    threshold = s.latency_tolerance * float(out["baseline"]) + s.latency_floor
    significant = p < alpha
    out.update(statistic=float(res.statistic), p_value=p, alpha=alpha, effect=effect, threshold=threshold,
               verdict=_decide(significant, effect, threshold), worse=significant and effect > 0,
               reason=f"median {out['canary'] * 1000:.1f} ms on the new colour against {out['baseline'] * 1000:.1f} ms "
                      f"on the old: shift {effect * 1000:+.1f} ms, allowed {threshold * 1000:.1f} ms, p={p:.3g}")
    return out


def triggers(c: Sample, recent: Sample | None, s: Settings, judged_for: float,
             expected_recent: float, alpha: float | None = None) -> list[str]:
    """The checklist's absolute rollback triggers on the canary; each is a reason in words.

    "Error rate above 5 %" and "response time above 5 s" (the p95) are judged as proportions
    above a limit: the trigger fires when a one-sided binomial test says the canary's error
    share (or its share of answers slower than the limit) is above 5 %, so a good release's
    two errors in its first twenty requests do not roll it back, while 30 % errors do at once.
    """
    from scipy.stats import binomtest

    alpha = 1 - s.confidence if alpha is None else alpha
    out = []
    if c.total >= s.trigger_min_samples and c.errors / c.total > s.error_rate_limit \
            and binomtest(c.errors, c.total, s.error_rate_limit, alternative="greater").pvalue < alpha:
        out.append(f"error rate {c.errors / c.total * 100:.1f}% ({c.errors} of {c.total}) on the new colour is above "
                   f"{s.error_rate_limit * 100:g}%")
    slow = sum(1 for x in c.latencies if x > s.latency_limit)
    n = len(c.latencies)
    if n >= s.trigger_min_samples and slow / n > 0.05 \
            and binomtest(slow, n, 0.05, alternative="greater").pvalue < alpha:
        out.append(f"p95 response time on the new colour is above {s.latency_limit:g} s ({slow} of {n} answers "
                   f"slower, p95 {_quantile(c.latencies, 0.95):.2f} s)")
    if recent is not None and judged_for >= s.unavailable_seconds and expected_recent >= 10 \
            and recent.total - recent.errors == 0:
        out.append(f"the new colour answered no request successfully in {s.unavailable_seconds:g} s "
                   f"({recent.total} attempts reached it)")
    return out


# --------------------------------------------------------------------------- a step

@dataclass
class Step:
    weight: float
    canary: str
    baseline: str
    start: float
    min_seconds: float
    max_seconds: float
    interval: float = 2.0
    baseline_start: float | None = None     # adjacent window (the last step: no baseline traffic)
    baseline_end: float | None = None
    end: float | None = None                # a window already over: judged once, up to here

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Each bad value named, as the module's options are called."""
        if self.canary == self.baseline:
            raise JudgeInputError(f"canary and baseline are both {self.canary!r}: a colour cannot be judged "
                                  f"against itself")
        for key, value, ok, rule in (
                ("step_seconds", self.min_seconds, self.min_seconds > 0, "positive"),
                ("max_seconds", self.max_seconds, self.max_seconds >= self.min_seconds, "at least step_seconds"),
                ("interval", self.interval, self.interval > 0, "positive"),
                ("weight", self.weight, 0 < self.weight <= 100, "in (0, 100]")):
            if not ok:
                raise JudgeInputError(f"{key}={value:g} must be {rule}")

    @classmethod
    def after_switch(cls, weight: float, switched_at: float, **kw: Any) -> Step:
        """A step of a rollout that switched at `switched_at`. At 100 % the old colour has no
        traffic: it is read over the step's length just before the switch, when it carried all
        of it (the load the new colour carries now)."""
        if weight >= 100 and kw.get("baseline_start") is None:
            kw["baseline_start"] = switched_at - kw["min_seconds"]
            kw["baseline_end"] = switched_at
        return cls(weight=weight, **kw)


def evaluate(source: Any, step: Step, s: Settings, now: float, alpha: float | None = None) -> dict[str, Any]:
    """One look at the step so far: both metrics and the triggers, each test at `alpha`."""
    sides = (step.canary, step.baseline)
    win = source.window(step.start, now, sides)
    c = win[step.canary]
    if step.baseline_start is not None:
        b = source.window(step.baseline_start, step.baseline_end or step.start, sides)[step.baseline]
    else:
        b = win[step.baseline]
    recent = None
    expected = 0.0
    if now - step.start >= s.unavailable_seconds:
        rwin = source.window(now - s.unavailable_seconds, now, sides)
        recent = rwin[step.canary]
        if step.weight >= 100:
            expected = float(recent.total) or float(b.total) * s.unavailable_seconds / max(1.0, now - step.start)
        else:
            expected = rwin[step.baseline].total * step.weight / max(1.0, 100 - step.weight)
    metrics = [compare_errors(c, b, s, alpha), compare_latency(c, b, s, alpha)]
    note = source.unattributed() if hasattr(source, "unattributed") else ""
    for m in metrics:
        if note and m["verdict"] == "inconclusive" and "too few" in m["reason"]:
            m["reason"] += f"; the log also held {note}"
    return {"at": now, "seconds": round(now - step.start, 3), "metrics": metrics,
            "triggers": triggers(c, recent, s, now - step.start, expected, alpha)}


def judge_step(source: Any, step: Step, s: Settings, clock: Callable[[], float] = time.time,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Look every `interval` seconds until the step is decided.

    A trigger or a failing metric ends the step at once. After `min_seconds`, the step passes
    when every metric passes; an inconclusive metric extends it, up to `max_seconds`, after
    which the step fails closed. Looking again and again at growing data would make a 2 % test
    fail a good release far more often than 2 % of the time, so each look tests at
    (1 - confidence) divided by the number of looks the step may take (Bonferroni): over the
    whole step, a good release fails with at most the stated chance.
    """
    s.check()
    looks: list[dict[str, Any]] = []
    busy = 0.0
    n_looks = 1 if step.end is not None else max(1, math.ceil(step.max_seconds / step.interval))
    alpha = (1 - s.confidence) / n_looks
    verdict, reason, last = "inconclusive", "", None
    while True:
        wake = min(clock() + step.interval, step.start + step.max_seconds)
        pause = wake - clock()
        if pause > 0:
            sleep(pause)
        t0 = time.perf_counter()
        last = evaluate(source, step, s, clock() if step.end is None else min(clock(), step.end), alpha)
        busy += time.perf_counter() - t0
        looks.append({"seconds": last["seconds"],
                      "verdicts": {m["name"]: m["verdict"] for m in last["metrics"]},
                      "n_canary": last["metrics"][0]["n_canary"], "n_baseline": last["metrics"][0]["n_baseline"]})
        elapsed = last["seconds"]
        failed = [m for m in last["metrics"] if m["verdict"] == "fail"]
        unsure = [m for m in last["metrics"] if m["verdict"] == "inconclusive"]
        if last["triggers"]:
            verdict, reason = "fail", "; ".join(last["triggers"])
            break
        if failed:
            verdict, reason = "fail", "; ".join(f"{m['name']}: {m['reason']}" for m in failed)
            break
        if (elapsed >= step.min_seconds or step.end is not None) and not unsure:
            verdict, reason = "pass", "; ".join(f"{m['name']}: {m['reason']}" for m in last["metrics"])
            break
        if elapsed >= step.max_seconds - 1e-6 or step.end is not None:
            verdict = "inconclusive"
            reason = (f"still inconclusive after {elapsed:.0f} s (the step's limit), which fails closed: "
                      + "; ".join(f"{m['name']}: {m['reason']}" for m in unsure))
            break
    assert last is not None
    result = {"verdict": verdict, "reason": reason, "weight": step.weight, "canary": step.canary,
            "baseline": step.baseline, "start": step.start, "end": last["at"], "seconds": last["seconds"],
            "extended_s": round(max(0.0, last["seconds"] - step.min_seconds), 3) if verdict != "fail" else 0.0,
            "baseline_window": "adjacent" if step.baseline_start is not None else "same",
            "alpha_per_look": alpha, "looks_allowed": n_looks,
            "metrics": last["metrics"], "triggers": last["triggers"], "looks": looks,
            "judge_seconds": round(busy, 4)}
    # what the report keeps of the step (the looks stay in the task's result)
    result["step"] = {k: result[k] for k in REPORTED}
    return result


REPORTED = ("verdict", "reason", "weight", "start", "end", "seconds", "extended_s", "metrics", "triggers",
            "baseline_window", "judge_seconds")


def as_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The step's metrics as report checks (a trigger is a check of its own)."""
    out = []
    for m in result["metrics"]:
        status = m["verdict"]
        if result["verdict"] == "inconclusive" and status == "inconclusive":
            status = "fail"
        out.append({"name": f"{m['name']} at {result['weight']:g}%", "status": status,
                    "value": m.get("canary"), "baseline": m.get("baseline"), "limit": m.get("threshold"),
                    "p_value": m.get("p_value"), "reason": m.get("reason")})
    for t in result["triggers"]:
        out.append({"name": f"rollback trigger at {result['weight']:g}%", "status": "fail", "reason": t})
    return out


def parse_steps(raw: Any, name: str = "canary_steps") -> list[float]:
    """canary_steps: increasing weights in (0, 100] ending in 100; the error names the variable."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise JudgeInputError(f"{name} must be a non-empty list of traffic weights ending in 100, "
                              f"as [10, 50, 100]; got {raw!r}")
    steps: list[float] = []
    for i, v in enumerate(raw):
        if isinstance(v, bool):
            raise JudgeInputError(f"{name}[{i}]={v!r} is not a number")
        try:
            w = float(v)
        except (TypeError, ValueError):
            raise JudgeInputError(f"{name}[{i}]={v!r} is not a number") from None
        if not math.isfinite(w) or not 0 < w <= 100:
            raise JudgeInputError(f"{name}[{i}]={v!r} is outside (0, 100]: a weight is a percentage of traffic")
        if steps and w <= steps[-1]:
            raise JudgeInputError(f"{name}[{i}]={v!r} is not larger than the step before it ({steps[-1]:g}): "
                                  f"steps must increase")
        steps.append(w)
    if steps[-1] != 100:
        raise JudgeInputError(f"{name} must end in 100 (all traffic on the new release); it ends in {steps[-1]:g}")
    return steps
