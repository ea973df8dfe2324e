"""http_probe against real HTTP and HTTPS servers on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from modules_harness import run_module
from servers import LocalServer, json_route, make_ca

TOKEN = "sk-test-token-that-must-not-leak-0123456789"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer(routes={
        "/health": json_route(200, {"status": True}),
        "/api/version": json_route(200, {"version": "1.1.0"}),
        "/secure": json_route(200, {"ok": 1}, headers={
            "Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "DENY"}),
        "/slow": json_route(200, {"ok": 1}, delay=0.3),
        "/broken": json_route(500, {"detail": "boom"}),
        "/text": lambda h, b: (200, {"Content-Type": "text/plain"}, b"plain text"),
        "/leaky": lambda h, b: (200, {}, f"token={TOKEN}".encode()),
    })
    yield srv
    srv.close()


def test_all_checks_pass_and_report_status_and_latency(server: LocalServer) -> None:
    res = run_module("http_probe", {"checks": [
        {"name": "health", "url": server.url + "/health", "json_equals": {"status": True}},
        {"name": "version", "url": server.url + "/api/version", "json_equals": {"version": "1.1.0"}},
    ]})
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert res["summary"] == {"total": 2, "passed": 2, "failed": 0}
    assert [c["name"] for c in res["checks"]] == ["health", "version"]
    for c in res["checks"]:
        assert c["ok"] and c["status"] == 200 and c["reason"] is None and c["attempts"] == 1
        assert 0 < c["latency_ms"] < 1000


def test_a_wrong_status_json_value_or_missing_header_fails_with_the_reason(server: LocalServer) -> None:
    res = run_module("http_probe", {"checks": [
        {"name": "broken", "url": server.url + "/broken"},
        {"name": "wrong version", "url": server.url + "/api/version", "json_equals": {"version": "2.0.0"}},
        {"name": "no csp", "url": server.url + "/secure",
         "response_headers": {"X-Frame-Options": "DENY", "Content-Security-Policy": ""}},
        {"name": "wrong hsts", "url": server.url + "/secure",
         "response_headers": {"Strict-Transport-Security": "max-age=1"}},
        {"name": "not json", "url": server.url + "/text", "json_present": ["status"]},
        {"name": "missing key", "url": server.url + "/health", "json_present": ["data[0].id"]},
    ]})
    assert res["failed"] is True and res["summary"]["passed"] == 0
    reasons = {c["name"]: c["reason"] for c in res["checks"]}
    assert reasons["broken"] == "status 500, expected 200"
    assert reasons["wrong version"] == 'JSON version is "1.1.0", expected "2.0.0"'
    assert reasons["no csp"] == "response header Content-Security-Policy is missing"
    assert reasons["wrong hsts"] == ("response header Strict-Transport-Security is 'max-age=31536000', "
                                     "expected 'max-age=1'")
    assert reasons["not json"] == "the response is not JSON"
    assert reasons["missing key"] == "JSON data[0].id is missing"
    assert res["msg"].startswith("6 of 6 checks failed: broken: status 500")


def test_accepted_status_codes_and_latency_limit(server: LocalServer) -> None:
    res = run_module("http_probe", {"checks": [
        {"name": "expect 500", "url": server.url + "/broken", "status_code": [500]},
        {"name": "too slow", "url": server.url + "/slow", "max_latency_ms": 100},
    ]})
    by = {c["name"]: c for c in res["checks"]}
    assert by["expect 500"]["ok"]
    assert not by["too slow"]["ok"]
    assert by["too slow"]["reason"].startswith("latency ") and "above the limit of 100 ms" in by["too slow"]["reason"]


def test_checks_run_concurrently(server: LocalServer) -> None:
    checks = [{"url": server.url + "/slow"} for _ in range(10)]
    t0 = time.monotonic()
    res = run_module("http_probe", {"checks": checks, "concurrency": 10})
    took = time.monotonic() - t0
    assert res["summary"]["passed"] == 10
    # ten 0.3 s answers one after another would take 3 s
    assert took < 1.5, took


def test_wait_timeout_retries_until_the_endpoint_becomes_healthy(server: LocalServer) -> None:
    became_healthy = time.monotonic() + 1.0

    def flapping(_h, _b):
        if time.monotonic() < became_healthy:
            return 503, {}, b'{"status": false}'
        return 200, {}, b'{"status": true}'

    server.routes["/starting"] = flapping
    res = run_module("http_probe", {"wait_timeout": 10, "interval": 0.1, "backoff": 1.0,
                                    "checks": [{"url": server.url + "/starting"}]})
    assert not res.get("failed"), res
    assert res["checks"][0]["attempts"] > 1
    assert res["elapsed_s"] < 5


def test_wait_timeout_gives_up_at_the_deadline(server: LocalServer) -> None:
    t0 = time.monotonic()
    res = run_module("http_probe", {"wait_timeout": 1.0, "interval": 0.2, "backoff": 2,
                                    "checks": [{"url": server.url + "/broken"}]})
    took = time.monotonic() - t0
    assert res["failed"] is True
    assert res["checks"][0]["attempts"] >= 3
    assert 0.9 < took < 3


def test_connection_refused_and_timeout_are_failures_not_errors(server: LocalServer) -> None:
    closed = LocalServer()
    url = closed.url
    closed.close()
    res = run_module("http_probe", {"checks": [
        {"name": "refused", "url": url + "/health"},
        {"name": "timeout", "url": server.url + "/slow", "timeout": 0.05},
    ], "fail_on_error": False})
    assert "failed" not in res
    by = {c["name"]: c for c in res["checks"]}
    assert by["refused"]["status"] == 0 and by["refused"]["reason"].startswith("connection failed")
    assert by["timeout"]["reason"] == "no answer within 0.05 s"
    assert res["summary"] == {"total": 2, "passed": 0, "failed": 2}


def test_https_with_a_ca_file_and_without(tmp_path) -> None:
    pki = make_ca(tmp_path)
    srv = LocalServer(routes={"/health": json_route(200, {"status": True})}, tls=(pki["cert"], pki["key"]))
    try:
        ok = run_module("http_probe", {"ca_path": str(pki["ca"]), "checks": [{"url": srv.url + "/health"}]})
        assert ok["summary"]["passed"] == 1, ok
        untrusted = run_module("http_probe", {"checks": [{"url": srv.url + "/health"}]})
        assert untrusted["failed"] is True
        assert untrusted["checks"][0]["reason"].startswith("TLS error")
        unverified = run_module("http_probe", {"validate_certs": False, "checks": [{"url": srv.url + "/health"}]})
        assert unverified["summary"]["passed"] == 1
        assert "verification is off" in str(unverified.get("warnings"))
    finally:
        srv.close()


def test_request_headers_and_body_reach_the_server_and_the_token_is_not_returned(server: LocalServer) -> None:
    res = run_module("http_probe", {"checks": [
        {"url": server.url + "/health", "method": "POST", "headers": {"Authorization": f"Bearer {TOKEN}"},
         "json": {"title": "Deploy Test"}},
        {"url": server.url + "/health", "method": "PUT", "body": "raw"},
    ]})
    assert res["summary"]["passed"] == 2
    got = {method: (headers, body) for method, _path, headers, body in server.requests}  # concurrent: any order
    assert got["POST"][0]["Authorization"] == f"Bearer {TOKEN}"
    assert got["POST"][1] == b'{"title": "Deploy Test"}'
    assert got["PUT"][1] == b"raw"
    assert TOKEN not in str(res)


def test_body_excludes_catches_a_leaked_secret_without_repeating_it(server: LocalServer) -> None:
    res = run_module("http_probe", {"checks": [{"url": server.url + "/leaky", "body_excludes": [TOKEN]}]})
    assert res["failed"] is True
    assert res["checks"][0]["reason"] == "the response contains a forbidden string"
    assert TOKEN not in str(res)


def test_return_json_gives_the_parsed_body(server: LocalServer) -> None:
    res = run_module("http_probe", {"checks": [{"url": server.url + "/api/version", "return_json": True}]})
    assert res["checks"][0]["json"] == {"version": "1.1.0"}


@pytest.mark.parametrize("args, message", [
    ({"checks": [{"url": "ftp://x/"}]}, "checks[0].url 'ftp://x/' is not an http(s) URL"),
    ({"checks": [{"url": "http://x/"}], "wait_timeout": -1}, "wait_timeout=-1.0 must be"),
    ({"checks": [{"url": "http://x/"}], "backoff": 0.5}, "backoff=0.5 must be 1 or more"),
    ({"checks": [{"url": "http://x/"}], "concurrency": 0}, "concurrency=0 must be at least 1"),
    ({"checks": [{"url": "http://x/", "max_latency_ms": -5}]}, "checks[0].max_latency_ms=-5.0 must be 0 or more"),
    ({"checks": [{"url": "http://x/", "body": "a", "json": {}}]}, "mutually exclusive"),
])
def test_bad_input_is_refused_with_a_message_naming_it(args, message) -> None:
    res = run_module("http_probe", args)
    assert res["failed"] is True
    assert message in res["msg"], res["msg"]


def test_runs_in_check_mode(server: LocalServer) -> None:
    res = run_module("http_probe", {"checks": [{"url": server.url + "/health"}]}, check_mode=True)
    assert res["summary"]["passed"] == 1 and res["changed"] is False


def test_probes_do_not_block_each_other_on_one_dead_endpoint(server: LocalServer) -> None:
    # a listener that accepts and never answers
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    port = sock.getsockname()[1]
    stop = threading.Event()
    try:
        t0 = time.monotonic()
        res = run_module("http_probe", {"fail_on_error": False, "checks": [
            {"name": "dead", "url": f"http://127.0.0.1:{port}/", "timeout": 1},
            *[{"url": server.url + "/health"} for _ in range(5)]]})
        assert time.monotonic() - t0 < 2.5
        assert res["summary"]["passed"] == 5 and res["checks"][0]["reason"] == "no answer within 1 s"
    finally:
        stop.set()
        sock.close()
