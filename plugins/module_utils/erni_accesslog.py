# -*- coding: utf-8 -*-
# erni-deploy: each request's outcome from nginx's JSON access log, from a file or from Loki.
"""Per-request outcomes for the canary judge and the gate: which colour answered, whether it
failed, how long it took.

nginx logs one JSON object per request (the format the project gives the platform:
roles/canary/files/nginx-access-json.conf); ``$upstream_addr`` says which colour answered.
The lines are read from the file on the target (AccessLogSource) or, where the platform ships
its logs to Loki, through Loki's query API (LokiSource: ``/loki/api/v1/query_range``, with the
tenant header a multi-tenant Loki needs). Both parse the same lines the same way. No library
reads nginx's JSON lines into per-upstream attempts (a request nginx passed to two upstreams is
two attempts), nor queries Loki from Python without a Grafana stack: this is ours, small, and
tested against the sandbox's nginx and an HTTP double of Loki's query API.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class JudgeInputError(ValueError):
    """The judge was given something it cannot judge with; the message names it."""


# --------------------------------------------------------------------------- samples

@dataclass
class Attempt:
    """One request to one upstream (nginx may try two for one client request)."""

    t: float            # when it ended (epoch seconds)
    side: str           # the name of the colour, or "" when it is neither
    error: bool
    latency: float | None


@dataclass
class Sample:
    """One side's requests in a window."""

    latencies: list[float] = field(default_factory=list)
    total: int = 0
    errors: int = 0
    last_ok: float | None = None

    def add(self, a: Attempt) -> None:
        self.total += 1
        if a.error:
            self.errors += 1
        else:
            self.last_ok = a.t if self.last_ok is None else max(self.last_ok, a.t)
            if a.latency is not None:
                self.latencies.append(a.latency)


def _parts(raw: Any) -> list[str]:
    """nginx's list of upstreams tried: "a, b" (passed on) or "a : b" (an internal redirect)."""
    return [p.strip() for p in str(raw if raw is not None else "").replace(" : ", ", ").split(",")]


def _floats(raw: Any) -> list[float | None]:
    out: list[float | None] = []
    for part in _parts(raw):
        try:
            out.append(float(part))
        except ValueError:
            out.append(None)
    return out


class AccessLogSource:
    """Per-request outcomes from nginx's JSON access log, attributed by ``$upstream_addr``.

    Each line is a JSON object with the time (``msec``: epoch seconds with milliseconds,
    or ``time_iso8601``), the request URI, and nginx's upstream variables. A request that
    nginx passed to two upstreams (the first failed) is two attempts: the failed one counts
    against the upstream that failed. The file is read incrementally from where the window
    can start; a file that shrank (rotated) is read again from its start.
    """

    def __init__(self, path: str, addresses: dict[str, str], include: str = "", exclude: str = "",
                 fields: dict[str, str] | None = None) -> None:
        self.path = path
        self.by_addr = {addr: side for side, addr in addresses.items()}
        self.include = re.compile(include) if include else None
        self.exclude = re.compile(exclude) if exclude else None
        f = {"time": "msec", "uri": "request_uri", "status": "status", "upstream_addr": "upstream_addr",
             "upstream_status": "upstream_status", "upstream_time": "upstream_response_time"}
        f.update(fields or {})
        self.f = f
        self.attempts: list[Attempt] = []
        self.offset: int | None = None
        self.bad_lines = 0
        # attempts to addresses that are no colour's, by address (a wrong upstreams setting shows here)
        self.unknown: dict[str, int] = {}

    def start_at(self, t: float, backscan_bytes: int = 1 << 20) -> None:
        """Start reading where lines of time t can be: back from the end, a doubling stretch at
        a time, until the first whole line read is older than t (or the file's start)."""
        self.since = t
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as fh:
                back = backscan_bytes
                while True:
                    offset = max(0, size - back)
                    fh.seek(offset)
                    head = fh.read(min(size - offset, 64 << 10)).split(b"\n")
                    first = head[1] if offset > 0 and len(head) > 1 else head[0]
                    t_first = self._line_time(first)
                    if offset == 0 or (t_first is not None and t_first < t):
                        break
                    back *= 2
        except OSError as exc:
            raise JudgeInputError(f"access_log {self.path!r} cannot be read: {exc.strerror}") from exc
        self.offset = offset
        self._skip_partial = offset > 0

    def _line_time(self, line: bytes) -> float | None:
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        return self._time(rec) if isinstance(rec, dict) else None

    def _time(self, rec: dict[str, Any]) -> float | None:
        raw = rec.get(self.f["time"])
        if raw is None:
            return None
        try:
            return float(raw)
        except (TypeError, ValueError):
            from datetime import datetime

            try:
                return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None

    def read(self) -> None:
        if self.offset is None:
            self.start_at(0.0, backscan_bytes=1 << 62)
        assert self.offset is not None
        try:
            size = os.path.getsize(self.path)
            if size < self.offset:      # rotated or truncated: what is there now is new
                self.offset, self._skip_partial = 0, False
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError as exc:
            raise JudgeInputError(f"access_log {self.path!r} cannot be read: {exc.strerror}") from exc
        end = data.rfind(b"\n")
        if end < 0:
            return
        chunk, self.offset = data[:end], self.offset + end + 1
        lines = chunk.split(b"\n")
        if self._skip_partial:
            lines, self._skip_partial = lines[1:], False
        for line in lines:
            self._parse(line)

    def _parse(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            rec = json.loads(line)
        except ValueError:
            self.bad_lines += 1
            return
        if not isinstance(rec, dict):
            self.bad_lines += 1
            return
        t = self._time(rec)
        if t is None:
            self.bad_lines += 1
            return
        if t < self.since:
            return
        uri = str(rec.get(self.f["uri"], ""))
        if " " in uri:      # $request ("GET /path HTTP/1.1"), as ERNI-KI's rate_limit_json logs it
            uri = [*uri.split(" "), ""][1]
        uri = uri.split("?", 1)[0]
        if str(rec.get(self.f["status"], "")) == "101":
            return          # a websocket: its time is the connection's life, not an answer's
        if (self.include and not self.include.search(uri)) or (self.exclude and self.exclude.search(uri)):
            return
        addrs = _parts(rec.get(self.f["upstream_addr"]))
        statuses = _floats(rec.get(self.f["upstream_status"]))
        times = _floats(rec.get(self.f["upstream_time"]))
        final = _floats(rec.get(self.f["status"]))[0]
        for i, addr in enumerate(addrs):
            if not addr or addr == "-":
                continue
            status = statuses[i] if i < len(statuses) else None
            if status is None and i == len(addrs) - 1:
                status = final
            error = status is None or status >= 500
            latency = times[i] if i < len(times) else None
            side = self.by_addr.get(addr, "")
            if not side:
                self.unknown[addr] = self.unknown.get(addr, 0) + 1
            self.attempts.append(Attempt(t, side, error, latency))

    def unattributed(self) -> str:
        """In words, what the log held that no colour could be given (for a "too few" verdict)."""
        parts = []
        if self.unknown:
            top = sorted(self.unknown.items(), key=lambda kv: -kv[1])[:3]
            parts.append("requests to addresses that are no colour's: "
                         + ", ".join(f"{a} ({n})" for a, n in top) + " (check upstreams)")
        if self.bad_lines:
            parts.append(f"{self.bad_lines} lines that are not JSON or have no time (check log_fields)")
        return "; ".join(parts)

    def window(self, t0: float, t1: float, sides: Iterable[str]) -> dict[str, Sample]:
        self.read()
        out = {s: Sample() for s in sides}
        for a in self.attempts:
            if t0 <= a.t < t1 and a.side in out:
                out[a.side].add(a)
        return out


    def sample(self, t0: float, t1: float, side: str | None = None) -> Sample:
        """Every attempt of [t0, t1) in one sample: those of one colour, or with side None all
        that reached an upstream (what the soak after a switch judges)."""
        self.read()
        out = Sample()
        for a in self.attempts:
            if t0 <= a.t < t1 and (side is None or a.side == side):
                out.add(a)
        return out


LOG_MEASURES = ("error_ratio", "latency_p50", "latency_p95", "latency_p99", "requests")


class LogMeasures:
    """One figure of a window of the access log, for the gate's metrics with source access_log.

    The same requests the canary judge compares, counted the way its absolute triggers count
    them: an error is a 5xx answer or an upstream that could not be reached; a latency is the
    upstream's time of one attempt. Fewer than `min_requests` requests in the window is no
    data (a ratio of 1 error in 3 requests is no error rate)."""

    def __init__(self, source: AccessLogSource, side: str | None = None) -> None:
        self.source = source
        self.side = side or None
        self.started = False
        self.lock = threading.Lock()     # the gate measures its metrics in threads

    def start_at(self, t: float) -> None:
        """Read from where lines of time t can be (the earliest window of the run)."""
        with self.lock:
            self.source.start_at(t)
            self.started = True

    def measure(self, kind: str, t0: float, t1: float, min_requests: int = 20) -> tuple[float | None, int, str]:
        """(value or None, requests counted, why there is no value)."""
        if kind not in LOG_MEASURES:
            raise JudgeInputError(f"measure {kind!r} is not one of {', '.join(LOG_MEASURES)}")
        with self.lock:
            if not self.started:
                self.source.start_at(t0)
                self.started = True
            s = self.source.sample(t0, t1, self.side)
        whose = f"{self.side}'s requests" if self.side else "requests"
        if kind == "requests":
            return float(s.total), s.total, ""
        if s.total < min_requests:
            # without a colour, every upstream counts: the addresses that are no colour's are no news
            extra = self.source.unattributed() if self.side else ""
            return None, s.total, (f"{s.total} {whose} in the access log over the {t1 - t0:g} s window, "
                                   f"at least {min_requests} needed" + (f"; {extra}" if extra else ""))
        if kind == "error_ratio":
            return s.errors / s.total, s.total, ""
        value = quantile(s.latencies, int(kind[len("latency_p"):]) / 100)
        if value is None:
            return None, s.total, f"none of the {s.total} {whose} has an upstream time"
        return value, s.total, ""



def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.quantile(np.asarray(values, dtype=float), q))


class LokiSource(AccessLogSource):
    """The same JSON lines, as Loki holds them: fetched by LogQL query over the window, page by
    page (``limit`` lines, oldest first), from where the last read ended."""

    def __init__(self, url: str, query: str, addresses: dict[str, str], include: str = "", exclude: str = "",
                 fields: dict[str, str] | None = None, tenant: str = "", session: Any = None,
                 page: int = 5000, timeout: float = 10.0, clock: Any = time.time) -> None:
        super().__init__(f"Loki {url} {query}", addresses, include, exclude, fields)
        if not url.startswith(("http://", "https://")):
            raise JudgeInputError(f"loki_url {url!r} is not an http(s) URL")
        if not query.strip().startswith("{"):
            raise JudgeInputError(f"loki_query {query!r} is not a LogQL stream selector (it starts with {{)")
        self.url = url.rstrip("/")
        self.query = query
        self.tenant = tenant
        self.page = page
        self.timeout = timeout
        self.clock = clock
        if session is None:
            import requests

            session = requests.Session()
        self.session = session
        self.until_ns: int | None = None

    def start_at(self, t: float, backscan_bytes: int = 0) -> None:
        self.since = t
        self.until_ns = int(t * 1e9)

    def _fetch(self, start_ns: int, end_ns: int) -> list[tuple[int, str]]:
        headers = {"X-Scope-OrgID": self.tenant} if self.tenant else {}
        params = {"query": self.query, "start": str(start_ns), "end": str(end_ns), "limit": str(self.page),
                  "direction": "forward"}
        try:
            r = self.session.get(self.url + "/loki/api/v1/query_range", params=params, headers=headers,
                                 timeout=self.timeout)
        except Exception as exc:  # requests' connection errors, without importing requests here
            raise JudgeInputError(f"Loki at {self.url} cannot be reached: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise JudgeInputError(f"Loki at {self.url} answered {r.status_code} to {self.query!r}: "
                                  f"{r.text.strip()[:300]}")
        try:
            data = r.json()["data"]
            entries = [(int(ts), line) for stream in data["result"] for ts, line in stream["values"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise JudgeInputError(f"Loki at {self.url} gave no streams for {self.query!r} ({exc})") from exc
        return sorted(entries)

    def read(self) -> None:
        if self.until_ns is None:
            self.start_at(0.0)
        assert self.until_ns is not None
        end_ns = int(self.clock() * 1e9)
        start_ns = self.until_ns
        while start_ns < end_ns:
            entries = self._fetch(start_ns, end_ns)
            for _, line in entries:
                self._parse(line.encode())
            if len(entries) < self.page:
                break
            start_ns = entries[-1][0] + 1          # the next page starts after the last line read
        self.until_ns = end_ns


def log_source(p: dict[str, Any], addresses: dict[str, str], include: str, exclude: str,
               fields: dict[str, str] | None) -> AccessLogSource:
    """The reader a module's options name: Loki with loki_url, else the file access_log."""
    if p.get("loki_url"):
        return LokiSource(p["loki_url"], p.get("loki_query") or "", addresses, include, exclude, fields,
                          tenant=p.get("loki_tenant") or "")
    if not p.get("access_log"):
        raise JudgeInputError("neither access_log nor loki_url is set: there is no log to read")
    return AccessLogSource(p["access_log"], addresses, include, exclude, fields)


LOG_SOURCE_SPEC = dict(
    loki_url=dict(type="str"),
    loki_query=dict(type="str", default='{job="fluent-bit",service="nginx"}'),
    loki_tenant=dict(type="str", default=""),
)
