"""A real Prometheus for tests, fed with known data.

KnownData builds series sample by sample; start_prometheus() turns them into TSDB blocks
with `promtool tsdb create-blocks-from openmetrics` and starts `prometheus` on a free
port of 127.0.0.1 over that data. Queries must then be evaluated at `data.end` (or any
time inside the window), since the data does not move with the clock.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from helpers import free_port

STEP = 5.0  # seconds between samples, as the sandbox scrapes


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}" if inner else ""


def _om_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


@dataclass
class KnownData:
    """Series over [end - minutes, end], one sample every STEP seconds."""

    minutes: float = 20
    end: float = field(default_factory=lambda: math.floor(time.time() / STEP) * STEP - 60)
    families: dict[str, list[tuple[dict[str, str], Callable[[float], float]]]] = field(default_factory=dict)

    @property
    def start(self) -> float:
        return self.end - self.minutes * 60

    def add(self, name: str, labels: dict[str, str], value: Callable[[float], float]) -> None:
        """value(t) gives the sample at t seconds after the window's start."""
        self.families.setdefault(name, []).append((labels, value))

    def counter(self, name: str, labels: dict[str, str], per_second: float) -> None:
        self.add(name, labels, lambda t: per_second * t)

    def gauge(self, name: str, labels: dict[str, str], value: float) -> None:
        self.add(name, labels, lambda t: value)

    def histogram(self, name: str, labels: dict[str, str], per_second: float,
                  fractions: dict[float, float]) -> None:
        """A histogram whose requests fall below each bucket bound in the given fractions."""
        for le, frac in sorted(fractions.items()):
            self.counter(f"{name}_bucket", {**labels, "le": f"{le:g}"}, per_second * frac)
        self.counter(f"{name}_bucket", {**labels, "le": "+Inf"}, per_second)
        self.counter(f"{name}_count", labels, per_second)

    def openmetrics(self) -> str:
        lines = []
        n = int(self.minutes * 60 / STEP)
        for name, series in self.families.items():
            lines.append(f"# TYPE {name} gauge")
            for labels, value in series:
                for i in range(n + 1):
                    t = i * STEP
                    lines.append(f"{name}{_labels(labels)} {_om_value(value(t))} {self.start + t:.3f}")
        lines.append("# EOF")
        return "\n".join(lines) + "\n"


@dataclass
class PromServer:
    url: str
    proc: subprocess.Popen
    workdir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_prometheus(workdir: Path, data: KnownData | None = None, rule_files: list[Path] | None = None,
                     scrape_targets: list[str] | None = None, scrape_interval: str = "1s") -> PromServer:
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        raise RuntimeError("prometheus and promtool are needed (make sandbox installs them)")
    workdir.mkdir(parents=True, exist_ok=True)
    tsdb = workdir / "tsdb"
    if data is not None:
        om = workdir / "data.om"
        om.write_text(data.openmetrics())
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
                       check=True, capture_output=True, timeout=120)
    config = ["global:", f"  scrape_interval: {scrape_interval}", f"  evaluation_interval: {scrape_interval}"]
    if rule_files:
        config += ["rule_files:"] + [f"  - {p}" for p in rule_files]
    config += ["scrape_configs:"]
    if scrape_targets:
        config += ["  - job_name: test", "    static_configs:", f"      - targets: {scrape_targets!r}"]
    else:
        config[-1] = "scrape_configs: []"
    (workdir / "prometheus.yml").write_text("\n".join(config) + "\n")
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={tsdb}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d",
         "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"prometheus did not start: {(workdir / 'prometheus.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return PromServer(url, proc, workdir)
