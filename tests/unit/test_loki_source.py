"""The access-log source through Loki's query API: the same lines judged the same way as from
the file, page by page, and a Loki that refuses is named with its answer.

Loki here is tests/lokiapi.py, an HTTP double of /loki/api/v1/query_range (Loki cannot be
installed on this machine); the modules talk to it over HTTP with requests, as to a real one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lokiapi import LokiDouble
from modules_harness import run_module

from ansible.module_utils.erni_accesslog import JudgeInputError, LokiSource  # isort: skip

UPSTREAMS = {"blue": "10.0.3.7:8080", "green": "10.0.3.8:8080"}
# an hour ago: Loki is read up to now
START = float(int(time.time()) - 3600)
NGINX = {"job": "fluent-bit", "service": "nginx", "container_name": "erni-ki-nginx-1"}


def lines(start: float, seconds: int, per_second: int, green_error_every: int = 0) -> list[tuple[float, str]]:
    out = []
    n = 0
    for s in range(seconds):
        for k in range(per_second):
            t = start + s + k / per_second
            n += 1
            colour = "green" if n % 10 == 0 else "blue"
            bad = colour == "green" and green_error_every and (n // 10) % green_error_every == 0
            status = "502" if bad else "200"
            out.append((t, json.dumps({"msec": f"{t:.3f}", "request_uri": f"/api/v1/chats?n={n}", "status": status,
                                       "upstream_addr": UPSTREAMS[colour], "upstream_status": status,
                                       "upstream_response_time": f"{0.004 + (n % 7) / 1000:.3f}"})))
    return out


@pytest.fixture
def loki() -> Iterator[LokiDouble]:
    double = LokiDouble(tenant="erni-ki")
    yield double
    double.close()


def judge(source: dict[str, str], start: float, end: float) -> dict:
    return run_module("canary_judge", {**source, "upstreams": UPSTREAMS, "canary": "green", "baseline": "blue",
                                       "weight": 10, "start": start, "end": end, "step_seconds": 1,
                                       "max_seconds": 1, "interval": 0.1, "min_samples": 20})


def test_the_judge_gives_the_same_verdict_and_counts_from_loki_as_from_the_file(loki: LokiDouble,
                                                                               tmp_path: Path) -> None:
    start = START
    entries = lines(start, 60, 10, green_error_every=3)
    loki.push(NGINX, entries)
    loki.push({"job": "fluent-bit", "service": "litellm"}, [(start + 5, '{"msec": "1"}')])   # another stream
    log = tmp_path / "access.json"
    log.write_text("".join(line + "\n" for _, line in entries))
    from_file = judge({"access_log": str(log)}, start, start + 60)
    from_loki = judge({"loki_url": loki.url, "loki_tenant": "erni-ki",
                       "loki_query": '{job="fluent-bit",service="nginx"}'}, start, start + 60)
    assert from_file["verdict"] == from_loki["verdict"] == "fail", (from_file.get("msg"), from_loki.get("msg"))
    for a, b in zip(from_file["metrics"], from_loki["metrics"], strict=True):
        assert (a["n_canary"], a["n_baseline"]) == (b["n_canary"], b["n_baseline"])
        assert a["canary"] == b["canary"]
    errors, latency = from_loki["metrics"]
    # 60 requests reached green, 20 failed; only the 40 answers are timed
    assert (errors["n_canary"], errors["n_baseline"], latency["n_canary"]) == (60, 540, 40)
    assert all(q.get("direction") == "forward" for q in loki.queries)


def test_more_lines_than_a_page_are_read_page_by_page(loki: LokiDouble) -> None:
    start = START
    loki.push(NGINX, lines(start, 120, 100))          # 12,000 lines, pages of 5,000
    now = [start + 200]
    src = LokiSource(loki.url, '{service="nginx"}', UPSTREAMS, tenant="erni-ki", clock=lambda: now[0])
    src.start_at(start)
    got = src.window(start, start + 120, ["blue", "green"])
    assert (got["blue"].total, got["green"].total) == (10_800, 1_200)
    assert len(loki.queries) == 3
    # a later read asks only for what came after
    now[0] += 30
    src.read()
    assert len(loki.queries) == 4 and int(loki.queries[-1]["start"]) == int((start + 200) * 1e9)


def test_the_gate_reads_its_error_ratio_from_loki(loki: LokiDouble) -> None:
    start = START
    loki.push(NGINX, lines(start, 60, 10, green_error_every=3))
    res = run_module("prometheus_gate", {
        "prometheus_url": "http://127.0.0.1:9", "time": start + 60, "loki_url": loki.url, "loki_tenant": "erni-ki",
        "log_upstreams": UPSTREAMS, "log_side": "green", "fail_on": [],
        "metrics": [{"name": "error_rate", "source": "access_log", "measure": "error_ratio", "window": 60,
                     "limit": 0.05, "unit": "ratio"}]})
    assert not res.get("failed"), res.get("msg")
    assert res["metrics"][0]["value"] == pytest.approx(20 / 60)
    assert res["verdict"] == "fail"


def test_a_loki_that_wants_a_tenant_is_named_with_its_answer(loki: LokiDouble) -> None:
    res = judge({"loki_url": loki.url}, START, START + 60)
    assert res.get("failed")
    assert f"Loki at {loki.url} answered 401" in res["msg"] and "no org id" in res["msg"], res["msg"]


def test_a_bad_query_and_a_bad_url_are_refused_naming_them(loki: LokiDouble) -> None:
    res = judge({"loki_url": loki.url, "loki_tenant": "erni-ki", "loki_query": '{service=~"ngi.*"}'},
                START, START + 60)
    assert res.get("failed") and "answered 400" in res["msg"] and "only = matchers" in res["msg"], res["msg"]
    with pytest.raises(JudgeInputError, match="loki_url 'loki:3100' is not an http"):
        LokiSource("loki:3100", '{service="nginx"}', UPSTREAMS)
    with pytest.raises(JudgeInputError, match="is not a LogQL stream selector"):
        LokiSource(loki.url, 'service="nginx"', UPSTREAMS)


def test_an_unreachable_loki_is_never_a_pass() -> None:
    res = judge({"loki_url": "http://127.0.0.1:9", "loki_tenant": "erni-ki"}, START, START + 60)
    assert res.get("failed") and "Loki at http://127.0.0.1:9 cannot be reached" in res["msg"], res["msg"]
