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


@dataclass
class Write:
    t: float             # seconds since the writer started (monotonic)
    title: str           # unique per write
    status: int          # HTTP status, or 0 when the request raised
    chat_id: int | None  # the id the answer acknowledged (status 200)
    retry_after: str     # the Retry-After header, "" when absent


@dataclass
class Writer:
    """Bounded writes, one chat per request on a fixed schedule; every answer is recorded,
    so a test can tell which writes were acknowledged (200 with an id) and which were held."""

    url: str
    headers: dict[str, str]
    prefix: str
    rate: float = 1.25               # writes per second (the sandbox's API limit is 100 a minute)
    max_writes: int = 900
    max_seconds: float = 600.0
    verify: str | bool = True
    writes: list[Write] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        session = requests.Session()
        for n in range(self.max_writes):
            due = self._start + n / self.rate
            if due - self._start > self.max_seconds or self._stop.wait(max(0.0, due - time.monotonic())):
                return
            title = f"{self.prefix}-{n}"
            t0 = time.monotonic() - self._start
            try:
                r = session.post(self.url + "/api/v1/chats", json={"title": title, "model": "llama3.2:3b"},
                                 headers=self.headers, verify=self.verify, timeout=5)
                chat_id = r.json().get("id") if r.status_code == 200 else None
                self.writes.append(Write(t0, title, r.status_code, chat_id, r.headers.get("Retry-After", "")))
            except (requests.RequestException, ValueError):
                self.writes.append(Write(t0, title, 0, None, ""))

    @property
    def acknowledged(self) -> dict[int, str]:
        """id -> title of every write answered 200."""
        return {w.chat_id: w.title for w in self.writes if w.status == 200 and w.chat_id is not None}

    @property
    def held(self) -> list[Write]:
        return [w for w in self.writes if w.status == 503 and w.retry_after]
