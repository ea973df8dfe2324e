"""warmup against real HTTP servers on 127.0.0.1: cold then warm, always warm, never settling, nothing there."""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import cast

import pytest

from helpers import free_port
from modules_harness import run_module
from servers import LocalServer, Route

# the module's logic, run directly; importable once modules_harness put module_utils on the path
lib = importlib.import_module("ansible.module_utils.erni_warmup")
warm_up = lib.warm_up

TOKEN = "sk-warmup-token-that-must-not-leak-0123456789"
# Client and server share one interpreter here: a "fast" answer costs ~1 ms of CPU under one
# GIL, so its latency grows with the requests in flight. Two at a time keeps it well under 10 ms.
CONCURRENCY = 2
PAGE = (200, {"Content-Type": "text/html"}, b"<html>ERNI-KI</html>")


def cold_for(seconds: float, delay: float) -> Route:
    """Answers after `delay` until `seconds` after its first request, then at once."""
    first: list[float] = []
    lock = threading.Lock()

    def route(_h: BaseHTTPRequestHandler, _b: bytes) -> tuple[int, dict[str, str], bytes]:
        with lock:
            if not first:
                first.append(time.monotonic())
        if time.monotonic() - first[0] < seconds:
            time.sleep(delay)
        return PAGE
    return route


def alternating(batch: int, slow: float) -> Route:
    """Batch by batch (the server counts the requests): fast, then `slow`, then fast again..."""
    count = [0]
    lock = threading.Lock()

    def route(_h: BaseHTTPRequestHandler, _b: bytes) -> tuple[int, dict[str, str], bytes]:
        with lock:
            n = count[0]
            count[0] += 1
        time.sleep(slow if (n // batch) % 2 else 0.001)
        return PAGE
    return route


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer(routes={
        "/": lambda h, b: PAGE,
        "/api/version": lambda h, b: (200, {"Content-Type": "application/json"}, b'{"version": "1.1.0"}'),
        "/cold": cold_for(1.5, 0.05),
        "/long-cold": cold_for(2.5, 0.05),
        "/flaky": alternating(10, 0.06),
    })
    # headers and body are two writes: without this, Nagle's algorithm holds the body back until
    # the client's delayed ACK (~40 ms), and a fast server would look slow (the reference app
    # sets the same)
    cast(type[BaseHTTPRequestHandler], srv.httpd.RequestHandlerClass).disable_nagle_algorithm = True
    yield srv
    srv.close()


def test_a_cold_start_settles_after_the_slow_phase(server: LocalServer) -> None:
    # 50 ms answers, two at a time: 1.5 s is about 60 requests, so the minimum (100) outlasts
    # the cold phase; the slow batches agree with each other, and would count as settled.
    res = warm_up(server.url, paths=["/cold"], requests=100, batch=10, concurrency=CONCURRENCY, max_seconds=10)
    assert res["settled"] is True, res["msg"]
    assert res["first_median_ms"] >= 50
    assert res["last_median_ms"] < 10
    assert res["seconds"] >= 1.5
    assert res["requests"] >= 100 and res["requests"] == sum(b["n"] for b in res["batches"])
    assert res["statuses"] == {"200": res["requests"]}
    assert res["per_path"]["/cold"]["n"] == res["requests"]
    assert all(b["failed"] == 0 and b["p95_ms"] >= b["median_ms"] for b in res["batches"])
    assert res["warnings"] == []
    assert res["msg"].startswith(f"warm-up: {res['requests']} requests in ")
    assert res["msg"].endswith("in the last; settled")


def test_with_the_serving_colour_as_reference_a_long_cold_phase_is_not_taken_for_warm(server: LocalServer) -> None:
    # 2.5 s of 50 ms answers outlast the 20-request minimum: alone, two slow batches agree
    alone = warm_up(server.url, paths=["/long-cold"], requests=20, batch=10, concurrency=CONCURRENCY, max_seconds=10)
    assert alone["settled"] is True and alone["last_median_ms"] >= 50
    # the "old colour" is the same server's warm page: settled means as fast as that
    server2 = LocalServer(routes={"/long-cold": lambda h, b: PAGE})
    cast(type[BaseHTTPRequestHandler], server2.httpd.RequestHandlerClass).disable_nagle_algorithm = True
    try:
        cold = LocalServer(routes={"/long-cold": cold_for(2.5, 0.05)})
        cast(type[BaseHTTPRequestHandler], cold.httpd.RequestHandlerClass).disable_nagle_algorithm = True
        try:
            res = warm_up(cold.url, paths=["/long-cold"], requests=20, batch=10, concurrency=CONCURRENCY,
                          max_seconds=10, reference_url=server2.url)
        finally:
            cold.close()
    finally:
        server2.close()
    assert res["settled"] is True, res["msg"]
    assert res["seconds"] >= 2.5 and res["last_median_ms"] < 10
    assert res["reference_median_ms"] is not None and res["reference_median_ms"] < 10
    assert all("reference_median_ms" in b for b in res["batches"])
    assert "(the serving colour: " in res["msg"]


def test_an_always_fast_server_settles_right_after_the_minimum(server: LocalServer) -> None:
    res = warm_up(server.url, paths=["/", "/api/version"], requests=40, batch=10, concurrency=CONCURRENCY)
    assert res["settled"] is True, res["msg"]
    # at least the minimum; a loaded machine's jitter may take a batch or two more to agree
    assert res["requests"] >= 40 and len(res["batches"]) >= 4
    assert res["requests"] == sum(b["n"] for b in res["batches"])
    assert res["per_path"]["/"]["n"] == res["per_path"]["/api/version"]["n"] == res["requests"] // 2
    assert res["last_median_ms"] < 10 and res["seconds"] < 10
    # fewer requests than one batch: two batches are still needed for two medians
    res = warm_up(server.url, requests=1, batch=5, concurrency=CONCURRENCY)
    assert res["settled"] is True and len(res["batches"]) >= 2


def test_a_warmup_that_never_settles_stops_at_max_seconds(server: LocalServer) -> None:
    res = warm_up(server.url, paths=["/flaky"], requests=20, batch=10, concurrency=4, max_seconds=1.2)
    assert res["settled"] is False
    assert 1.0 <= res["seconds"] <= 1.5
    medians = [b["median_ms"] for b in res["batches"]]
    assert medians[0] < 30 and medians[1] >= 60
    assert res["statuses"] == {"200": res["requests"]}  # cut-off requests are no errors
    assert res["msg"].endswith("not settled within max_seconds=1.2")
    assert len(res["warnings"]) == 1
    assert res["warnings"][0].startswith(f"warm-up of {server.url} did not settle within max_seconds=1.2: ")
    assert f"median {medians[0]:.1f} ms in the first batch, {medians[-1]:.1f} ms in the last" in res["warnings"][0]


def test_the_module_warns_when_it_did_not_settle_and_keeps_headers_secret(server: LocalServer) -> None:
    res = run_module("warmup", {"url": server.url, "paths": ["/flaky"], "requests": 20, "batch": 10,
                                "max_seconds": 1, "headers": {"Authorization": f"Bearer {TOKEN}"}})
    assert not res.get("failed"), res
    assert res["changed"] is False and res["settled"] is False
    assert "did not settle within max_seconds=1: median " in str(res["warnings"]), res["warnings"]
    # in one process, Ansible's warnings of earlier modules are still listed: count this one's
    assert str(res["warnings"]).count("did not settle") == 1, res["warnings"]
    assert set(res) >= {"requests", "abandoned", "seconds", "settled", "batches", "first_median_ms",
                        "last_median_ms", "statuses", "per_path", "msg"}
    assert server.requests and all(h.get("Authorization") == f"Bearer {TOKEN}" for _, _, h, _ in server.requests)
    assert TOKEN not in json.dumps(res)


def test_error_answers_are_counted_and_warned_about_not_failed(server: LocalServer) -> None:
    res = warm_up(server.url, paths=["/", "/missing"], requests=20, batch=10, concurrency=CONCURRENCY)
    assert res["settled"] is True
    half = res["requests"] // 2
    assert res["requests"] >= 20 and res["statuses"] == {"200": half, "404": half}
    assert {b["failed"] for b in res["batches"]} == {5}
    assert any(f"{half} of {2 * half} warm-up requests" in w and f"404: {half}" in w for w in res["warnings"])


@pytest.mark.parametrize(("options", "named"), [
    ({"url": "ftp://127.0.0.1:18002"}, "url='ftp://127.0.0.1:18002'"),
    ({"url": "127.0.0.1:18002"}, "url='127.0.0.1:18002'"),
    ({"paths": []}, "paths is empty"),
    ({"paths": ["health"]}, "paths[0]='health'"),
    ({"requests": 0}, "requests=0"),
    ({"batch": -1}, "batch=-1"),
    ({"concurrency": 0}, "concurrency=0"),
    ({"settle_tolerance": -0.1}, "settle_tolerance=-0.1"),
    ({"settle_floor": float("nan")}, "settle_floor=nan"),
    ({"max_seconds": 0}, "max_seconds=0"),
    ({"timeout": -1.0}, "timeout=-1.0"),
    ({"requests": 5000, "batch": 20}, f"more than the {lib.MAX_BATCHES} a warm-up sends"),
])
def test_bad_input_names_the_option(options: dict, named: str) -> None:
    args = {"url": "http://127.0.0.1:1", **options}
    with pytest.raises(lib.WarmupInputError) as exc:
        warm_up(**args)
    assert named in str(exc.value)


def test_the_module_refuses_bad_input_before_sending_anything(server: LocalServer) -> None:
    res = run_module("warmup", {"url": server.url, "requests": 0})
    assert res["failed"] is True and "requests=0 must be a whole number of 1 or more" in res["msg"]
    res = run_module("warmup", {"url": server.url, "max_seconds": -5}, check_mode=True)
    assert res["failed"] is True and "max_seconds=-5.0" in res["msg"]
    assert server.requests == []


def test_nothing_listening_fails_with_the_first_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(lib.WarmupError) as exc:
        warm_up(url, requests=10, batch=5, max_seconds=5)
    assert str(exc.value).startswith(f"warm-up of {url}: not one of 5 requests got an HTTP answer")
    assert "ConnectionError" in str(exc.value)
    res = run_module("warmup", {"url": url, "requests": 10, "batch": 5, "max_seconds": 5})
    assert res["failed"] is True and url in res["msg"] and "first error: ConnectionError" in res["msg"]


def test_check_mode_sends_nothing_and_says_what_it_would_send(server: LocalServer) -> None:
    res = run_module("warmup", {"url": server.url, "paths": ["/", "/api/version"]}, check_mode=True)
    assert res["skipped"] is True and res["changed"] is False
    assert res["msg"] == (f"check mode: would send at least 100 GET requests to {server.url} over /, /api/version, "
                          "in batches of 20, 4 at a time, until the batch medians settle or 60 s have passed")
    assert server.requests == []
