#!/usr/bin/env python3
"""Steady, bounded HTTP traffic: N requests per second for S seconds, then a JSON summary.

traffic.py --url https://127.0.0.1:8443 --rate 20 --seconds 30 --path / --path /health/db
           [--ca FILE] [--out FILE] [--stop-file FILE]

With --stop-file, the traffic also ends as soon as that file exists (the deploy is over).

Requests go round-robin over the paths. The summary (to --out, or stdout) holds counts by
status, failures, and a per-second timeline of failures, so a client-side view of a deploy
(when the first and the last error were seen) survives the run. Standard library only: it
runs on any target with Python 3.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter


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

    def worker() -> None:
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
            url = a.url.rstrip("/") + paths[n % len(paths)]
            try:
                with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:  # noqa: S310
                    code = str(resp.status)
            except urllib.error.HTTPError as exc:
                code = str(exc.code)
            except Exception as exc:  # a failed request is data, not a crash
                code = f"error:{type(exc).__name__}"
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
