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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402

from helpers import (  # noqa: E402
    CA_FILE,
    PROD_URL,
    VENV_BIN,
    build_release,
    db_connect,
    run_playbook,
    secret,
    serving_version,
    staging_passed,
)
from loadgen import Load, Writer  # noqa: E402
from modules_harness import run_module  # noqa: E402

REGISTRY = "127.0.0.1:5000"

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


NAIVE_DIR = ROOT / ".sandbox" / "bench" / "naive"
NAIVE_PORT = 18050


def naive_compose(image: str) -> None:
    NAIVE_DIR.mkdir(parents=True, exist_ok=True)
    (NAIVE_DIR / "compose.yml").write_text(
        "name: erni-ki-naive\n"
        "services:\n"
        "  app:\n"
        f"    image: {image}\n"
        "    pull_policy: never\n"
        "    network_mode: host\n"
        "    labels: {erni-deploy.managed: 'true'}\n"
        f"    environment: {{PORT: '{NAIVE_PORT}', BIND: 127.0.0.1, ALERTMANAGER_WEBHOOK_SECRET: "
        "'bench-naive-secret-0123456789'}\n")
    subprocess.run(["docker", "compose", "--project-directory", str(NAIVE_DIR), "up", "-d"],
                   check=True, capture_output=True, timeout=120)


def bench_zero_downtime() -> Figure:
    """Steady load during a good deploy: erni-deploy's blue-green against a naive recreate."""
    build_release("5.0.0")
    build_release("5.0.1")
    ensure_serving("5.0.0")
    rate, results = 50, {}
    # erni-deploy: blue-green through nginx (the rollout alone, no soak)
    with Load(PROD_URL + "/", rate=rate, max_seconds=120, verify=CA_FILE) as load:
        time.sleep(2)
        run = run_playbook("tests/playbooks/rollout.yml", "-i", "inventories/sandbox", "-e", "release_version=5.0.1")
        time.sleep(2)
    if run.rc != 0:
        raise SystemExit(f"the blue-green deploy failed:\n{run.output[-3000:]}")
    results["erni_deploy"] = {"requests": len(load.samples), "failed": len(load.failures),
                              "rate": round(load.achieved_rate(), 1)}
    # naive: one container, recreated in place by `docker compose up -d` with the new image
    naive_compose(f"{REGISTRY}/erni-ki:5.0.0")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{NAIVE_PORT}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    with Load(f"http://127.0.0.1:{NAIVE_PORT}/", rate=rate, max_seconds=120) as load:
        time.sleep(2)
        naive_compose(f"{REGISTRY}/erni-ki:5.0.1")
        time.sleep(4)
    subprocess.run(["docker", "compose", "--project-directory", str(NAIVE_DIR), "down"], capture_output=True,
                   timeout=120)
    failed = load.failures
    results["naive_compose_up"] = {"requests": len(load.samples), "failed": len(failed),
                                   "rate": round(load.achieved_rate(), 1),
                                   "outage_s": round(failed[-1].t - failed[0].t, 2) if failed else 0.0}
    return {**results, "goal": "0 failed requests with erni-deploy, against more than 0 with the naive recreate"}


def bench_rollback() -> Figure:
    """A release that fails 30% of requests, on the production path: how long clients saw errors."""
    build_release("5.0.0")
    build_release("5.9.0", "ERROR_RATE=0.3")
    ensure_serving("5.0.0")
    records = Path(tempfile.mkdtemp(prefix="erni-bench-records-"))
    # as if 5.9.0 had passed staging: its fault shows only under production traffic
    staging_passed(records, "5.9.0")
    reports = Path(tempfile.mkdtemp(prefix="erni-bench-reports-"))
    with Load(PROD_URL + "/", rate=20, max_seconds=300, verify=CA_FILE) as load:
        run = run_playbook("playbooks/production_deployment.yml", "-i", "inventories/sandbox",
                           "-e", "release_version=5.9.0",
                           env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(reports)})
        time.sleep(3)
    report = json.loads((reports / "latest" / "report.json").read_text())
    if run.rc == 0 or report["outcome"] != "rolled_back":
        raise SystemExit(f"5.9.0 was not rolled back (rc {run.rc}, outcome {report['outcome']})")
    errors = [s for s in load.samples if s.status >= 500 or s.status == 0]
    return {
        "client_bad_window_s": round(errors[-1].t - errors[0].t, 2) if errors else 0.0,
        "client_requests": len(load.samples), "client_errors": len(errors),
        "detection_to_restore_s": report["rollback"]["seconds"],
        "trigger": (report["rollback"].get("reason") or "")[:160],
        "goal": "client-visible bad window <= 30 s",
    }


def bench_pipeline() -> Figure:
    """A good deploy through every phase with the soak off: seconds per phase."""
    build_release("5.1.0")
    reports = Path(tempfile.mkdtemp(prefix="erni-bench-reports-"))
    records = Path(tempfile.mkdtemp(prefix="erni-bench-records-"))
    run = run_playbook("deploy.yml", "-i", "inventories/sandbox", "-e", "release_version=5.1.0",
                       "-e", "soak_enabled=false",
                       env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(reports)})
    if run.rc != 0:
        raise SystemExit(f"the pipeline failed:\n{run.output[-3000:]}")
    report = json.loads((reports / "latest" / "report.json").read_text())

    def secs(p: dict[str, Any]) -> float:
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
        return (datetime.strptime(p["ended"], fmt) - datetime.strptime(p["started"], fmt)).total_seconds()

    phases = {p["name"]: round(secs(p), 1) for p in report["phases"]}
    return {"total_s": round(report["duration_s"], 1), "phases_s": phases,
            "production_deployment_s": phases.get("Production deployment"),
            "goal": "a good deploy (soak off) in 90 s or less"}


def bench_write_hold() -> Figure:
    """A migration that damages data and fails, on the production path under a writer: how long
    writes were held (answered 503 with Retry-After), and whether every acknowledged write stayed."""
    build_release("5.0.0")
    build_release("5.8.0", "MIGRATION_FAIL=1")
    ensure_serving("5.0.0")
    records = Path(tempfile.mkdtemp(prefix="erni-bench-records-"))
    reports = Path(tempfile.mkdtemp(prefix="erni-bench-reports-"))
    staging_passed(records, "5.8.0")
    headers = {"Authorization": f"Bearer {secret('production_admin_token')}"}
    with Writer(PROD_URL, headers, f"bench-{time.time_ns()}", rate=1.25, max_seconds=300, verify=CA_FILE) as writer, \
            Load(PROD_URL + "/", rate=10, max_seconds=300, verify=CA_FILE) as reads:
        run = run_playbook("playbooks/production_deployment.yml", "-i", "inventories/sandbox",
                           "-e", "release_version=5.8.0",
                           env={"ERNI_RECORDS_DIR": str(records), "ERNI_REPORT_DIR": str(reports)})
        time.sleep(2)
    report = json.loads((reports / "latest" / "report.json").read_text())
    migration = report.get("published", {}).get("migration", {}).get("production") or {}
    if run.rc == 0 or not migration.get("failed"):
        raise SystemExit(f"5.8.0's migration did not fail as built (rc {run.rc}): {migration}")
    with db_connect("production") as conn, conn.cursor() as cur:
        cur.execute("SELECT id, title FROM chats")
        rows = dict(cur.fetchall())
    acknowledged = writer.acknowledged
    lost = [i for i, title in acknowledged.items() if rows.get(i) != title]
    held = writer.held
    return {
        "hold_s": migration.get("hold_seconds"),
        "client_held_window_s": round(held[-1].t - held[0].t, 2) if held else 0.0,
        "writes": len(writer.writes), "writes_held_503": len(held), "writes_acknowledged": len(acknowledged),
        "acknowledged_lost": len(lost),
        "reads": len(reads.samples), "reads_failed": len(reads.failures),
        "restored": (migration.get("undo") or {}).get("restored"),
        "restore_s": (migration.get("undo") or {}).get("restore_seconds"),
        "goal": "no acknowledged write lost; writes held for seconds, reads never",
    }


PGBENCH_DB = "erni_bench_pgbench"


def bench_backup() -> Figure:
    """backup_db's dump (with its fingerprint) against plain pg_dump -Fc, pgbench scale 20."""
    password = secret("production_db_password")
    env = {**os.environ, "PGPASSWORD": password}
    conn = ["-h", "127.0.0.1", "-p", "5432", "-U", "openwebui_user"]
    exists = subprocess.run(["psql", *conn, "-d", "openwebui", "-tAc",
                             "SELECT 1 FROM pg_database WHERE datname = 'erni_bench_pgbench'"],
                            env=env, capture_output=True, text=True, check=True).stdout.strip() == "1"
    if not exists:
        subprocess.run(["createdb", *conn, PGBENCH_DB], env=env, check=True, capture_output=True)
        subprocess.run(["pgbench", *conn, "-i", "-s", "20", "-q", PGBENCH_DB], env=env, check=True,
                       capture_output=True, timeout=600)
    out = Path(tempfile.mkdtemp(prefix="erni-bench-backup-"))
    try:
        plain: list[float] = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(["pg_dump", *conn, "-Fc", "-f", str(out / "plain.dump"), PGBENCH_DB], env=env,
                           check=True, capture_output=True, timeout=600)
            plain.append(time.perf_counter() - t0)
        args = {"state": "dump", "host": "127.0.0.1", "port": 5432, "database": PGBENCH_DB,
                "user": "openwebui_user", "password": password, "backup_dir": str(out)}
        dumps: list[float] = []
        for _ in range(2):
            t0 = time.perf_counter()
            res = run_module("pg_backup", args)
            dumps.append(time.perf_counter() - t0)
            if res.get("failed"):
                raise SystemExit(f"pg_backup dump failed: {res.get('msg')}")
        t0 = time.perf_counter()
        ver = run_module("pg_backup", {**args, "state": "verify", "backup_file": res["file"]})
        verify_s = time.perf_counter() - t0
        if ver.get("failed") or not ver.get("verified"):
            raise SystemExit(f"pg_backup verify failed: {ver.get('msg')}")
        return {
            "pg_dump_s": round(min(plain), 2),
            "backup_db_dump_s": round(min(dumps), 2),
            "dump_ratio": round(min(dumps) / min(plain), 2),
            "verify_restore_s": round(verify_s, 2),
            "dump_bytes": res.get("bytes"),
            "rows": sum(t.get("rows_source") or 0 for t in ver.get("tables", [])),
            "note": "backup_db's dump also takes a consistent table fingerprint and writes sha256 and metadata",
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)



# --------------------------------------------------------------------------- the canary judge

GOOD_BASE = "5.2.0"


def _iso_epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


class Production:
    """Deploys through playbooks/production_deployment.yml as if each release had passed staging,
    with the staging baseline that one real staging run of GOOD_BASE measured (another minute,
    another database: what the staging-baseline gate compares with)."""

    def __init__(self) -> None:
        self.records = Path(tempfile.mkdtemp(prefix="erni-bench-records-"))
        self.reports = Path(tempfile.mkdtemp(prefix="erni-bench-reports-"))
        build_release(GOOD_BASE)
        run = run_playbook("playbooks/staging.yml", "-i", "inventories/sandbox", "-e", f"release_version={GOOD_BASE}",
                           env=self.env(), timeout=900)
        if run.rc != 0:
            raise SystemExit(f"the staging run of {GOOD_BASE} failed:\n{run.output[-3000:]}")
        self.baseline = (self.records / GOOD_BASE / "staging-baseline.yml").read_text()
        if self.deploy(GOOD_BASE)[0].rc != 0:
            raise SystemExit(f"could not deploy {GOOD_BASE} to production")

    def env(self) -> dict[str, str]:
        return {"ERNI_RECORDS_DIR": str(self.records), "ERNI_REPORT_DIR": str(self.reports)}

    def deploy(self, release: str, *extra: str) -> tuple[Any, dict[str, Any], float]:
        rec = self.records / release
        rec.mkdir(parents=True, exist_ok=True)
        if not (rec / "staging.json").exists():
            staging_passed(self.records, release)
            (rec / "staging-baseline.yml").write_text(self.baseline)
        t0 = time.monotonic()
        run = run_playbook("playbooks/production_deployment.yml", "-i", "inventories/sandbox",
                           "-e", f"release_version={release}", *extra, env=self.env(), timeout=900)
        took = time.monotonic() - t0
        return run, json.loads((self.reports / "latest" / "report.json").read_text()), took


class Neighbour:
    """A bounded CPU-burning process pinned to one core (of two): a busy machine."""

    def __init__(self, seconds: float = 600) -> None:
        code = (f"import os, time\nos.sched_setaffinity(0, {{1}})\nend = time.monotonic() + {seconds!r}\n"
                "while time.monotonic() < end:\n    pass\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


_PRODUCTION: list[Production] = []


def production() -> Production:
    """One staging run and one base deploy for all the judge's figures of a bench run."""
    if not _PRODUCTION:
        _PRODUCTION.append(Production())
    elif serving_version() != GOOD_BASE:
        _PRODUCTION[0].deploy(GOOD_BASE)
    return _PRODUCTION[0]


def steps_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    return ((report.get("published") or {}).get("canary") or {}).get("steps") or []


def bench_canary_false_rollbacks() -> Figure:
    """Ten good releases (half slow for their first 15 s), half of them with a CPU-burning
    neighbour: how many the live judge rolled back, and how many the staging baseline alone
    (the gate before it, computed from the same soak) would have rolled back."""
    prod = production()
    runs = []
    for i in range(10):
        release = f"5.3.{i}"
        knobs = ("WARMUP_LATENCY_MS=300", "WARMUP_SECONDS=15") if i % 2 else ()
        build_release(release, *knobs)
        neighbour = Neighbour() if i >= 5 else None
        try:
            run, report, took = prod.deploy(release)
        finally:
            if neighbour:
                neighbour.stop()
        shadow = ((report.get("published") or {}).get("gate") or {}).get("staging_only") or {}
        runs.append({"release": release, "warmup_knob": bool(knobs), "neighbour": neighbour is not None,
                     "outcome": report["outcome"], "seconds": round(took, 1),
                     "staging_only_verdict": shadow.get("verdict"),
                     "steps": [{"weight": s["weight"], "verdict": s["verdict"], "seconds": s["seconds"],
                                "judge_s": s.get("judge_seconds")} for s in steps_of(report)],
                     "reason": (report.get("rollback") or {}).get("reason", "")[:200] if run.rc else ""})
    return {"deploys": len(runs),
            "rolled_back_by_live_judge": sum(1 for r in runs if r["outcome"] == "rolled_back"),
            "would_roll_back_on_staging_baseline": sum(1 for r in runs
                                                       if r["staging_only_verdict"] in ("fail", "inconclusive")),
            "with_neighbour": sum(1 for r in runs if r["neighbour"]),
            "with_warmup_knob": sum(1 for r in runs if r["warmup_knob"]),
            "runs": runs, "goal": "0 good releases rolled back"}


DETECT = [("5.4.1", "ERROR_RATE=0.3"), ("5.4.2", "ERROR_RATE=0.03"), ("5.4.3", "EXTRA_LATENCY_MS=400"),
          ("5.4.4", "EXTRA_LATENCY_MS=50")]


def _bad(sample: Any, knob: str) -> bool:
    if sample.status == 0 or sample.status >= 500:
        return True
    if knob.startswith("EXTRA_LATENCY_MS="):
        return sample.seconds > float(knob.split("=")[1]) / 1000 * 0.8
    return False


def bench_canary_detection() -> Figure:
    """Four bad releases, each with canary steps [10, 100] and with a straight switch [100]: caught or
    missed, seconds from the first bad request a client saw to the restore, and how many bad
    (failed, or slow) requests clients saw, from a client load of 20 requests a second."""
    prod = production()
    out: dict[str, Any] = {}
    for mode, steps in (("canary", [10, 100]), ("straight", [100])):
        for release, knob in DETECT:
            name = f"{release}-{mode}"
            build_release(name, knob)
            wall0 = time.time()
            with Load(PROD_URL + "/", rate=20, max_seconds=400, verify=CA_FILE) as load:
                _run, report, took = prod.deploy(name, "-e", json.dumps({"canary_steps": steps}),
                                                "-e", "soak_enabled=false")
                time.sleep(2)
            rb = report.get("rollback") or {}
            bad = [s for s in load.samples if _bad(s, knob)]
            restored = _iso_epoch(rb.get("restored_at"))
            first_bad = wall0 + bad[0].t if bad else None
            failed_step = next((s for s in steps_of(report) if s["verdict"] != "pass"), None)
            out[name] = {"knob": knob, "caught": report["outcome"] == "rolled_back",
                         "first_bad_to_restore_s": round(restored - first_bad, 2) if restored and first_bad else None,
                         "bad_requests_seen": len(bad), "client_requests": len(load.samples),
                         "caught_at_step": failed_step["weight"] if failed_step else None,
                         "by": (rb.get("reason") or "")[:160], "deploy_s": round(took, 1)}
            if report["outcome"] != "rolled_back" and serving_version() != GOOD_BASE:
                prod.deploy(GOOD_BASE)          # a missed release: put the good one back for the next
    caught = {m: sum(1 for k, v in out.items() if k.endswith(m) and v["caught"]) for m in ("canary", "straight")}
    seen = {m: sum(v["bad_requests_seen"] for k, v in out.items() if k.endswith(m)) for m in ("canary", "straight")}
    return {"caught_canary": f"{caught['canary']} of {len(DETECT)}", "caught_straight": f"{caught['straight']} of "
            f"{len(DETECT)}", "bad_requests_canary": seen["canary"], "bad_requests_straight": seen["straight"],
            "ratio_straight_to_canary": round(seen["straight"] / seen["canary"], 1) if seen["canary"] else None,
            "runs": out, "goal": "all four caught; at least 5 times fewer bad requests with a 10 % first step"}


def bench_canary_time() -> Figure:
    """A good deploy's wall time (production phase, soak off) with canary steps and with a straight
    switch, and the judge's own time per step (reading the log and computing, without waits)."""
    prod = production()
    out: dict[str, Any] = {}
    for mode, steps in (("canary", [10, 100]), ("straight", [100])):
        release = f"5.5.0-{mode}"
        build_release(release)
        run, report, took = prod.deploy(release, "-e", json.dumps({"canary_steps": steps}),
                                          "-e", "soak_enabled=false")
        if run.rc != 0:
            raise SystemExit(f"{release} was not deployed:\n{run.output[-3000:]}")
        out[mode] = {"deploy_s": round(took, 1),
                     "steps": [{"weight": s["weight"], "seconds": s["seconds"], "judge_s": s["judge_seconds"]}
                               for s in steps_of(report)]}
    judge = [s["judge_s"] for m in out.values() for s in m["steps"]]
    return {"canary_deploy_s": out["canary"]["deploy_s"], "straight_deploy_s": out["straight"]["deploy_s"],
            "judge_s_per_step_max": max(judge) if judge else None, "runs": out}


FIGURES: dict[str, Callable[[], Figure]] = {
    "zero_downtime": bench_zero_downtime,
    "rollback": bench_rollback,
    "write_hold": bench_write_hold,
    "pipeline": bench_pipeline,
    "backup": bench_backup,
    "probes": bench_probes,
    "canary_false_rollbacks": bench_canary_false_rollbacks,
    "canary_detection": bench_canary_detection,
    "canary_time": bench_canary_time,
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
