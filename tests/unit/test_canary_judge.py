"""The canary judge's statistics and its reading of nginx's JSON access log.

Each test writes an access log as nginx writes it (one JSON object a line, the sandbox's
`deploy_json` format) and judges a step whose window is already over, so the judge decides
at its first look.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from modules_harness import run_module  # also puts plugins/module_utils on the import path

from ansible.module_utils.erni_judge import (  # isort: skip
    AccessLogSource,
    JudgeInputError,
    Sample,
    Settings,
    Step,
    compare_errors,
    compare_latency,
    histogram_points,
    judge_step,
    parse_steps,
)

BLUE, GREEN = "127.0.0.1:18001", "127.0.0.1:18002"


def line(t: float, addr: str, status: int, secs: float, uri: str = "/") -> str:
    return json.dumps({"msec": f"{t:.3f}", "request_uri": uri, "status": str(status), "request_time": f"{secs:.3f}",
                       "upstream_addr": addr, "upstream_status": str(status),
                       "upstream_response_time": f"{secs:.3f}"})


def traffic(path: Path, start: float, seconds: float, rate: float, weight: float, *, canary_extra: float = 0.0,
            canary_errors: float = 0.0, seed: int = 7) -> None:
    """Requests at `rate`/s for `seconds`, `weight` % of them to green (the canary)."""
    rng = random.Random(seed)
    lines = []
    n = int(rate * seconds)
    for i in range(n):
        t = start + i / rate
        canary = rng.random() < weight / 100
        secs = rng.lognormvariate(-5.3, 0.35)          # about 5 ms, as the sandbox app answers
        status = 200
        if canary:
            secs += canary_extra
            if rng.random() < canary_errors:
                status = 500
        lines.append(line(t, GREEN if canary else BLUE, status, secs))
        if i % 7 == 0:                                  # health checks are never judged
            lines.append(line(t, GREEN if canary else BLUE, 200, 0.5, "/health"))
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def reader(path: Path, since: float, exclude: str = "^/health") -> AccessLogSource:
    """The judge's reader of `path`, from `since` on."""
    src = AccessLogSource(str(path), {"blue": BLUE, "green": GREEN}, exclude=exclude)
    src.start_at(since)
    return src


def judge(path: Path, start: float, weight: float, seconds: float = 20, **settings: float) -> dict:
    src = reader(path, start - 60, exclude="^/(health|metrics|api/version)")
    step = Step(weight=weight, canary="green", baseline="blue", start=start, min_seconds=seconds,
                max_seconds=seconds, interval=0.01)
    return judge_step(src, step, Settings(**settings))


def past(seconds: float) -> float:
    return time.time() - seconds - 1


def test_a_good_release_passes_with_its_figures(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(60)
    traffic(log, start, 60, 40, 10)
    r = judge(log, start, 10, seconds=60)
    assert r["verdict"] == "pass", r["reason"]
    err, lat = r["metrics"]
    assert err["test"] == "fisher_exact" and lat["test"] == "mann_whitney_u"
    assert 180 <= err["n_canary"] <= 300 and err["n_baseline"] > 2000
    assert err["errors_canary"] == 0 and err["p_value"] == 1.0
    # same distribution: p is uniform, so 2 % of good releases are "significant"; the effect
    # size (within the allowed increase) is what keeps them from failing
    assert lat["p_value"] is not None and 0 <= lat["p_value"] <= 1
    assert abs(lat["effect"]) < 0.002 < lat["threshold"]
    assert 0.003 < lat["canary"] < 0.008 and r["triggers"] == []


@pytest.mark.parametrize("extra", [0.050, 0.400])
def test_a_slower_release_fails_on_latency(tmp_path: Path, extra: float) -> None:
    log = tmp_path / "access.json"
    start = past(30)
    traffic(log, start, 30, 40, 10, canary_extra=extra)
    r = judge(log, start, 10, seconds=30)
    assert r["verdict"] == "fail"
    lat = next(m for m in r["metrics"] if m["name"] == "latency")
    assert lat["verdict"] == "fail" and lat["p_value"] < 0.02
    assert lat["effect"] == pytest.approx(extra, abs=0.005)
    assert "latency" in r["reason"]


def test_a_release_with_3_percent_errors_fails_on_the_error_ratio(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(120)
    traffic(log, start, 120, 40, 50, canary_errors=0.03, seed=3)
    r = judge(log, start, 50, seconds=120)
    err = r["metrics"][0]
    assert r["verdict"] == "fail" and err["verdict"] == "fail", r["reason"]
    assert err["errors_canary"] > 40 and err["errors_baseline"] == 0 and err["p_value"] < 1e-6
    assert r["triggers"] == []          # 3 % is below the checklist's absolute 5 %


def test_an_error_rate_above_5_percent_rolls_back_without_waiting_for_significance(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(10)
    traffic(log, start, 10, 40, 10, canary_errors=0.3)
    r = judge(log, start, 10, seconds=10, min_samples=1000)
    assert r["verdict"] == "fail"
    assert any("above 5%" in t for t in r["triggers"]), r["triggers"]


def test_a_few_errors_early_in_a_step_are_no_trigger_but_30_percent_is() -> None:
    from ansible.module_utils.erni_judge import triggers

    s = Settings()
    # a release whose users see 3 % errors anyway (as the old colour does): 2 of its first 20
    assert triggers(Sample(total=20, errors=2), None, s, 5, 0) == []
    assert triggers(Sample(total=20, errors=6), None, s, 5, 0)[0].startswith("error rate 30.0% (6 of 20)")
    slow = Sample(latencies=[6.0] * 5 + [0.01] * 15)
    assert "above 5 s (5 of 20 answers slower" in triggers(slow, None, s, 5, 0)[0]


def test_each_look_tests_at_its_share_of_the_confidence(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(30)
    traffic(log, start, 30, 40, 10)
    src = reader(log, start - 1)
    step = Step(weight=10, canary="green", baseline="blue", start=start, min_seconds=30, max_seconds=40, interval=2)
    r = judge_step(src, step, Settings())
    assert r["looks_allowed"] == 20 and r["alpha_per_look"] == pytest.approx(0.001)
    assert all(m["alpha"] == pytest.approx(0.001) for m in r["metrics"] if m["p_value"] is not None)


def test_too_few_requests_is_inconclusive_and_fails_closed(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(5)
    traffic(log, start, 5, 10, 10)
    r = judge(log, start, 10, seconds=5)
    assert r["verdict"] == "inconclusive"
    assert "too few requests" in r["reason"] and "fails closed" in r["reason"]
    assert all(m["verdict"] == "inconclusive" for m in r["metrics"])


def test_a_difference_beyond_the_allowance_that_is_not_significant_is_inconclusive() -> None:
    s = Settings(min_samples=10)
    c = Sample(total=20, errors=1)
    b = Sample(total=200, errors=0)
    m = compare_errors(c, b, s)
    assert m["effect"] == pytest.approx(0.05) and m["p_value"] > 0.02
    assert m["verdict"] == "inconclusive"


def test_a_significant_difference_within_the_allowance_passes_flagged_worse() -> None:
    rng = random.Random(1)
    base = [rng.gauss(0.100, 0.002) for _ in range(2000)]
    canary = [x + 0.004 for x in base[:1000]]        # 4 ms slower: significant, allowed 20 ms
    m = compare_latency(Sample(latencies=canary), Sample(latencies=base), Settings())
    assert m["p_value"] < 1e-6 and m["verdict"] == "pass" and m["worse"] is True


def test_a_request_nginx_passed_on_counts_the_failed_attempt_against_its_upstream(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    t = past(2)
    rec = {"msec": f"{t:.3f}", "request_uri": "/", "status": "200", "upstream_addr": f"{GREEN}, {BLUE}",
           "upstream_status": "502, 200", "upstream_response_time": "0.001, 0.004"}
    log.write_text(json.dumps(rec) + "\nnot json\n", encoding="utf-8")
    src = AccessLogSource(str(log), {"blue": BLUE, "green": GREEN})
    src.start_at(t - 1)
    w = src.window(t - 1, t + 1, ["blue", "green"])
    assert (w["green"].total, w["green"].errors, w["green"].latencies) == (1, 1, [])
    assert (w["blue"].total, w["blue"].errors, w["blue"].latencies) == (1, 0, [0.004])
    assert src.bad_lines == 1


def test_addresses_of_no_colour_are_said_when_there_are_too_few_requests(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(10)
    traffic(log, start, 10, 40, 10)
    text = log.read_text().replace(GREEN, "10.0.0.7:8080")      # nginx logged another address
    log.write_text(text + json.dumps({"msec": f"{start + 1:.3f}", "request_uri": "/ws/socket.io", "status": "101",
                                      "upstream_addr": BLUE, "upstream_status": "101",
                                      "upstream_response_time": "300.0"}) + "\n")
    r = judge(log, start, 10, seconds=10)
    assert r["verdict"] == "inconclusive"
    assert "10.0.0.7:8080" in r["metrics"][0]["reason"] and "check upstreams" in r["metrics"][0]["reason"]
    assert r["metrics"][1]["n_baseline"] < 400        # the websocket's 300 s is no answer time


def test_the_window_start_is_found_however_far_back_it_is(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(200)
    traffic(log, start, 200, 100, 50)                 # about 3 MB of lines
    src = AccessLogSource(str(log), {"blue": BLUE, "green": GREEN}, exclude="^/health")
    src.start_at(start + 1, backscan_bytes=4096)          # the reader must look further back itself
    w = src.window(start + 1, start + 200, ["blue", "green"])
    assert sum(x.total for x in w.values()) == pytest.approx(19900, abs=2)


def test_the_last_step_reads_the_old_colour_in_the_window_before_it(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    before, switch = past(60), past(30)
    traffic(log, before, 30, 40, 0)                            # all on blue
    traffic(log, switch, 30, 40, 100, canary_extra=0.2)        # all on green, slower
    src = reader(log, before)
    step = Step(weight=100, canary="green", baseline="blue", start=switch, min_seconds=30, max_seconds=30,
                interval=0.01, baseline_start=before, baseline_end=switch)
    r = judge_step(src, step, Settings())
    assert r["baseline_window"] == "adjacent"
    assert r["metrics"][1]["n_baseline"] > 1000 and r["verdict"] == "fail"


def test_the_log_is_read_on_from_where_it_was_left(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(10)
    traffic(log, start, 5, 10, 50)
    src = reader(log, start - 1)
    first = sum(s.total for s in src.window(start - 1, start + 20, ["blue", "green"]).values())
    traffic(log, start + 5, 5, 10, 50, seed=9)
    both = sum(s.total for s in src.window(start - 1, start + 20, ["blue", "green"]).values())
    assert (first, both) == (50, 100)


def test_histogram_buckets_become_one_point_per_observation() -> None:
    pts = histogram_points([(0.005, 3), (0.01, 5), (0.025, 5), (float("inf"), 6)])
    assert pts == pytest.approx([0.005 / 6, 0.0025, 0.005 * 5 / 6, 0.00625, 0.00875, 0.05])


@pytest.mark.parametrize("raw, words", [
    ([], "non-empty list"), ("10,100", "non-empty list"), ([0, 100], "outside (0, 100]"),
    ([10, 150], "outside (0, 100]"), ([50, 10, 100], "not larger"), ([10, 50], "must end in 100"),
    (["x", 100], "is not a number"), ([True, 100], "is not a number"), ([float("nan"), 100], "outside"),
])
def test_bad_steps_are_refused_naming_the_variable(raw: object, words: str) -> None:
    with pytest.raises(JudgeInputError, match="canary_steps") as exc:
        parse_steps(raw)
    assert words in str(exc.value)


def test_good_steps_parse() -> None:
    assert parse_steps([10, 50, 100]) == [10.0, 50.0, 100.0]
    assert parse_steps(["2.5", 100]) == [2.5, 100.0]
    assert parse_steps([100]) == [100.0]


def test_settings_out_of_range_are_named() -> None:
    with pytest.raises(JudgeInputError, match=r"confidence=1\.5"):
        Settings(confidence=1.5).check()
    with pytest.raises(JudgeInputError, match="latency_floor"):
        Settings(latency_floor=-1).check()


def test_the_module_judges_a_step_and_returns_checks(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    start = past(20)
    traffic(log, start, 20, 40, 10, canary_extra=0.4)
    r = run_module("canary_judge", {"access_log": str(log), "upstreams": {"blue": BLUE, "green": GREEN},
                                    "exclude": "^/health", "canary": "green", "baseline": "blue", "weight": 10,
                                    "start": start, "step_seconds": 20, "max_seconds": 20, "interval": 0.1})
    assert r["failed"] and r["verdict"] == "fail"
    assert "green at 10% against blue: fail" in r["msg"]
    names = {c["name"]: c["status"] for c in r["checks"]}
    assert names["latency at 10%"] == "fail" and "error_ratio at 10%" in names
    assert r["judge_seconds"] > 0


def test_the_module_refuses_bad_steps_before_reading_anything() -> None:
    r = run_module("canary_judge", {"access_log": "/nonexistent", "upstreams": {"blue": BLUE, "green": GREEN},
                                    "canary": "green", "baseline": "blue", "weight": 100, "validate_only": True,
                                    "steps": [10, 5, 100]})
    assert r["failed"] and "canary_steps[1]=5" in r["msg"]
    r = run_module("canary_judge", {"access_log": "/x", "upstreams": {"blue": BLUE}, "canary": "green",
                                    "baseline": "blue", "weight": 10, "validate_only": True})
    assert r["failed"] and "colour 'green' is not in upstreams" in r["msg"]
