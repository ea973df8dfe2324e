#!/usr/bin/env python3
"""Steady, bounded HTTP traffic: N requests per second for S seconds, then a JSON summary.

traffic.py --url https://127.0.0.1:8443 --rate 20 --seconds 30 --path / --path /health/db
           [--ca FILE] [--out FILE] [--stop-file FILE]

With --stop-file, the traffic also ends as soon as that file exists (the deploy is over).

Requests go round-robin over the paths, each worker over one kept-alive connection, as a
browser's: a handshake per request would cost the machine more than the answers. A kept-alive
connection that the server closed in between (nginx's graceful reload closes idle ones) is
opened again and the request sent once more, as browsers do for a request that got no answer.
The summary (to --out, or stdout) holds counts by status, failures, and a per-second
timeline of failures, so a client-side view of a deploy (when the first and the last error
were seen) survives the run. Standard library only: it
runs on any target with Python 3.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections import Counter

# what a kept-alive connection closed by the server looks like before any answer came
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
          http.client.CannotSendRequest, http.client.BadStatusLine)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--path", action="append", default=[])
    p.add_argument("--ca")
    p.add_argument("--out")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--stop-file")
    a = p.parse_args()
    if not 0 < a.rate <= 500 or not 0 < a.seconds <= 3600:
        raise SystemExit("rate must be in (0, 500] and seconds in (0, 3600]: traffic stays bounded")
    paths = a.path or ["/"]
    ctx = ssl.create_default_context(cafile=a.ca) if a.ca else None
    total = int(a.rate * a.seconds)
    start = time.monotonic()
    lock = threading.Lock()
    nxt = [0]
    statuses: Counter[str] = Counter()
    failures: list[dict[str, object]] = []

    target = urllib.parse.urlsplit(a.url)
    base_path = target.path.rstrip("/")

    def connect() -> http.client.HTTPConnection:
        if target.scheme == "https":
            return http.client.HTTPSConnection(target.hostname or "", target.port or 443, timeout=5, context=ctx)
        return http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=5)

    def get(conn: http.client.HTTPConnection, path: str) -> str:
        conn.request("GET", path, headers={"Host": target.netloc})
        resp = conn.getresponse()
        resp.read()
        return str(resp.status)

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            with lock:
                n = nxt[0]
                if n >= total or (a.stop_file and n % 10 == 0 and os.path.exists(a.stop_file)):
                    nxt[0] = total
                    return
                nxt[0] += 1
            due = start + n / a.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.monotonic() - start
            path = base_path + paths[n % len(paths)]
            url = a.url.rstrip("/") + paths[n % len(paths)]
            try:
                reused = conn is not None
                conn = conn or connect()
                try:
                    code = get(conn, path)
                except _STALE:
                    if not reused:
                        raise
                    conn.close()
                    conn = connect()
                    code = get(conn, path)
            except Exception as exc:  # a failed request is data, not a crash
                code = f"error:{type(exc).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                statuses[code] += 1
                if not code.startswith(("2", "3")):
                    failures.append({"t": round(t, 3), "at": time.time(), "status": code, "url": url})

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, a.workers))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    summary = {"url": a.url, "rate": a.rate, "seconds": a.seconds, "requests": sum(statuses.values()),
               "statuses": dict(statuses), "failed": len(failures),
               "first_failure_at": min((f["at"] for f in failures), default=None),
               "last_failure_at": max((f["at"] for f in failures), default=None),
               "failures": sorted(failures, key=lambda f: float(f["t"]))[:200],  # type: ignore[arg-type]
               "elapsed_s": round(time.monotonic() - start, 3)}
    text = json.dumps(summary)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
