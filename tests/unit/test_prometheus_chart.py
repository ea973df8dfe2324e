"""prometheus_chart draws real Prometheus data into a PNG."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modules_harness import run_module
from prom import KnownData, PromServer, start_prometheus


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PromServer, KnownData]]:
    d = KnownData(minutes=5)
    d.counter("http_requests_total", {"colour": "blue", "status": "200"}, 10)
    d.counter("http_requests_total", {"colour": "blue", "status": "500"}, 1)
    srv = start_prometheus(tmp_path_factory.mktemp("prom"), d)
    yield srv, d
    srv.stop()


def args(prom: tuple[PromServer, KnownData], dest: Path) -> dict:
    srv, d = prom
    return {"prometheus_url": srv.url, "dest": str(dest), "start": d.end - 240, "end": d.end, "step": 5,
            "title": "test", "panels": [
                {"title": "errors", "unit": "ratio", "limit": 0.05, "baseline": 0.01,
                 "query": 'sum(rate(http_requests_total{status="500"}[1m])) / sum(rate(http_requests_total[1m]))'}],
            "marks": [{"label": "switch", "time": d.end - 120}]}


def test_draws_a_png_once_and_then_changes_nothing(prom: tuple[PromServer, KnownData], tmp_path: Path) -> None:
    dest = tmp_path / "charts" / "soak.png"
    first = run_module("prometheus_chart", args(prom, dest))
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] is True and first["series"] == [1]
    assert dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert dest.stat().st_size > 5000
    again = run_module("prometheus_chart", args(prom, dest))
    assert again["changed"] is False


def test_check_mode_draws_nothing(prom: tuple[PromServer, KnownData], tmp_path: Path) -> None:
    dest = tmp_path / "none.png"
    res = run_module("prometheus_chart", args(prom, dest), check_mode=True)
    assert res["changed"] is False and not dest.exists()


def test_bad_window_and_unreachable_prometheus_fail_clearly(prom: tuple[PromServer, KnownData],
                                                            tmp_path: Path) -> None:
    bad = {**args(prom, tmp_path / "x.png"), "end": 1.0}
    res = run_module("prometheus_chart", bad)
    assert res["failed"] is True and "is not after start" in res["msg"]
    down = {**args(prom, tmp_path / "x.png"), "prometheus_url": "http://127.0.0.1:1"}
    res = run_module("prometheus_chart", down)
    assert res["failed"] is True and "unreachable" in res["msg"]
