# -*- coding: utf-8 -*-
# erni-deploy: a small Prometheus HTTP API client shared by the modules.
"""Instant and range queries against Prometheus's HTTP API, with errors that say what went wrong.

Every failure (unreachable, timeout, HTTP error, a query Prometheus rejects) raises
PrometheusError with a readable message: callers decide, and the gate never turns an
error into a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

try:
    import requests

    HAS_REQUESTS = True
except ImportError:  # pragma: no cover - reported by the modules
    HAS_REQUESTS = False


class PrometheusError(Exception):
    """Prometheus could not answer the question asked."""


def parse_value(raw: Any) -> float:
    """Prometheus sends sample values as strings: numbers, 'NaN', '+Inf', '-Inf'."""
    try:
        return float(raw)
    except (TypeError, ValueError) as exc:
        raise PrometheusError(f"Prometheus sent a value that is not a number: {raw!r}") from exc


def json_value(value: float) -> float | None:
    """A float fit for JSON: NaN and infinities become None (their text goes alongside)."""
    return value if math.isfinite(value) else None


@dataclass
class Sample:
    labels: dict[str, str]
    value: float
    timestamp: float

    def as_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "value": json_value(self.value), "raw": _text(self.value),
                "timestamp": self.timestamp}


@dataclass
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"labels": self.labels,
                "values": [[t, json_value(v)] for t, v in self.points],
                "non_finite": sum(1 for _, v in self.points if not math.isfinite(v))}


def _text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class PrometheusClient:
    def __init__(self, url: str, bearer_token: str | None = None, username: str | None = None,
                 password: str | None = None, verify: bool | str = True, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise PrometheusError(f"Prometheus URL {url!r} is not an http(s) URL")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.verify = verify
        self.session = requests.Session()
        self.session.verify = verify
        if bearer_token:
            self.session.headers["Authorization"] = f"Bearer {bearer_token}"
        elif username:
            self.session.auth = (username, password or "")

    def close(self) -> None:
        self.session.close()

    def get(self, path: str, params: dict[str, Any]) -> Any:
        """GET an API path; returns its `data` or raises PrometheusError."""
        url = f"{self.url}{path}"
        try:
            resp = self.session.get(url, params=params, timeout=self.timeout, verify=self.verify)
        except requests.exceptions.Timeout as exc:
            raise PrometheusError(f"Prometheus at {self.url} did not answer within {self.timeout:g} s") from exc
        except requests.exceptions.SSLError as exc:
            raise PrometheusError(f"TLS error talking to Prometheus at {self.url}: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise PrometheusError(f"Prometheus at {self.url} is unreachable (connection failed)") from exc
        except requests.exceptions.RequestException as exc:
            raise PrometheusError(f"request to Prometheus at {self.url} failed: {exc}") from exc
        try:
            body = resp.json()
        except ValueError as exc:
            raise PrometheusError(f"Prometheus at {self.url} answered HTTP {resp.status_code} "
                                  f"without JSON (is this the Prometheus API?)") from exc
        if resp.status_code == 401 or resp.status_code == 403:
            raise PrometheusError(f"Prometheus at {self.url} refused the credentials (HTTP {resp.status_code})")
        if not isinstance(body, dict) or body.get("status") != "success":
            err = body.get("error") if isinstance(body, dict) else None
            kind = body.get("errorType") if isinstance(body, dict) else None
            raise PrometheusError(f"Prometheus rejected the query ({kind or 'HTTP ' + str(resp.status_code)}): "
                                  f"{err or 'no error message'}")
        return body.get("data")

    def instant(self, query: str, time: float | None = None) -> list[Sample]:
        params: dict[str, Any] = {"query": query}
        if time is not None:
            params["time"] = f"{time:.3f}"
        data = self.get("/api/v1/query", params)
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "vector":
            return [Sample(r.get("metric", {}), parse_value(r["value"][1]), float(r["value"][0])) for r in result]
        if kind == "scalar":
            return [Sample({}, parse_value(result[1]), float(result[0]))]
        if kind == "matrix":
            raise PrometheusError("the query returns a range vector; an instant query needs an instant vector "
                                  "(wrap it in a function such as rate() or last_over_time())")
        raise PrometheusError(f"unexpected result type {kind!r}")

    def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        if end < start:
            raise PrometheusError(f"range end {end} is before its start {start}")
        if step <= 0:
            raise PrometheusError(f"range step {step} must be positive")
        data = self.get("/api/v1/query_range", {"query": query, "start": f"{start:.3f}",
                                                "end": f"{end:.3f}", "step": f"{step:g}"})
        return [Series(r.get("metric", {}), [(float(t), parse_value(v)) for t, v in r.get("values", [])])
                for r in data.get("result", [])]


def prometheus_argument_spec() -> dict[str, Any]:
    """Connection options shared by every module that talks to Prometheus."""
    return dict(
        prometheus_url=dict(type="str", required=True),
        bearer_token=dict(type="str", no_log=True),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="float", default=10),
    )


def client_from_params(params: dict[str, Any], warn: Any = None) -> PrometheusClient:
    verify: bool | str = True
    if not params["validate_certs"]:
        if warn is not None:
            warn("TLS certificate verification towards Prometheus is off")
        verify = False
    elif params.get("ca_path"):
        verify = params["ca_path"]
    return PrometheusClient(params["prometheus_url"], bearer_token=params.get("bearer_token"),
                            username=params.get("username"), password=params.get("password"),
                            verify=verify, timeout=params["timeout"])
