"""Canary steps and the live judge on the sandbox's production path.

The sandbox's steps are [10, 100]: the switch gives the new colour 10 % of traffic through
nginx's upstream weights, the judge compares it with the old colour over the same seconds from
nginx's JSON access log, then all traffic moves and the last step is judged against the old
colour's window just before. Clients send their own load through nginx, so what users saw of
a bad release is counted from their side.
"""

from __future__ import annotations

import json
import time

import pytest

from helpers import CA_FILE, PROD_URL, SANDBOX_DIR, build_release, serving_version
from loadgen import Load
from modules_harness import run_module

pytestmark = pytest.mark.slow

UPSTREAMS = {"blue": "127.0.0.1:18001", "green": "127.0.0.1:18002"}


def steps(report: dict) -> list[dict]:
    return (report.get("published", {}).get("canary") or {}).get("steps") or []


def test_a_release_slow_for_its_first_seconds_is_warmed_up_and_judged_good(production) -> None:
    build_release("6.2.0")
    build_release("6.3.0", "WARMUP_LATENCY_MS=300", "WARMUP_SECONDS=15")
    run, _ = production("6.2.0")
    assert run.rc == 0, run.output[-4000:]
    run, report = production("6.3.0")
    assert run.rc == 0, run.output[-4000:]
    assert report["outcome"] == "deployed" and serving_version() == "6.3.0"
    warm = next(c for p in report["phases"] for c in p["checks"] if c["name"].startswith("warm-up"))
    # the warm-up went on until the page was as fast as on the serving colour: past the 15 s
    assert "settled" in warm["detail"] and "not settled" not in warm["detail"], warm
    assert float(warm["detail"].split(" requests in ")[1].split(" s")[0]) >= 10, warm["detail"]
    judged = steps(report)
    assert [s["weight"] for s in judged] == [10.0, 100.0]
    assert all(s["verdict"] == "pass" for s in judged), judged
    assert judged[0]["baseline_window"] == "same" and judged[1]["baseline_window"] == "adjacent"
    for s in judged:
        err, lat = s["metrics"]
        assert err["n_canary"] >= 30 and err["n_baseline"] >= 30
        assert lat["test"] == "mann_whitney_u" and lat["p_value"] is not None and lat["statistic"] is not None
        assert lat["canary"] < 0.05, lat     # the users' page, not the 300 ms of the cold process
    text = open(report["directory"] + "/report.md", encoding="utf-8").read()
    assert "## Canary steps (the new colour against the old one, same window)" in text
    assert "| 10%, " in text and "mann_whitney_u" in text


def test_the_access_log_and_prometheus_agree_on_the_same_window(production) -> None:
    """Both sources judge the same traffic: the last step's window of a deploy."""
    build_release("6.2.1")
    build_release("6.2.2")
    run, _ = production("6.2.1")
    assert run.rc == 0, run.output[-4000:]
    run, report = production("6.2.2", "-e", "canary_step_seconds=20")   # four scrapes in the 10 % step
    assert run.rc == 0, run.output[-4000:]
    step = steps(report)[0]                        # 10 %: both colours serve in it
    state = json.loads((SANDBOX_DIR / "deploy" / "production" / "state.json").read_text())
    new, old = state["colour"], state["previous_colour"]
    # the window closed; Prometheus has it once the next scrape (5 s) is in
    time.sleep(max(0.0, step["end"] + 11 - time.time()))
    common = {"canary": new, "baseline": old, "weight": 10, "start": step["start"], "end": step["end"],
              "step_seconds": 1,
              "max_seconds": 1, "interval": 0.1, "min_samples": 10}
    log = run_module("canary_judge", {**common, "access_log": str(SANDBOX_DIR / "logs" / "nginx-access.json"),
                                      "upstreams": UPSTREAMS, "exclude": "^/(health|metrics|api/version)"})
    sel = 'job="erni-ki",environment="production",colour="{}"'
    prom = run_module("canary_judge", {**common, "source": "prometheus", "prometheus_url": "http://127.0.0.1:9090",
                                       "selectors": {new: sel.format(new), old: sel.format(old)},
                                       "extra_matchers": 'route!~"/health.*|/metrics|/api/version"'})
    assert not log.get("failed") and not prom.get("failed"), (log.get("msg"), prom.get("msg"))
    assert log["verdict"] == prom["verdict"] == "pass"
    for a, b in zip(log["metrics"], prom["metrics"], strict=True):
        # Prometheus extrapolates increase() over a window of a few scrapes: counts agree within a third
        for side in ("n_canary", "n_baseline"):
            assert abs(a[side] - b[side]) <= max(10, a[side] / 3), (a["name"], side, a[side], b[side])

    # the gate's figures of the old colour over that window: from the log and from Prometheus
    secs = round(step["end"] - step["start"])
    where = sel.format(old) + ',route!~"/health.*|/metrics|/api/version"'
    gate = run_module("prometheus_gate", {
        "prometheus_url": "http://127.0.0.1:9090", "time": step["end"], "fail_on": [],
        "access_log": str(SANDBOX_DIR / "logs" / "nginx-access.json"), "log_upstreams": UPSTREAMS,
        "log_side": old, "log_exclude": "^/(health|metrics|api/version)",
        "metrics": [
            {"name": "log_requests", "source": "access_log", "measure": "requests", "window": secs},
            {"name": "log_errors", "source": "access_log", "measure": "error_ratio", "window": secs},
            {"name": "log_p95", "source": "access_log", "measure": "latency_p95", "window": secs},
            {"name": "prom_requests", "query": f"sum(increase(http_requests_total{{{where}}}[{secs}s]))"},
            {"name": "prom_errors",
             "query": f'(sum(increase(http_requests_total{{{where},status=~"5.."}}[{secs}s])) or vector(0))'
                      f" / sum(increase(http_requests_total{{{where}}}[{secs}s]))"},
            {"name": "prom_p95", "query": "histogram_quantile(0.95, sum by (le) (increase("
                                          f"http_request_duration_seconds_bucket{{{where}}}[{secs}s])))"}]})
    assert not gate.get("failed"), gate.get("msg")
    v = {m["name"]: m["value"] for m in gate["metrics"]}
    assert v["log_requests"] >= 50 and abs(v["log_requests"] - v["prom_requests"]) <= max(10, v["log_requests"] / 3), v
    assert v["log_errors"] == v["prom_errors"] == 0, v
    # a histogram knows a latency to its bucket: the two p95s fall in the same bucket or the next
    bounds = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
    bucket = {k: sum(1 for b in bounds if v[k] > b) for k in ("log_p95", "prom_p95")}
    assert abs(bucket["log_p95"] - bucket["prom_p95"]) <= 1, v


def test_a_slow_release_is_caught_at_10_percent_and_most_clients_never_see_it(production) -> None:
    build_release("6.4.0")
    build_release("6.4.4", "EXTRA_LATENCY_MS=400")
    run, _ = production("6.4.0")
    assert run.rc == 0, run.output[-4000:]
    with Load(PROD_URL + "/", rate=20, max_seconds=240, verify=CA_FILE) as load:
        run, report = production("6.4.4")
    assert run.rc != 0
    assert report["outcome"] == "rolled_back" and serving_version() == "6.4.0"
    judged = steps(report)
    assert judged and judged[-1]["weight"] == 10.0 and judged[-1]["verdict"] == "fail", judged
    lat = judged[-1]["metrics"][1]
    assert lat["verdict"] == "fail" and lat["p_value"] < 0.02 and lat["effect"] > 0.3
    slow = [s for s in load.samples if s.seconds > 0.35]
    assert slow, "no client met the slow release: the test proves nothing"
    during = [s for s in load.samples if slow[0].t <= s.t <= slow[-1].t]
    # a tenth of the traffic went to the new colour; a straight switch would have sent it all
    assert len(slow) <= 0.3 * len(during), (len(slow), len(during))
    assert report["rollback"]["triggered"] is True
    state = json.loads((SANDBOX_DIR / "deploy" / "production" / "state.json").read_text())
    assert state["release"] == "6.4.0"
    upstream = (SANDBOX_DIR / "nginx" / "upstreams" / "production.conf").read_text()
    assert "weight=" not in upstream and "6.4.0" in upstream
