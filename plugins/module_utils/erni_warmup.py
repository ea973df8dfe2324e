# -*- coding: utf-8 -*-
# erni-deploy: warm-up of a freshly started colour (the warmup module's logic).
"""Warm a freshly started colour up before it gets users, and measure how it warmed.

Requests go out in batches, round-robin over the given paths, a few at a time. After each
batch its median latency is taken; the warm-up has settled once at least the minimum
number of requests has been sent and the last two batches' medians agree, path by path (a
slow route among fast ones would hide in a mixed median):

    |m_k - m_(k-1)| <= settle_tolerance * m_(k-1) + settle_floor

It stops when settled, at max_seconds or after MAX_BATCHES batches, whichever comes first,
or as soon as a whole batch gets no HTTP answer. Latency is recorded, never judged; the
only failures are bad options (WarmupInputError) and a warm-up in which not one request
got an HTTP answer (WarmupError).

"Settled" alone means stable, not fast: a cold phase that lasts longer than the minimum number
of requests takes is a plateau too. So, when the colour that serves now is known
(`reference_url`, the old colour), every batch is also sent to it, and the warm-up settles
only once the new colour's last two batch medians, path by path, are within the tolerance of
the old one's
(new <= old * (1 + settle_tolerance) + settle_floor): warm means "as fast as what users get
now". That is a reference for when to stop, not a verdict: a release that stays slower warms
up until max_seconds and is then judged by the canary judge like any other.
"""

from __future__ import annotations

import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.erni_http import _short, make_session

try:
    # aliased: `requests` is also the name of an option (the minimum number of requests)
    import requests as requests_lib

    HAS_REQUESTS = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_REQUESTS = False

MAX_BATCHES = 100


class WarmupInputError(ValueError):
    """An option the warm-up cannot run with; the message names it and its value."""


class WarmupError(RuntimeError):
    """The warm-up ran but not one request got an HTTP answer."""


@dataclass
class Sample:
    path: str
    latency_ms: float
    status: int | None = None    # None: no HTTP answer
    error: str | None = None     # the exception's class name, when there was no answer
    detail: str | None = None    # what went wrong, in words
    abandoned: bool = False      # cut off by max_seconds: not a measurement

    @property
    def key(self) -> str:
        return str(self.status) if self.status is not None else f"error:{self.error}"

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 400


def validate_options(url: str, paths: list[str], requests: int, batch: int, concurrency: int,
                     settle_tolerance: float, settle_floor: float, max_seconds: float,
                     timeout: float) -> None:
    """Raise WarmupInputError naming the first option that cannot be used."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WarmupInputError(f"url={url!r} is not an http(s) URL: give the colour's base URL, "
                               "for example http://127.0.0.1:18002")
    if not paths:
        raise WarmupInputError("paths is empty: give at least one path, for example ['/']")
    for i, path in enumerate(paths):
        if not isinstance(path, str) or not path.startswith("/"):
            raise WarmupInputError(f"paths[{i}]={path!r} must be a path starting with /, for example /api/v1/models")
    for name, count in (("requests", requests), ("batch", batch), ("concurrency", concurrency)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise WarmupInputError(f"{name}={count!r} must be a whole number of 1 or more")
    for name, value in (("settle_tolerance", settle_tolerance), ("settle_floor", settle_floor)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise WarmupInputError(f"{name}={value!r} must be a number of 0 or more")
    for name, value in (("max_seconds", max_seconds), ("timeout", timeout)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise WarmupInputError(f"{name}={value!r} must be a number of seconds above 0")
    needed = math.ceil(requests / batch)
    if needed > MAX_BATCHES:
        raise WarmupInputError(f"requests={requests} takes {needed} batches of batch={batch}, more than the "
                               f"{MAX_BATCHES} a warm-up sends: raise batch to at least "
                               f"{math.ceil(requests / MAX_BATCHES)}")


def describe_plan(url: str, paths: list[str], requests: int, batch: int, concurrency: int,
                  max_seconds: float) -> str:
    """What a warm-up would send, in words (the check-mode answer)."""
    return (f"would send at least {requests} GET requests to {url.rstrip('/')} over {', '.join(paths)}, "
            f"in batches of {batch}, {min(concurrency, batch)} at a time, until the batch medians settle "
            f"or {max_seconds:g} s have passed")


def warm_up(url: str, paths: list[str] | None = None, headers: dict[str, Any] | None = None,
            requests: int = 100, batch: int = 20, concurrency: int = 4, settle_tolerance: float = 0.2,
            settle_floor: float = 0.002, max_seconds: float = 60.0, timeout: float = 5.0,
            verify: bool | str = True, reference_url: str | None = None) -> dict[str, Any]:
    """Run the warm-up; returns the module's result keys (without changed).

    Raises WarmupInputError for bad options and WarmupError when no request got an answer.
    """
    paths = list(paths if paths is not None else ["/"])
    validate_options(url, paths, requests, batch, concurrency, settle_tolerance, settle_floor,
                     max_seconds, timeout)
    base = url.rstrip("/")
    if reference_url:
        validate_options(reference_url, paths, requests, batch, concurrency, settle_tolerance, settle_floor,
                         max_seconds, timeout)
    ref_base = reference_url.rstrip("/") if reference_url else None
    send_headers = {str(k): str(v) for k, v in (headers or {}).items()}
    workers = min(concurrency, batch)
    floor_ms = settle_floor * 1000.0

    session = make_session(verify, pool_size=workers)
    t0 = time.monotonic()
    deadline = t0 + max_seconds

    def one(path: str, target: str = base) -> Sample | None:
        start = time.monotonic()
        remaining = deadline - start
        if remaining <= 0:
            return None  # not sent: the warm-up's time is up
        try:
            resp = session.get(target + path, headers=send_headers, timeout=min(timeout, remaining),
                               allow_redirects=False, verify=session.verify)
            _ = resp.content  # the whole answer, as a user's browser reads it
        except requests_lib.exceptions.RequestException as exc:
            # a timeout shortened to what was left of max_seconds says nothing about the server
            cut = remaining < timeout and isinstance(exc, requests_lib.exceptions.Timeout)
            return Sample(path, _ms(start), error=type(exc).__name__, detail=_short(exc), abandoned=cut)
        return Sample(path, _ms(start), status=resp.status_code)

    samples: list[Sample] = []
    batches: list[dict[str, Any]] = []
    medians: list[float | None] = []
    ref_medians: list[float | None] = []
    by_path: list[dict[str, float]] = []
    ref_by_path: list[dict[str, float]] = []
    settled = False
    stop = ""
    sent = 0
    abandoned = 0
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while True:
                wanted = [paths[(sent + i) % len(paths)] for i in range(batch)]
                done = [s for s in pool.map(one, wanted) if s is not None]
                got = [s for s in done if not s.abandoned]
                abandoned += len(done) - len(got)
                if not got:
                    stop = "time"
                    break
                sent += len(got)
                samples.extend(got)
                answered = [s.latency_ms for s in got if s.status is not None]
                median = round(statistics.median(answered), 2) if answered else None
                medians.append(median)
                by_path.append(_path_medians(got))
                entry: dict[str, Any] = {"n": len(got), "median_ms": median, "p95_ms": _p95(answered),
                                         "failed": sum(1 for s in got if s.failed)}
                if ref_base:
                    ref = [s for s in pool.map(lambda p: one(p, ref_base), wanted)
                           if s is not None and not s.abandoned and s.status is not None]
                    lat = [s.latency_ms for s in ref]
                    ref_medians.append(round(statistics.median(lat), 2) if lat else None)
                    ref_by_path.append(_path_medians(ref))
                    entry["reference_median_ms"] = ref_medians[-1]
                batches.append(entry)
                # each path on its own: one slow route among fast ones would hide in a mixed median
                if sent >= requests and len(by_path) >= 2:
                    if ref_base:
                        ok = all(_close_to(new, old, settle_tolerance, floor_ms)
                                 for new, old in zip(by_path[-2:], ref_by_path[-2:], strict=True))
                    else:
                        ok = _agree(by_path[-2], by_path[-1], settle_tolerance, floor_ms)
                    if ok:
                        settled = True
                        break
                if median is None:
                    stop = "no answer"
                    break
                if time.monotonic() >= deadline:
                    stop = "time"
                    break
                if len(batches) >= MAX_BATCHES:
                    stop = "batches"
                    break
    finally:
        session.close()
    seconds = round(time.monotonic() - t0, 3)

    errors = [s for s in samples if s.status is None]
    if len(errors) == len(samples):
        first = errors[0] if errors else None
        why = (f"{first.error}: {first.detail}" if first else
               f"none of {abandoned} answered within max_seconds={max_seconds:g}")
        raise WarmupError(f"warm-up of {base}: not one of {len(samples)} requests got an HTTP answer; "
                          f"the first error: {why}")

    statuses: dict[str, int] = {}
    for s in samples:
        statuses[s.key] = statuses.get(s.key, 0) + 1
    per_path: dict[str, dict[str, Any]] = {}
    for path in dict.fromkeys(paths):
        mine = [s for s in samples if s.path == path]
        lat = [s.latency_ms for s in mine if s.status is not None]
        per_path[path] = {"n": len(mine), "median_ms": round(statistics.median(lat), 2) if lat else None}

    first_median, last_median = medians[0], medians[-1]
    if settled:
        outcome = "settled"
        warning = None
    else:
        if stop == "no answer":
            outcome = (f"stopped: batch {len(batches)} got no HTTP answer "
                       f"({errors[-1].error}: {errors[-1].detail})")
            why = f", {outcome}"
        else:
            why = f" after {MAX_BATCHES} batches" if stop == "batches" else f" within max_seconds={max_seconds:g}"
            outcome = f"not settled{why}"
        warning = (f"warm-up of {base} did not settle{why}: median {_fmt_ms(first_median)} in the "
                   f"first batch, {_fmt_ms(last_median)} in the last")
    failed = sum(1 for s in samples if s.failed)
    msg = (f"warm-up: {sent} requests in {seconds:.1f} s, median {_fmt_ms(first_median)} in the first batch, "
           f"{_fmt_ms(last_median)} in the last"
           + (f" (the serving colour: {_fmt_ms(ref_medians[-1])})" if ref_medians else "") + f"; {outcome}")
    warnings = [warning] if warning else []
    if failed:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        warnings.append(f"{failed} of {sent} warm-up requests to {base} got no answer or a status of 400 "
                        f"or more ({shown}): they warmed an error path, not the page")
    ref_last = ref_medians[-1] if ref_medians else None
    return {"requests": sent, "abandoned": abandoned, "reference_median_ms": ref_last, "seconds": seconds,
            "settled": settled, "batches": batches,
            "first_median_ms": first_median, "last_median_ms": last_median, "statuses": statuses,
            "per_path": per_path, "msg": msg, "warnings": warnings}


def _path_medians(samples: list[Sample]) -> dict[str, float]:
    lat: dict[str, list[float]] = {}
    for s in samples:
        if s.status is not None:
            lat.setdefault(s.path, []).append(s.latency_ms)
    return {p: statistics.median(v) for p, v in lat.items()}


def _agree(prev: dict[str, float], last: dict[str, float], tol: float, floor_ms: float) -> bool:
    """Every path's median in the last batch within the tolerance of the batch before."""
    return bool(last) and set(prev) == set(last) and \
        all(abs(last[p] - prev[p]) <= tol * prev[p] + floor_ms for p in last)


def _close_to(new: dict[str, float], ref: dict[str, float], tol: float, floor_ms: float) -> bool:
    """Every path's median on the new colour within the tolerance of the serving colour's."""
    return bool(new) and set(new) <= set(ref) and all(new[p] <= ref[p] * (1 + tol) + floor_ms for p in new)


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000.0, 2)


def _p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], 2)


def _fmt_ms(value: float | None) -> str:
    return "no answer" if value is None else f"{value:.1f} ms"
