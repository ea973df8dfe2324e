#!/usr/bin/env python3
"""erni-deploy's benchmarks, measured on the sandbox; `make bench` runs them.

Each figure is measured in this run, on this machine; the results go to
bench/results.json and a table is printed. Run a subset with --only NAME[,NAME].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import CA_FILE, PROD_URL, VENV_BIN, build_release, run_playbook, serving_version  # noqa: E402
from modules_harness import run_module  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"
Figure = dict[str, Any]


def ensure_serving(version: str = "1.1.0") -> None:
    """The probes need a release behind nginx; deploy one if nothing answers."""
    try:
        if serving_version() is not None:
            return
    except Exception:  # noqa: S110 - nothing serving is what the deploy below fixes
        pass
    build_release(version)
    run = run_playbook("tests/playbooks/rollout.yml", "-i", "inventories/sandbox", "-e", f"release_version={version}")
    if run.rc != 0:
        raise SystemExit(f"could not deploy {version} for the benchmarks:\n{run.output[-3000:]}")


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times, last = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - t0)
    return times, last


def ansible_task_seconds(module: str, args: dict[str, Any]) -> float:
    """Wall time of one ad-hoc `ansible localhost -m MODULE` run, as an operator would see it."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-m", module, "-a", json.dumps(args),
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ansible -m {module} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took


def bench_probes() -> Figure:
    """20 smoke checks through nginx, and a 10-metric gate evaluation on the sandbox's Prometheus."""
    ensure_serving()
    checks = [{"name": f"health {i}", "url": f"{PROD_URL}/health", "json_equals": {"status": True}}
              for i in range(10)]
    checks += [{"name": f"version {i}", "url": f"{PROD_URL}/api/version", "json_present": ["version"]}
               for i in range(10)]
    probe_args = {"checks": checks, "ca_path": CA_FILE, "concurrency": 10}
    probe_times, probe = timed(lambda: run_module("http_probe", probe_args), 5)
    if probe.get("failed"):
        raise SystemExit(f"http_probe failed during the benchmark: {probe.get('msg')}")

    env = 'environment="production"'
    buckets = f"sum by (le) (rate(http_request_duration_seconds_bucket{{{env}}}[1m]))"
    queries = {
        "error_rate": f'sum(rate(http_requests_total{{{env},status=~"5.."}}[1m])) '
                      f'/ sum(rate(http_requests_total{{{env}}}[1m]))',
        "api_latency_p95": f"histogram_quantile(0.95, {buckets})",
        "api_latency_p50": f"histogram_quantile(0.5, {buckets})",
        "availability": f'max(up{{job="erni-ki",{env}}})',
        "webhook_processing_p95": 'histogram_quantile(0.95, sum by (le) (rate(webhook_processing_seconds_bucket[5m])))',
        "db_query_p95": 'histogram_quantile(0.95, sum by (le) (rate(db_query_duration_seconds_bucket[5m])))',
        "request_rate": f'sum(rate(http_requests_total{{{env}}}[1m]))',
        "process_memory": 'max(process_resident_memory_bytes{job="erni-ki"})',
        "process_cpu": 'max(rate(process_cpu_seconds_total{job="erni-ki"}[1m]))',
        "prometheus_up": 'up{job="prometheus"}',
    }
    gate_args = {"prometheus_url": "http://127.0.0.1:9090", "fail_on": [],
                 "metrics": [{"name": n, "query": q, "no_data": "pass", "limit": 1e12} for n, q in queries.items()]}
    gate_times, gate = timed(lambda: run_module("prometheus_gate", gate_args), 5)
    return {
        "http_probe_20_checks_s": round(statistics.median(probe_times), 3),
        "http_probe_20_checks_ansible_task_s": round(ansible_task_seconds("http_probe", probe_args), 3),
        "prometheus_gate_10_metrics_s": round(statistics.median(gate_times), 3),
        "prometheus_gate_10_metrics_ansible_task_s": round(ansible_task_seconds("prometheus_gate", gate_args), 3),
        "gate_metrics_with_data": sum(1 for m in gate["metrics"] if m["status"] != "nodata"),
        "goal": "http_probe 20 checks < 2 s; gate 10 metrics < 1 s",
    }


FIGURES: dict[str, Callable[[], Figure]] = {
    "probes": bench_probes,
}


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated: {', '.join(FIGURES)}")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise SystemExit(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict[str, Any] = {"measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "machine": machine(), "figures": dict(previous.get("figures", {}))}
    for name in names:
        print(f"bench: measuring {name} ...", flush=True)
        t0 = time.monotonic()
        results["figures"][name] = {**FIGURES[name](), "measured_at": results["measured_at"],
                                    "took_s": round(time.monotonic() - t0, 1)}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'figure':<48} value")
    for name, fig in results["figures"].items():
        for key, value in fig.items():
            if key not in ("measured_at", "took_s"):
                print(f"{name + '.' + key:<48} {value}")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)} (machine: {results['machine']})")


if __name__ == "__main__":
    main()
