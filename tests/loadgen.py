"""Steady, bounded HTTP load for zero-downtime and rollback measurements.

Background workers send GET requests on a fixed schedule (request n is due at
n / rate seconds) until stopped, or until the request count or time limit is reached,
whichever comes first. Several workers share the schedule, so one slow answer does not
lower the rate. Every answer is recorded with its time, so a test can tell which
requests failed and when.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass
class Sample:
    t: float             # seconds since the load started (monotonic)
    status: int          # HTTP status, or 0 when the request raised
    body: str            # first bytes of the answer, or the error
    seconds: float       # latency


@dataclass
class Load:
    url: str
    rate: float = 50.0               # requests per second
    max_requests: int = 6000
    max_seconds: float = 120.0
    verify: str | bool = True
    headers: dict[str, str] = field(default_factory=dict)
    workers: int = 8
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._start = time.monotonic()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self.samples.sort(key=lambda s: s.t)

    def _claim(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._next >= self.max_requests:
                return None
            n = self._next
            self._next += 1
            return n

    def _run(self) -> None:
        session = requests.Session()
        interval = 1.0 / self.rate
        while (n := self._claim()) is not None:
            due = self._start + n * interval
            if due - self._start > self.max_seconds:
                break
            now = time.monotonic()
            if due > now and self._stop.wait(due - now):
                break
            t0 = time.monotonic()
            try:
                r = session.get(self.url, timeout=5, verify=self.verify, headers=self.headers)
                sample = Sample(t0 - self._start, r.status_code, r.text[:200], time.monotonic() - t0)
            except requests.RequestException as exc:
                sample = Sample(t0 - self._start, 0, repr(exc)[:200], time.monotonic() - t0)
            with self._lock:
                self.samples.append(sample)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not 200 <= s.status < 400]

    def achieved_rate(self) -> float:
        samples = sorted(self.samples, key=lambda s: s.t)
        if len(samples) < 2:
            return 0.0
        return (len(samples) - 1) / (samples[-1].t - samples[0].t)
