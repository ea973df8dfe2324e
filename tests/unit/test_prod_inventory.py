"""inventories/prod against the platform's real layout: every selector the phases would query
returns series in a Prometheus holding the metric names and label sets ERNI-KI's scrape jobs
produce.

The layout below is written from the platform's configuration (conf/prometheus/prometheus.yml:
job names, targets, no relabeling but the blackbox jobs'; compose.yml: cAdvisor with
--store_container_labels=false, so a container is known by its name; the stub_status nginx
exporter, whose request counter has no status label; the nvidia exporter scraped by two jobs).
The inventory is rendered by Ansible itself (tests/playbooks/render_inventory.yml) for both
hosts, with blue serving; every Prometheus metric must give a finite value, each of its
vector selectors must match series, and the selectors the old inventory used must not (so the
test can tell a layout that fits from one that does not).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import requests

import modules_harness  # noqa: F401  (plugins/module_utils on the import path)
from helpers import ROOT, VENV_BIN, run_playbook
from prom import KnownData, PromServer, start_prometheus

sys.path.insert(0, str(ROOT / "plugins" / "filter"))
from env_check import env_check

HOSTS = {"erni-ki-prod": "production", "erni-ki-staging": "staging"}


def platform_layout() -> KnownData:
    d = KnownData(minutes=12)

    def target(job: str, instance: str, **labels: str) -> dict[str, str]:
        return {"job": job, "instance": instance, **labels}

    for env in HOSTS.values():
        for colour in ("blue", "green"):
            c = target("cadvisor", "cadvisor:8080", name=f"erni-ki-{env}-{colour}", id=f"/docker/{env}{colour}",
                       image="registry.erni-gruppe.ch/erni-ki:1.0.0")
            d.counter("container_cpu_usage_seconds_total", {**c, "cpu": "total"}, 0.3)
            d.gauge("container_memory_usage_bytes", c, 1.2e9)
            d.gauge("container_spec_memory_limit_bytes", c, 4e9)
            d.gauge("container_last_seen", c, 1.8e9)
    for name in ("erni-ki-db-1", "erni-ki-nginx-1", "erni-ki-litellm"):
        d.gauge("container_memory_usage_bytes", target("cadvisor", "cadvisor:8080", name=name), 3e8)
    node = target("node-exporter", "node-exporter:9100")
    for cpu in ("0", "1", "2", "3"):
        d.counter("node_cpu_seconds_total", {**node, "cpu": cpu, "mode": "idle"}, 0.7)
        d.counter("node_cpu_seconds_total", {**node, "cpu": cpu, "mode": "user"}, 0.3)
    d.gauge("node_memory_MemAvailable_bytes", node, 40e9)
    d.gauge("node_memory_MemTotal_bytes", node, 64e9)
    for mount, fstype in (("/", "ext4"), ("/run", "tmpfs")):
        fs = {**node, "device": "/dev/nvme0n1p2", "mountpoint": mount, "fstype": fstype}
        d.gauge("node_filesystem_avail_bytes", fs, 300e9)
        d.gauge("node_filesystem_size_bytes", fs, 1e12)
    nginx = target("nginx", "nginx-exporter:9113")
    d.counter("nginx_http_requests_total", nginx, 40)          # stub_status: no status label
    d.gauge("nginx_connections_active", nginx, 12)
    for job, url in (("blackbox-nginx-8080", "http://nginx:8080/health"),
                     ("blackbox-nginx-8080", "http://nginx:8080/searxng/"),
                     ("blackbox-internal", "http://openwebui:8080/health"),
                     ("blackbox-internal", "http://litellm:4000/health/readiness")):
        d.gauge("probe_success", target(job, url), 1)
        d.gauge("probe_duration_seconds", target(job, url), 0.02)
    pg = target("postgres", "postgres-exporter:9187")
    for datname in ("openwebui", "postgres"):
        d.gauge("pg_stat_activity_max_tx_duration", {**pg, "datname": datname, "state": "active"}, 0.05)
    d.gauge("pg_up", pg, 1)
    for job in ("nvidia-exporter", "nvidia-gpu"):
        gpu = target(job, "nvidia-exporter:9445", minor_number="0", name="NVIDIA RTX A4000",
                     uuid="GPU-0f1e2d3c")
        d.gauge("nvidia_gpu_duty_cycle", gpu, 35)
        d.gauge("nvidia_gpu_memory_used_bytes", gpu, 6e9)
        d.gauge("nvidia_gpu_memory_total_bytes", gpu, 16e9)
    for job, inst in (("prometheus", "localhost:9090"), ("cadvisor", "cadvisor:8080"),
                      ("node-exporter", "node-exporter:9100"), ("nginx", "nginx-exporter:9113"),
                      ("postgres", "postgres-exporter:9187"), ("ollama-exporter", "ollama-exporter:9778")):
        d.gauge("up", target(job, inst), 1)
    return d


@pytest.fixture(scope="module")
def layout() -> KnownData:
    return platform_layout()


@pytest.fixture(scope="module")
def prom(layout: KnownData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    srv = start_prometheus(tmp_path_factory.mktemp("platform-prom"), layout)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("render")
    run = run_playbook("-i", "inventories/prod", "tests/playbooks/render_inventory.yml",
                       "-e", f"render_out={out}/vars", "-e", "ansible_connection=local",
                       "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}", "-e", "ansible_become=false",
                       env={"ERNI_REPORT_DIR": str(out / "reports")}, timeout=180)
    assert run.rc == 0, run.output[-3000:]
    # the secret rotation record beside the hosts is no inventory source (ansible.cfg)
    assert "not a valid group definition" not in run.output and "secret-rotation" not in run.output
    return {host: json.loads((out / f"vars.{host}.json").read_text()) for host in HOSTS}


def instant(prom: PromServer, query: str, at: float) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {"query": query, "time": at}
    r = requests.get(prom.url + "/api/v1/query", params=params, timeout=10)
    body = r.json()
    assert body.get("status") == "success", (query, body)
    return list(body["data"]["result"])


def selectors(expr: str) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(str(node))
            return
        for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, float)):
                walk(child)
        for arg in getattr(node, "args", None) or []:
            walk(arg)

    walk(promql_parser.parse(expr))
    return found


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_every_prometheus_metric_of_the_inventory_has_data_in_the_platforms_layout(
        host: str, rendered: dict[str, dict[str, Any]], prom: PromServer, layout: KnownData) -> None:
    got = rendered[host]
    assert got["monitor_selector"] == f'job="cadvisor",name="erni-ki-{HOSTS[host]}-blue"'
    queried = [m for m in got["monitor_metrics"] if m.get("source", "prometheus") == "prometheus"]
    assert len(queried) >= 6
    empty = []
    for m in queried:
        for sel in selectors(m["query"]):
            if not instant(prom, f"count({sel})", layout.end):
                empty.append(f"{m['name']}: {sel}")
        values = [float(s["value"][1]) for s in instant(prom, m["query"], layout.end)]
        assert values and all(math.isfinite(v) for v in values), (m["name"], m["query"], values)
    assert not empty, f"selectors without series: {empty}"
    assert instant(prom, got["presence_query"], layout.end), got["presence_query"]


def test_the_selectors_the_old_inventory_used_find_nothing_there(prom: PromServer, layout: KnownData) -> None:
    # no "openwebui" job, no status label on the stub_status counter, environment is no series label
    for old in ('up{job="openwebui",environment="production"}', 'nginx_http_requests_total{status=~"5.."}',
                'http_request_duration_seconds_bucket{job="webhook-receiver"}'):
        assert not instant(prom, f"count({old})", layout.end), old


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_request_outcomes_come_from_the_access_log_in_the_projects_format(
        host: str, rendered: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    from ansible.module_utils.erni_judge import AccessLogSource  # modules_harness put it on the path

    got = rendered[host]
    logged = {m["name"]: m for m in got["monitor_metrics"] if m.get("source") == "access_log"}
    assert set(logged) == {"api_latency_p95", "error_rate"}
    # compose mounts ./data/nginx/logs on /var/log/nginx
    assert got["canary_access_log"] == "/opt/erni-ki/data/nginx/logs/erni-deploy-access.json"
    # a line as nginx writes it with the project's log_format parses with the inventory's fields
    conf = (ROOT / "roles" / "canary" / "files" / "nginx-access-json.conf").read_text()
    fmt = "".join(re.findall(r"'([^']*)'", conf.split("log_format erni_deploy_json escape=json", 1)[1]))
    values = {"time_iso8601": "2026-12-02T10:00:00+00:00", "msec": "1796205600.123", "remote_addr": "10.0.0.9",
              "request_method": "GET", "request_uri": "/api/v1/chats?page=1", "status": "200",
              "request_time": "0.012", "upstream_addr": "10.0.3.7:8080", "upstream_status": "200",
              "upstream_response_time": "0.011", "host": "ki.erni-gruppe.ch"}
    line = re.sub(r"\$([a-z_0-9]+)", lambda m: values[m.group(1)], fmt)
    log = tmp_path / "access.json"
    log.write_text(line + "\n")
    src = AccessLogSource(str(log), {"blue": "10.0.3.7:8080"}, fields=got["canary_log_fields"])
    sample = src.window(0, 2e9, ["blue"])["blue"]
    assert (sample.total, sample.errors, sample.latencies) == (1, 0, [0.011])
    assert src.bad_lines == 0


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_the_checklists_environment_is_answered_by_the_platforms_names(
        host: str, rendered: dict[str, dict[str, Any]]) -> None:
    import yaml

    defaults = yaml.safe_load((ROOT / "roles" / "secrets_check" / "defaults" / "main.yml").read_text())
    got = rendered[host]
    env = dict.fromkeys(got["app_environment"] + got["app_secret_environment"], "set")
    env.update(dict.fromkeys(("DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL"), ""))
    result = env_check(env, defaults["secrets_check_env_required"], defaults["secrets_check_env_may_be_empty"],
                       defaults["secrets_check_env_aliases"])
    assert result["ok"], result["summary"]
    assert result["via"]["JWT_SECRET"] == "WEBUI_SECRET_KEY"
    assert result["via"]["POSTGRES_USER"] == "OPENWEBUI_DB_USER"


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_the_rule_files_and_routes_are_the_platforms(host: str, rendered: dict[str, dict[str, Any]]) -> None:
    got = rendered[host]
    assert got["alert_rule_files"] == ["/opt/erni-ki/conf/prometheus/rules/*.yml"]
    assert got["nginx_upstream_name"] == "openwebui_backend"
    urls = got["smoke_tests_extra_checks"]
    assert not [u for u in urls if ":11434" in u or ":5432" in u], urls     # not published on the host
    assert "http://127.0.0.1:9095/health" in urls
