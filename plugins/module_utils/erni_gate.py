# -*- coding: utf-8 -*-
# erni-deploy: the deployment gate's logic (measure, compare, decide).
"""The deployment gate: measure metrics in Prometheus, compare them with limits and a
baseline, and decide.

Per measurement, each metric is judged pass / warn / fail (against an absolute limit and
against its baseline with a relative tolerance and an absolute noise floor), or nodata,
or error. Over several measurements a metric fails when more measurements failed than
its failure limit allows (as Argo Rollouts' analysis counts them) and is inconclusive
when queries keep erroring. The verdict weighs the metrics into a score (as Keptn's
quality gates do), but a critical metric that fails decides alone, and an error is never
a pass: the gate fails closed.
"""

from __future__ import annotations

import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.erni_judge import LOG_MEASURES, JudgeInputError, LogMeasures
from ansible.module_utils.erni_prometheus import PrometheusClient, PrometheusError

STATUSES = ("pass", "warn", "fail", "inconclusive", "nodata")
# a metric only worse than the staging baseline (DEGRADED) is said, never scored down: a
# comparison with another minute and another database must not add up to a rollback
POINTS = {"pass": 1.0, "degraded": 1.0, "warn": 0.5, "fail": 0.0, "inconclusive": 0.0}
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(ms|s|%)?\s*$")


class GateInputError(ValueError):
    """The gate was given something it cannot judge with; the message names it."""


def parse_quantity(raw: Any, where: str) -> float:
    """1.2s -> 1.2, 450ms -> 0.45, 65% -> 0.65, 0.05 -> 0.05 (seconds and fractions)."""
    if isinstance(raw, bool):
        raise GateInputError(f"{where}: {raw!r} is not a number")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        m = _QUANTITY.match(str(raw))
        if not m:
            raise GateInputError(f"{where}: {raw!r} is not a number, a duration (1.2s, 450ms) "
                                 f"or a percentage (65%)")
        value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "%": 0.01, None: 1.0}[m.group(2)]
    if not math.isfinite(value):
        raise GateInputError(f"{where}: {raw!r} is not a finite number")
    return value


def load_baselines(text: str, source: str) -> dict[str, float]:
    """Baselines in the checklist's YAML shape, with or without its 'Baselines (...)' heading."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GateInputError(f"{source} is not valid YAML: {exc}") from exc
    if isinstance(data, dict) and len(data) == 1:
        (key, inner), = data.items()
        if str(key).lower().startswith("baselines") and isinstance(inner, dict):
            data = inner
    if not isinstance(data, dict) or not data:
        raise GateInputError(f"{source} must map metric names to values, as in "
                             f"'api_latency_p95: 1.2s'")
    return {str(k): parse_quantity(v, f"{source}: {k}") for k, v in data.items()}


@dataclass
class Metric:
    name: str
    query: str
    direction: str = "lower"
    limit: float | None = None
    tolerance: float | None = None
    noise_floor: float = 0.0
    baseline: float | None = None
    baseline_query: str | None = None
    baseline_offset: float | None = None
    baseline_at: float | None = None
    no_data: str = "fail"
    critical: bool = True
    weight: float = 1.0
    unit: str = ""
    baseline_source: str = ""
    # what exceeding the baseline's tolerance does: fail (the metric fails), warn (the
    # checklist's DEGRADED: reported, never a rollback on its own) or blocking (fails only
    # when the live canary judge also found the new colour worse than the old one)
    staging_comparison: str = "fail"
    live_worse: bool = False
    # where the value comes from: a PromQL query, or a window of nginx's JSON access log
    # (erni_judge.LogMeasures: the canary judge's reading of each request's outcome)
    source: str = "prometheus"
    measure: str = ""
    window: float = 60.0
    min_requests: int = 20

    @classmethod
    def from_params(cls, p: dict[str, Any], baselines: dict[str, float] | None, baseline_file: str | None,
                    require_baseline: bool = True, staging_comparison: str = "fail",
                    live_judge: list[dict[str, Any]] | None = None) -> Metric:
        """`staging_comparison` is the default for metrics that do not set their own; with
        `live_judge` (the canary judge's steps), a metric's `judge_metric` says whether the judge
        found the new colour worse on it."""
        name = p["name"]
        for key in ("limit", "tolerance", "noise_floor", "baseline", "baseline_offset", "baseline_at", "weight"):
            v = p.get(key)
            if v is not None and not math.isfinite(v):
                raise GateInputError(f"metric {name!r}: {key}={v} is not a finite number")
        for key in ("limit", "tolerance", "noise_floor", "baseline_offset"):
            if p.get(key) is not None and p[key] < 0:
                raise GateInputError(f"metric {name!r}: {key}={p[key]} must not be negative")
        if p.get("weight") is not None and p["weight"] <= 0:
            raise GateInputError(f"metric {name!r}: weight={p['weight']} must be positive")
        baseline, source = p.get("baseline"), "given" if p.get("baseline") is not None else ""
        if p.get("baseline_key"):
            if baselines is None:
                raise GateInputError(f"metric {name!r} names baseline_key {p['baseline_key']!r} "
                                     f"but no baseline_file was given")
            if p["baseline_key"] not in baselines:
                raise GateInputError(f"metric {name!r}: baseline_key {p['baseline_key']!r} is not in "
                                     f"{baseline_file} (it has: {', '.join(sorted(baselines))})")
            baseline, source = baselines[p["baseline_key"]], f"{baseline_file}:{p['baseline_key']}"
        if p.get("baseline_query"):
            source = "query"
        if p.get("baseline_offset") is not None:
            source = f"the same query {p['baseline_offset']:g} s earlier"
        if p.get("baseline_at") is not None:
            if not p.get("baseline_query"):
                raise GateInputError(f"metric {name!r}: baseline_at needs a baseline_query to evaluate then")
            source = f"query at {iso(p['baseline_at'])}"
        origin = p.get("source") or "prometheus"
        if origin == "access_log":
            if not p.get("measure"):
                raise GateInputError(f"metric {name!r} reads the access log but names no measure "
                                     f"(one of {', '.join(LOG_MEASURES)})")
            if p["measure"] not in LOG_MEASURES:
                raise GateInputError(f"metric {name!r}: measure {p['measure']!r} is not one of "
                                     f"{', '.join(LOG_MEASURES)}")
            if p.get("baseline_query") or p.get("baseline_offset") is not None:
                raise GateInputError(f"metric {name!r} reads the access log: its baseline is a number or a "
                                     f"baseline_key, not a query")
            if (p.get("window") or 0) <= 0 or (p.get("min_requests") or 0) < 1:
                raise GateInputError(f"metric {name!r}: window={p.get('window')} must be positive and "
                                     f"min_requests={p.get('min_requests')} at least 1")
        elif not p.get("query"):
            raise GateInputError(f"metric {name!r} has no query (or give source: access_log and a measure)")
        if p.get("tolerance") is not None and not source and require_baseline:
            raise GateInputError(f"metric {name!r} has a tolerance but no baseline "
                                 f"(give baseline, baseline_key, baseline_query or baseline_offset)")
        return cls(name=name, query=p.get("query") or "", source=origin, measure=p.get("measure") or "",
                   window=p.get("window") or 60.0, min_requests=p.get("min_requests") or 20,
                   direction=p.get("direction") or "lower", limit=p.get("limit"),
                   tolerance=p.get("tolerance"), noise_floor=p.get("noise_floor") or 0.0, baseline=baseline,
                   baseline_query=p.get("baseline_query"), baseline_offset=p.get("baseline_offset"),
                   baseline_at=p.get("baseline_at"),
                   no_data=p.get("no_data") or "fail", critical=p.get("critical", True) is not False,
                   weight=p.get("weight") or 1.0, unit=p.get("unit") or "", baseline_source=source,
                   staging_comparison=p.get("staging_comparison") or staging_comparison,
                   live_worse=bool(p.get("live_worse")) or judged_worse(live_judge or [], p.get("judge_metric")))

    def limit_ok(self, value: float) -> bool:
        lower = self.direction == "lower"
        return self.limit is None or not (value > self.limit if lower else value < self.limit)

    def worst(self, values: list[float]) -> float:
        return max(values) if self.direction == "lower" else min(values)

    def judge(self, value: float, baseline: float | None,
              policy: str | None = None) -> tuple[str, str | None, float | None]:
        """(status, reason, relative change towards worse) for one measured value."""
        bad = "fail" if self.critical else "warn"
        policy = policy or self.staging_comparison
        lower = self.direction == "lower"
        if self.limit is not None and (value > self.limit if lower else value < self.limit):
            return bad, f"{fmt(value, self.unit)} is {'above' if lower else 'below'} the limit " \
                        f"{fmt(self.limit, self.unit)}", None
        if baseline is None or self.tolerance is None:
            return "pass", None, None
        worse_by = (value - baseline) if lower else (baseline - value)
        delta = worse_by / abs(baseline) if baseline else (math.inf if worse_by > 0 else 0.0)
        if worse_by > self.noise_floor and (baseline == 0 or worse_by > self.tolerance * abs(baseline)):
            change = "from zero" if baseline == 0 else f"{delta * 100:.1f}% worse"
            why = f"{fmt(value, self.unit)} is {change} than the baseline {fmt(baseline, self.unit)} " \
                  f"(tolerance {self.tolerance * 100:g}%, noise floor {fmt(self.noise_floor, self.unit)})"
            if policy == "warn":
                return "warn", f"DEGRADED: {why}; consider rollback if critical", delta
            if policy == "blocking" and not self.live_worse:
                return "warn", f"DEGRADED: {why}; the live judge did not find the new colour worse than the " \
                               f"old one, so no rollback", delta
            if policy == "blocking":
                return bad, f"{why}, and the live judge found the new colour worse than the old one", delta
            return bad, why, delta
        return "pass", None, delta


def judged_worse(steps: list[dict[str, Any]], judge_metric: str | None) -> bool:
    """Whether any canary step found the new colour significantly worse on that metric."""
    return bool(judge_metric) and any(m.get("name") == judge_metric and m.get("worse")
                                      for st in steps for m in st.get("metrics") or [])


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "none"
    if not math.isfinite(value):
        return "+Inf" if value > 0 else ("-Inf" if value < 0 else "NaN")
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.3f} s"
    return f"{value:.6g}{(' ' + unit) if unit else ''}"


@dataclass
class Measurement:
    at: float
    status: str                       # pass, warn, fail, nodata, error
    value: float | None = None
    baseline: float | None = None
    delta: float | None = None
    reason: str | None = None
    series: int = 0
    over_baseline: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), "status": self.status, "value": finite(self.value),
                "baseline": finite(self.baseline), "delta": finite(self.delta), "series": self.series,
                "reason": self.reason}


def finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _values(client: PrometheusClient, query: str, at: float) -> tuple[list[float], int]:
    samples = client.instant(query, at)
    return [s.value for s in samples if not math.isnan(s.value)], len(samples)


def measure_log(log: LogMeasures | None, metric: Metric, at: float) -> Measurement:
    """One measurement of a metric read from the access log: the window that ends at `at`."""
    if log is None:
        return Measurement(at, "error", reason="the metric reads the access log, but no access_log was given")
    try:
        value, n, why = log.measure(metric.measure, at - metric.window, at, metric.min_requests)
    except JudgeInputError as exc:
        return Measurement(at, "error", reason=str(exc))
    if value is None:
        return Measurement(at, "nodata", reason=f"no data: {why}", series=n)
    status, reason, delta = metric.judge(value, metric.baseline)
    over = metric.judge(value, metric.baseline, "fail")[0] != "pass" and metric.limit_ok(value)
    return Measurement(at, status, value, metric.baseline, delta, reason, n, over)


def measure(client: PrometheusClient, metric: Metric, at: float, log: LogMeasures | None = None) -> Measurement:
    if metric.source == "access_log":
        return measure_log(log, metric, at)
    try:
        values, n = _values(client, metric.query, at)
    except PrometheusError as exc:
        return Measurement(at, "error", reason=str(exc))
    if not values:
        why = "the query returned no series" if n == 0 else f"all {n} series are NaN (no traffic?)"
        return Measurement(at, "nodata", reason=f"no data: {why}", series=n)
    value = metric.worst(values)
    baseline, note = metric.baseline, None
    if metric.baseline_query or metric.baseline_offset is not None:
        query = metric.baseline_query or metric.query
        when = metric.baseline_at if metric.baseline_at is not None else at - (metric.baseline_offset or 0.0)
        try:
            base_values, _ = _values(client, query, when)
            baseline = metric.worst(base_values) if base_values else None
            if baseline is None:
                note = "baseline query returned no data; judged on the limit only"
        except PrometheusError as exc:
            note = f"baseline query failed ({exc}); judged on the limit only"
    status, reason, delta = metric.judge(value, baseline)
    over = metric.judge(value, baseline, "fail")[0] != "pass" and metric.limit_ok(value)
    if note and status == "pass":
        reason = note
    elif note:
        reason = f"{reason}; {note}"
    return Measurement(at, status, value, baseline, delta, reason, n, over)


@dataclass
class MetricResult:
    metric: Metric
    measurements: list[Measurement] = field(default_factory=list)
    status: str = "inconclusive"
    effective: str = "inconclusive"
    reason: str | None = None

    def failed_measurements(self) -> int:
        return sum(1 for x in self.measurements
                   if x.status == "fail" or (x.status == "nodata" and self.metric.no_data == "fail"))

    def decided(self, failure_limit: int, consecutive_error_limit: int) -> bool:
        """A critical metric past its failure or error limit: more rounds cannot save it."""
        return self.metric.critical and (self.failed_measurements() > failure_limit
                                         or longest_run(self.measurements, "error") > consecutive_error_limit)

    def settle(self, failure_limit: int, consecutive_error_limit: int) -> None:
        m = self.metric
        ms = self.measurements
        nodata_outcome = m.no_data               # fail, pass or inconclusive
        fails = self.failed_measurements()
        errors_run = longest_run(ms, "error")
        valued = [x for x in ms if x.status in ("pass", "warn", "fail")]
        last = ms[-1] if ms else None
        if fails > failure_limit:
            worst = next((x for x in reversed(ms) if x.status == "fail"), None)
            nodata_only = worst is None
            self.status = "nodata" if nodata_only else "fail"
            src = worst or next(x for x in reversed(ms) if x.status == "nodata")
            self.reason = f"{src.reason} ({fails} of {len(ms)} measurements failed, limit {failure_limit})" \
                if len(ms) > 1 else src.reason
        elif errors_run > consecutive_error_limit or (ms and all(x.status == "error" for x in ms)):
            self.status = "inconclusive"
            err = next(x for x in reversed(ms) if x.status == "error")
            self.reason = f"{err.reason} ({errors_run} consecutive errors)" if len(ms) > 1 else err.reason
        elif not valued:
            # only nodata (policy pass or inconclusive) and perhaps some errors
            self.status = "nodata"
            self.reason = last.reason if last else "not measured"
        elif any(x.status == "warn" for x in valued):
            self.status = "warn"
            self.reason = next(x.reason for x in reversed(valued) if x.status == "warn")
        else:
            self.status = "pass"
            self.reason = next((x.reason for x in reversed(valued) if x.reason), None)
            if fails:
                # failures within the limit are tolerated, and said
                self.reason = f"{fails} of {len(ms)} measurements failed, within the limit {failure_limit}: " \
                              f"{self.reason}"
        # what the verdict counts
        if self.status == "nodata":
            effective = nodata_outcome
        elif self.status in ("pass", "warn", "fail", "inconclusive"):
            effective = self.status
        else:  # pragma: no cover - statuses are closed
            effective = "inconclusive"
        if not m.critical and effective in ("fail", "inconclusive"):
            effective = "warn"
        # only worse than staging, with no limit broken in any measurement: said, not scored down
        if effective == "warn" and (self.reason or "").startswith("DEGRADED") and all(
                x.value is None or m.limit_ok(x.value) for x in ms):
            effective = "degraded"
        self.effective = effective

    @property
    def value(self) -> float | None:
        valued = [x.value for x in self.measurements if x.value is not None]
        return self.metric.worst(valued) if valued else None

    @property
    def baseline(self) -> float | None:
        for x in reversed(self.measurements):
            if x.baseline is not None:
                return x.baseline
        return self.metric.baseline

    def as_dict(self) -> dict[str, Any]:
        m = self.metric
        return {"name": m.name, "status": self.status, "effective": self.effective, "critical": m.critical,
                "weight": m.weight, "direction": m.direction, "unit": m.unit,
                "query": m.query or f"access log: {m.measure} over {m.window:g} s", "source": m.source,
                "value": finite(self.value), "baseline": finite(self.baseline),
                "baseline_source": m.baseline_source, "limit": m.limit, "tolerance": m.tolerance,
                "noise_floor": m.noise_floor, "no_data": m.no_data, "reason": self.reason,
                "measurements": [x.as_dict() for x in self.measurements]}

    def as_check(self) -> dict[str, Any]:
        return {"name": self.metric.name, "status": self.status, "value": finite(self.value),
                "limit": self.metric.limit, "baseline": finite(self.baseline), "reason": self.reason}


def longest_run(ms: list[Measurement], status: str) -> int:
    best = run = 0
    for x in ms:
        run = run + 1 if x.status == status else 0
        best = max(best, run)
    return best


@dataclass
class GateResult:
    metrics: list[MetricResult]
    verdict: str
    score: float
    reason: str
    started: float
    ended: float
    rounds: int
    stopped_early: bool
    staging_only: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for r in self.metrics if r.status == s) for s in STATUSES}
        return {"verdict": self.verdict, "score": round(self.score, 2), "reason": self.reason,
                "metrics": [r.as_dict() for r in self.metrics], "checks": [r.as_check() for r in self.metrics],
                "staging_only": self.staging_only, "measurements_taken": self.rounds,
                "stopped_early": self.stopped_early,
                "started": iso(self.started), "ended": iso(self.ended),
                "elapsed_s": round(self.ended - self.started, 3),
                "summary": {"total": len(self.metrics), **counts}}


def decide(results: list[MetricResult], pass_score: float, warn_score: float) -> tuple[str, float, str]:
    total_weight = sum(r.metric.weight for r in results)
    score = 100.0 * sum(r.metric.weight * POINTS[r.effective] for r in results) / total_weight
    failed = [r for r in results if r.metric.critical and r.effective == "fail"]
    if failed:
        return "fail", score, "; ".join(f"{r.metric.name}: {r.reason}" for r in failed)
    unsure = [r for r in results if r.metric.critical and r.effective == "inconclusive"]
    if unsure:
        return "inconclusive", score, "; ".join(f"{r.metric.name}: {r.reason}" for r in unsure)
    if score < warn_score:
        return "fail", score, f"score {score:.1f} is below {warn_score:g}"
    warned = [r for r in results if r.effective in ("warn", "degraded")]
    if warned or score < pass_score:
        detail = "; ".join(f"{r.metric.name}: {r.reason}" for r in warned)
        return "warn", score, detail or f"score {score:.1f} is below {pass_score:g}"
    return "pass", score, f"all {len(results)} metrics pass"


def run_gate(client: PrometheusClient, metrics: list[Metric], count: int = 1, interval: float = 0.0,
             failure_limit: int = 0, consecutive_error_limit: int = 4, at: float | None = None,
             pass_score: float = 90.0, warn_score: float = 75.0, concurrency: int = 10,
             sleep: Any = time.sleep, log: LogMeasures | None = None) -> GateResult:
    """Measure every metric `count` times, `interval` seconds apart, and decide.

    With `at`, the rounds are evaluated at fixed times ending at `at` (analysis after the
    fact, no waiting); without it, at the current time, waiting between rounds. Measuring
    stops early once a critical metric has failed beyond its limit: more rounds cannot
    change that verdict, and a rollback should not wait for them.
    """
    results = [MetricResult(m) for m in metrics]
    started = time.time()
    windows = [m.window for m in metrics if m.source == "access_log"]
    if log is not None and windows:
        first = at - (count - 1) * interval if at is not None else started
        log.start_at(first - max(windows))
    rounds = 0
    stopped_early = False
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(metrics)))) as pool:
        for i in range(count):
            if i and at is None and interval > 0:
                sleep(interval)
            when = at - (count - 1 - i) * interval if at is not None else time.time()
            measured = pool.map(measure, [client] * len(metrics), metrics, [when] * len(metrics),
                                [log] * len(metrics))
            for res, measurement in zip(results, measured, strict=True):
                res.measurements.append(measurement)
            rounds += 1
            if i < count - 1 and any(r.decided(failure_limit, consecutive_error_limit) for r in results):
                stopped_early = True
                break
    for res in results:
        res.settle(failure_limit, consecutive_error_limit)
    verdict, score, reason = decide(results, pass_score, warn_score)
    out = GateResult(results, verdict, score, reason, started, time.time(), rounds, stopped_early)
    out.staging_only = staging_only_verdict(results, failure_limit, consecutive_error_limit, pass_score, warn_score)
    return out


def staging_only_verdict(results: list[MetricResult], failure_limit: int, consecutive_error_limit: int,
                         pass_score: float, warn_score: float) -> dict[str, Any]:
    """The verdict of the same measurements had every baseline exceedance failed its metric:
    the gate as it was before the live judge (kept to compare the two, never to decide)."""
    shadow = []
    for r in results:
        ms = [replace(x, status="fail" if r.metric.critical else "warn",
                      reason=(x.reason or "").removeprefix("DEGRADED: ")) if x.over_baseline else x
              for x in r.measurements]
        sr = MetricResult(replace(r.metric, staging_comparison="fail"), ms)
        sr.settle(failure_limit, consecutive_error_limit)
        shadow.append(sr)
    verdict, score, reason = decide(shadow, pass_score, warn_score)
    return {"verdict": verdict, "score": round(score, 2), "reason": reason}
