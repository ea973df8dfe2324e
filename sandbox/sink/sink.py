#!/usr/bin/env python3
"""Notification sink: accepts Slack- and Discord-style webhook posts and records them.

POST <any path>     records {"ts", "path", "content_type", "body"} and answers as Slack
                    does (200 "ok"), or as Discord does (204) for paths under /discord/.
GET  /messages      every recorded message, oldest first, as a JSON list.
DELETE /messages    forgets them.
GET  /health        200.

Usage: sink.py --listen 127.0.0.1:9099 --store FILE.jsonl
"""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    store: Path
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def reply(self, status: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.reply(200, b'{"status": "healthy"}')
        elif self.path == "/messages":
            with LOCK:
                lines = self.store.read_text().splitlines() if self.store.exists() else []
            self.reply(200, json.dumps([json.loads(x) for x in lines if x]).encode())
        else:
            self.reply(404, b'{"error": "not found"}')

    def do_DELETE(self) -> None:
        if self.path != "/messages":
            self.reply(404, b'{"error": "not found"}')
            return
        with LOCK:
            self.store.write_text("")
        self.reply(204)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self.reply(400, b'{"error": "invalid JSON"}')
            return
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                  "path": self.path, "content_type": self.headers.get("Content-Type", ""),
                  "body": body}
        with LOCK, self.store.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.path.startswith("/discord"):
            self.reply(204)
        else:
            self.reply(200, b"ok", "text/plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9099")
    parser.add_argument("--store", required=True, type=Path)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    Handler.store = args.store
    args.store.parent.mkdir(parents=True, exist_ok=True)
    args.store.touch()
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
