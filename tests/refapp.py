"""The reference application (sandbox/app) as a real process on a free port, for tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from helpers import ROOT, free_port

APP = ROOT / "sandbox" / "app" / "erni_app.py"
MINT = ROOT / "sandbox" / "bin" / "mint-token"
WEBHOOK_SECRET = "unit-test-webhook-secret-0123456789abcdef"
JWT_SECRET = "unit-test-jwt-secret-0123456789abcdef0123"


@contextmanager
def app(**env: str) -> Iterator[str]:
    port = free_port()
    full_env = {**os.environ, "APP_VERSION": "9.9.9", "PORT": str(port), "BIND": "127.0.0.1",
                "ALERTMANAGER_WEBHOOK_SECRET": WEBHOOK_SECRET, "JWT_SECRET": JWT_SECRET,
                # nothing listens here: routes that need the database fail, the rest work
                "OPENWEBUI_DB_PORT": str(free_port()), **env}
    # The app logs a line per request: into a file, as a pipe nobody reads would fill up under
    # load and block the app mid-answer.
    with tempfile.TemporaryFile(mode="w+") as output:
        proc = subprocess.Popen([sys.executable, str(APP), "serve"], env=full_env,
                                stdout=output, stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    requests.get(base + "/api/version", timeout=0.5)
                    break
                except requests.ConnectionError as exc:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        output.seek(0)
                        raise AssertionError(f"app did not start: {output.read()[-4000:]}") from exc
                    time.sleep(0.05)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=5)


def token(role: str, tmp_path: Path, ttl: int = 0) -> str:
    f = tmp_path / "jwt"
    f.write_text(JWT_SECRET)
    return subprocess.run([sys.executable, str(MINT), "--secret-file", str(f), "--sub", "t",
                           "--role", role, "--ttl", str(ttl)],
                          capture_output=True, text=True, check=True).stdout.strip()


def alert_payload(alertname: str = "DeploymentTest", severity: str = "critical") -> bytes:
    return json.dumps({
        "version": "4", "groupKey": f'{{}}:{{alertname="{alertname}"}}', "status": "firing",
        "receiver": "erni-webhook", "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname, "severity": severity}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": alertname, "severity": severity},
                    "annotations": {}, "startsAt": "2026-11-27T10:00:00Z"}],
    }).encode()


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
