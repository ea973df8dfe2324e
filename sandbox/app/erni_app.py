#!/usr/bin/env python3
"""The sandbox's stand-in for ERNI-KI's public surface.

One process serves what the deployment checks talk to on the real platform
(Open WebUI's health and version routes, the chat and model API, the
Alertmanager webhook receiver, Prometheus metrics), on the routes and with the
answers listed in shared/ERNI-KI.md. Chats and messages live in PostgreSQL.

Fault knobs are read from the environment, so a bad release can be baked into
a real image (see sandbox/bin/build-release):
  ERROR_RATE          fraction of /api requests answered 500
  EXTRA_LATENCY_MS    added to every /api and /webhook request
  WARMUP_LATENCY_MS   added to the same requests while the process is younger than WARMUP_SECONDS
  WARMUP_SECONDS      how long that lasts (a cold start: slow first requests, then normal ones)
  HEALTH_FAIL         /health answers 503
  STARTUP_DELAY_S     /health answers 503 for this many seconds after start
  CRASH_ON_START      the server exits at once with status 1
  WEBHOOK_REJECT_ALL  webhooks are refused even with a valid signature
  MIGRATION_FAIL      the release carries a migration NNN_reshape_chats, which fails: 1 after
                      damaging data outside its transaction (only a snapshot undoes it), clean
                      inside its own transaction (PostgreSQL undoes it)
  MIGRATION_FAIL_IN   the failure happens only where ENVIRONMENT is this name (the migration
                      passes on staging and fails on production's database); elsewhere it
                      applies (it adds a column the serving release ignores)

Commands: serve (default), migrate [--down-to N | --status], --version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VERSION = os.environ.get("APP_VERSION", "0.0.0")
MIGRATIONS_DIR = Path(os.environ.get("MIGRATIONS_DIR", Path(__file__).with_name("migrations")))
WEBHOOK_ENDPOINTS = ("", "critical", "warning", "gpu", "ai", "database")
SEVERITIES = ("critical", "warning", "info", "debug")
MODELS = [
    {"id": "llama3.2:3b", "name": "Llama 3.2 3B", "owned_by": "ollama"},
    {"id": "nomic-embed-text:latest", "name": "Nomic Embed Text", "owned_by": "ollama"},
]


def env_float(name: str, default: float = 0.0, minimum: float | None = None) -> float:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        sys.exit(f"{name}={raw!r} is not a number")
    if minimum is not None and not value >= minimum:  # also refuses nan
        sys.exit(f"{name}={raw!r} must be {minimum:g} or more")
    return value


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def log(level: str, msg: str, **fields: Any) -> None:
    record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
              "level": level, "msg": msg, "version": VERSION, **fields}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- database

def db_connect():
    import psycopg2  # imported late: --version and /health work without it

    return psycopg2.connect(
        host=os.environ.get("OPENWEBUI_DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("OPENWEBUI_DB_PORT", "5432")),
        user=os.environ.get("POSTGRES_USER", "openwebui_user"),
        password=os.environ.get("POSTGRES_PASSWORD", ""),
        dbname=os.environ.get("OPENWEBUI_DB_NAME", "openwebui"),
        connect_timeout=5,
        application_name=f"erni-ki-{VERSION}",
    )


class Database:
    """A small thread-safe pool: one connection per thread, reopened when broken."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = db_connect()
            conn.autocommit = True
            self._local.conn = conn
        return conn

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._conn().cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        except Exception:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
            self._local.conn = None
            raise


# --------------------------------------------------------------------------- migrations

def migration_files() -> list[tuple[int, str, Path, Path]]:
    found = []
    for up in sorted(MIGRATIONS_DIR.glob("*.up.sql")):
        m = re.match(r"^(\d+)_(.+)\.up\.sql$", up.name)
        if not m:
            continue
        down = up.with_name(up.name.replace(".up.sql", ".down.sql"))
        if not down.exists():
            sys.exit(f"migration {up.name} has no down migration {down.name}")
        found.append((int(m.group(1)), m.group(2), up, down))
    return found


def knob_migration() -> tuple[int, str, str, str]:
    """The knob's migration, numbered after the release (1.2.3 is 9010203), as each release's own
    migrations are: one applied by an earlier release is never taken for this one's. Adding a
    column is harmless to the serving release (it names the columns it reads and writes)."""
    m = re.match(r"^(\d{1,2})\.(\d{1,2})\.(\d{1,2})", VERSION)
    version = 9_000_000 + (int(m[1]) * 10_000 + int(m[2]) * 100 + int(m[3]) if m else 0)
    return (version, "reshape_chats",
            "ALTER TABLE chats ADD COLUMN IF NOT EXISTS model_ref text",
            "ALTER TABLE chats DROP COLUMN IF EXISTS model_ref")


def migration_knob() -> str:
    """'' (no knob migration), 'pass', 'damage' or 'clean' for this process's environment."""
    mode = os.environ.get("MIGRATION_FAIL", "").strip().lower()
    if mode in ("", "0", "false", "no", "off"):
        return ""
    if mode not in ("1", "true", "yes", "on", "clean"):
        sys.exit(f"MIGRATION_FAIL={mode!r}: use 0, 1 or clean")
    where = os.environ.get("MIGRATION_FAIL_IN", "").strip()
    if where and where != os.environ.get("ENVIRONMENT", ""):
        return "pass"
    return "clean" if mode == "clean" else "damage"


def migrate(argv: list[str]) -> int:
    conn = db_connect()
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version integer PRIMARY KEY, name text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())")
        conn.commit()
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        applied = {row[0] for row in cur.fetchall()}
    # (version, name, up SQL, down SQL)
    files: list[tuple[int, str, str, str]] = [
        (version, name, up.read_text(), down.read_text()) for version, name, up, down in migration_files()]
    knob = migration_knob()
    knob_version = knob_migration()[0]
    if knob:
        files.append(knob_migration())

    if argv[:1] == ["--status"]:
        print(json.dumps({"applied": sorted(applied),
                          "available": [v for v, *_ in files],
                          "pending": [v for v, *_ in files if v not in applied]}))
        return 0

    if argv[:1] == ["--down-to"]:
        if len(argv) < 2 or not argv[1].isdigit():
            print("migrate --down-to needs a version number", file=sys.stderr)
            return 2
        target = int(argv[1])
        done = []
        for version, _name, _up, down in reversed(files):
            if version in applied and version > target:
                with conn.cursor() as cur:
                    cur.execute(down)
                    cur.execute("DELETE FROM schema_migrations WHERE version = %s", (version,))
                conn.commit()
                done.append(version)
        print(json.dumps({"direction": "down", "reverted": done, "changed": bool(done)}))
        return 0

    if argv:
        print(f"migrate: unknown argument {argv[0]!r} (use --status or --down-to N)", file=sys.stderr)
        return 2

    # Each migration in its own transaction, with a lock timeout: a migration that cannot get
    # its locks fails instead of queueing every request behind it.
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = '5s'")
    conn.commit()
    done = []
    for version, name, up, _down in files:
        if version in applied:
            continue
        if version == knob_version and knob in ("damage", "clean"):
            return knob_failure(conn, knob, done)
        with conn.cursor() as cur:
            cur.execute(up)
            cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name))
        conn.commit()
        done.append(version)
    print(json.dumps({"direction": "up", "applied": done, "changed": bool(done)}))
    return 0


def knob_failure(conn: Any, knob: str, done: list[int]) -> int:
    if knob == "damage":
        # Not transactional and broken half-way: the kind only a snapshot taken before it undoes.
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("UPDATE chats SET title = 'lost in migration' WHERE true")
            cur.execute("DELETE FROM messages WHERE true")
    else:
        # The same damage inside the migration's transaction: the failure rolls it back.
        try:
            with conn.cursor() as cur:
                cur.execute("UPDATE chats SET title = 'lost in migration' WHERE true")
                cur.execute("SELECT model_ref FROM chats LIMIT 1")
        except Exception:  # the failure is the point; it is reported below
            conn.rollback()
    version, name, _up, _down = knob_migration()
    print(f"migration {version}_{name} failed: column chats.model_ref does not exist", file=sys.stderr)
    print(json.dumps({"direction": "up", "applied": done, "failed": version, "changed": bool(done)}))
    return 1


# --------------------------------------------------------------------------- auth

def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_jwt(token: str, secret: str) -> dict[str, Any] | None:
    """HS256 JSON Web Token check: signature, then expiry when present."""
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
        signed = f"{header_b64}.{payload_b64}".encode()
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, b64url_decode(sig_b64)):
            return None
        header = json.loads(b64url_decode(header_b64))
        if header.get("alg") != "HS256":
            return None
        claims = json.loads(b64url_decode(payload_b64))
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    if "exp" in claims and float(claims["exp"]) < time.time():
        return None
    return claims


def validate_alert_payload(payload: Any) -> str | None:
    """Alertmanager webhook format version 4, as the real receiver checks it."""
    if not isinstance(payload, dict):
        return "payload must be a JSON object"
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        return "payload needs a non-empty 'alerts' list"
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            return f"alerts[{i}] must be an object"
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not labels.get("alertname"):
            return f"alerts[{i}].labels.alertname is required"
        if alert.get("status") not in ("firing", "resolved"):
            return f"alerts[{i}].status must be 'firing' or 'resolved'"
        severity = labels.get("severity")
        if severity is not None and severity not in SEVERITIES:
            return f"alerts[{i}].labels.severity must be one of {', '.join(SEVERITIES)}"
    return None


# --------------------------------------------------------------------------- metrics

class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes
        # `version` tells two releases apart that ran on the same colour (same port) one after
        # the other: a release's soak must not count its predecessor's errors.
        self.requests = Counter("http_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status", "version"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency",
                                 ["route", "version"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.webhook = Histogram("webhook_processing_seconds", "Webhook processing time",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(.001, .005, .01, .05, .1, .25, .5, 1, 2.5))
        self.alerts = Counter("webhook_alerts_total", "Alerts received by the webhook receiver",
                              ["endpoint", "alertname", "status"], registry=self.registry)
        self.db_latency = Histogram("db_query_duration_seconds", "Database query time",
                                    ["query"], registry=self.registry,
                                    buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1))
        # The routes' series exist from the start, at zero (Prometheus' advice for labelled
        # metrics): a rule on 5xx answers is not "dead" before a request has failed, and a
        # release's first requests already make a rate, one scrape after they happen.
        for route, method in (("/", "GET"), ("/api/v1/chats", "GET"), ("/api/v1/models", "GET"),
                              ("/api/v1/chats", "POST"), ("/api/v1/chats/{id}", "GET"),
                              ("/api/v1/chats/{id}/messages", "POST"), ("/webhook/critical", "POST")):
            for status in ("200", "500"):
                self.requests.labels(route, method, status, VERSION)
            self.latency.labels(route, VERSION)
        info = Gauge("erni_ki_build_info", "Release that this process serves",
                     ["version", "colour"], registry=self.registry)
        info.labels(VERSION, os.environ.get("COLOUR", "")).set(1)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --------------------------------------------------------------------------- HTTP

class App:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.error_rate = env_float("ERROR_RATE")
        self.extra_latency = env_float("EXTRA_LATENCY_MS") / 1000.0
        self.warmup_latency = env_float("WARMUP_LATENCY_MS", minimum=0) / 1000.0
        self.warmup_seconds = env_float("WARMUP_SECONDS", minimum=0)
        self.startup_delay = env_float("STARTUP_DELAY_S")
        self.health_fail = env_flag("HEALTH_FAIL")
        self.webhook_reject_all = env_flag("WEBHOOK_REJECT_ALL")
        self.webhook_secret = os.environ.get("ALERTMANAGER_WEBHOOK_SECRET", "")
        self.jwt_secret = os.environ.get("JWT_SECRET", "")
        self.db = Database()
        self.metrics = Metrics()

    def injected_latency(self) -> float:
        """Seconds to hold a request on the user-facing routes: EXTRA_LATENCY_MS always, plus
        WARMUP_LATENCY_MS while the process is younger than WARMUP_SECONDS."""
        delay = self.extra_latency
        if self.warmup_latency and time.monotonic() - self.started < self.warmup_seconds:
            delay += self.warmup_latency
        return delay


class Server(ThreadingHTTPServer):
    """A thread per connection, with a listen backlog a burst of new connections does not
    overflow (socketserver's default of 5 makes the kernel drop SYNs; clients then wait seconds
    for the retry)."""

    request_queue_size = 128
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    server_version = "erni-ki"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # headers and body are separate writes: on a kept-alive connection Nagle's algorithm would
    # wait for the client's delayed ACK (~40 ms) before sending the body
    disable_nagle_algorithm = True
    app: App

    # quiet the default stderr access log; we log JSON ourselves
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    # ------------------------------------------------------------------ plumbing
    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self._status = status

    def read_body(self) -> bytes:
        return self._body

    def claims(self) -> dict[str, Any] | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not self.app.jwt_secret:
            return None
        return verify_jwt(auth[7:].strip(), self.app.jwt_secret)

    def dispatch(self, method: str) -> None:
        start = time.monotonic()
        self._status = 500
        # The body is read before any answer, whether a route wants it or not: an answer that
        # left it unread (a 401 to a POST) would leave its bytes in a kept-alive connection,
        # where they would be parsed as the next request.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self.send_json(400, {"detail": "bad Content-Length"})
            return
        self._body = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?", 1)[0]
        route = path
        try:
            route = self.route(method, path)
        except Exception as exc:  # the request fails, the server does not
            log("ERROR", "request failed", method=method, path=path, error=repr(exc))
            if not self.wfile.closed:
                self.send_json(500, {"detail": "internal error"})
        finally:
            elapsed = time.monotonic() - start
            self.app.metrics.requests.labels(route, method, str(self._status), VERSION).inc()
            self.app.metrics.latency.labels(route, VERSION).observe(elapsed)
            if route != "/metrics":
                log("ERROR" if self._status >= 500 else "INFO", "request", method=method,
                    path=path, status=self._status, ms=round(elapsed * 1000, 2))

    def route(self, method: str, path: str) -> str:
        app = self.app
        if path == "/health":
            if app.health_fail:
                self.send_json(503, {"status": False, "detail": "health check failing"})
            elif time.monotonic() - app.started < app.startup_delay:
                self.send_json(503, {"status": False, "detail": "starting"})
            else:
                self.send_json(200, {"status": True})
            return path
        if path == "/health/db":
            t0 = time.monotonic()
            app.db.query("SELECT 1")
            app.metrics.db_latency.labels("select_1").observe(time.monotonic() - t0)
            self.send_json(200, {"status": True})
            return path
        if path == "/metrics":
            data = app.metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self._status = 200
            return path
        if path == "/api/version":
            self.send_json(200, {"version": VERSION})
            return path
        if path.startswith("/webhook"):
            return self.webhook(method, path)
        # Fault knobs act on what users use (the page and the API); the status routes above
        # stay truthful so monitoring can see the faults.
        delay = app.injected_latency()
        if delay:
            time.sleep(delay)
        if app.error_rate and random.random() < app.error_rate:
            self.send_json(500, {"detail": "injected error"})
            return self.api_route(path) if path.startswith("/api/") else "/"
        if path == "/" and method == "GET":
            page = (f"<!doctype html><html><head><title>ERNI-KI</title></head><body>"
                    f"<h1>ERNI-KI</h1><p>release {VERSION}</p></body></html>").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            self._status = 200
            return "/"
        if path == "/api/v1/auths/signin" and method == "POST":
            return self.signin()
        if path.startswith("/api/"):
            return self.api(method, path)
        self.send_json(404, {"detail": "Not Found"})
        return "other"

    def signin(self) -> str:
        """A token for a valid bearer token, set as a Secure, HttpOnly session cookie."""
        route = "/api/v1/auths/signin"
        claims = self.claims()
        if claims is None:
            self.send_json(401, {"detail": "Invalid credentials"})
            return route
        token = self.headers.get("Authorization", "")[7:].strip()
        self.send_json(200, {"token_type": "Bearer", "role": claims.get("role")},
                       headers={"Set-Cookie": f"token={token}; Path=/; Secure; HttpOnly; SameSite=Lax"})
        return route

    @staticmethod
    def api_route(path: str) -> str:
        return re.sub(r"/chats/[^/]+", "/chats/{id}", path)

    # ------------------------------------------------------------------ API
    def api(self, method: str, path: str) -> str:
        route = self.api_route(path)
        claims = self.claims()
        if claims is None:
            self.send_json(401, {"detail": "Not authenticated"})
            return route
        db = self.app.db
        if path == "/api/v1/models" and method == "GET":
            self.send_json(200, {"data": MODELS, "models": MODELS})
        elif path == "/api/v1/users" and method == "GET":
            if claims.get("role") != "admin":
                self.send_json(403, {"detail": "admin only"})
            else:
                self.send_json(200, {"users": [{"id": claims.get("sub"), "role": "admin"}]})
        elif path == "/api/v1/chats" and method == "GET":
            t0 = time.monotonic()
            rows = db.query("SELECT id, title, model, created_at FROM chats ORDER BY id DESC LIMIT 50")
            total = db.query("SELECT count(*) FROM chats")[0][0]
            self.app.metrics.db_latency.labels("list_chats").observe(time.monotonic() - t0)
            self.send_json(200, {"total": total, "items": [
                {"id": r[0], "title": r[1], "model": r[2], "created_at": r[3].isoformat()}
                for r in rows]})
        elif path in ("/api/v1/chats", "/api/v1/chats/new") and method == "POST":
            body = self.json_body()
            if body is None:
                return route
            chat = body.get("chat", body) if isinstance(body, dict) else {}
            title = str(chat.get("title") or "New Chat")[:200]
            model = str(chat.get("model") or MODELS[0]["id"])[:100]
            row = db.query("INSERT INTO chats (title, model, owner) VALUES (%s, %s, %s) "
                           "RETURNING id, created_at", (title, model, str(claims.get("sub", ""))))[0]
            self.send_json(200, {"id": row[0], "title": title, "model": model,
                                 "created_at": row[1].isoformat()})
        elif (m := re.fullmatch(r"/api/v1/chats/(\d+)/messages", path)) and method == "POST":
            body = self.json_body()
            if body is None:
                return route
            content = str(body.get("content", "")) if isinstance(body, dict) else ""
            if not content:
                self.send_json(400, {"detail": "content is required"})
                return route
            chat_id = int(m.group(1))
            if not db.query("SELECT 1 FROM chats WHERE id = %s", (chat_id,)):
                self.send_json(404, {"detail": f"chat {chat_id} not found"})
                return route
            user = db.query("INSERT INTO messages (chat_id, role, content) VALUES (%s, 'user', %s) "
                            "RETURNING id", (chat_id, content))[0][0]
            reply = f"echo: {content}"
            db.query("INSERT INTO messages (chat_id, role, content) VALUES (%s, 'assistant', %s)",
                     (chat_id, reply))
            self.send_json(200, {"id": user, "chat_id": chat_id, "role": "user", "content": content,
                                 "reply": {"role": "assistant", "content": reply}})
        elif (m := re.fullmatch(r"/api/v1/chats/(\d+)", path)) and method == "GET":
            chat_id = int(m.group(1))
            chat = db.query("SELECT id, title, model FROM chats WHERE id = %s", (chat_id,))
            if not chat:
                self.send_json(404, {"detail": f"chat {chat_id} not found"})
                return route
            msgs = db.query("SELECT role, content FROM messages WHERE chat_id = %s ORDER BY id",
                            (chat_id,))
            self.send_json(200, {"id": chat[0][0], "title": chat[0][1], "model": chat[0][2],
                                 "messages": [{"role": r, "content": c} for r, c in msgs]})
        else:
            self.send_json(404, {"detail": "Not Found"})
        return route

    def json_body(self) -> Any:
        raw = self.read_body()
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self.send_json(400, {"detail": "invalid JSON"})
            return None

    # ------------------------------------------------------------------ webhooks
    def webhook(self, method: str, path: str) -> str:
        m = re.fullmatch(r"/webhook(?:/([a-z]+))?", path)
        endpoint = (m.group(1) or "") if m else None
        if endpoint not in WEBHOOK_ENDPOINTS:
            self.send_json(404, {"detail": "Not Found"})
            return "/webhook/other"
        route = "/webhook" + (f"/{endpoint}" if endpoint else "")
        if method != "POST":
            self.send_json(405, {"error": "Method not allowed"})
            return route
        t0 = time.monotonic()
        raw = self.read_body()
        delay = self.app.injected_latency()
        if delay:
            time.sleep(delay)
        if self.app.webhook_reject_all or not self.webhook_authorised(raw):
            self.send_json(401, {"error": "Unauthorized"})
            return route
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError:
            self.send_json(400, {"error": "Invalid JSON"})
            return route
        problem = validate_alert_payload(payload)
        if problem:
            self.send_json(400, {"error": "Invalid payload", "detail": problem})
            return route
        for alert in payload["alerts"]:
            self.app.metrics.alerts.labels(endpoint or "generic", alert["labels"]["alertname"],
                                           alert["status"]).inc()
            log("INFO", "alert received", endpoint=endpoint or "generic",
                alertname=alert["labels"]["alertname"], status=alert["status"])
        elapsed = time.monotonic() - t0
        self.app.metrics.webhook.labels(endpoint or "generic").observe(elapsed)
        self.send_json(200, {"status": "success", "processed": len(payload["alerts"]),
                             "processing_ms": round(elapsed * 1000, 3)})
        return route

    def webhook_authorised(self, raw: bytes) -> bool:
        secret = self.app.webhook_secret
        if not secret:
            return False
        signature = self.headers.get("X-Signature", "")
        if signature:
            expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected, signature.strip().lower())
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return hmac.compare_digest(auth[7:].strip().encode(), secret.encode())
        return False


def serve() -> int:
    if env_flag("CRASH_ON_START"):
        log("ERROR", "crashing on start (CRASH_ON_START is set)")
        return 1
    secret = os.environ.get("ALERTMANAGER_WEBHOOK_SECRET", "")
    if secret and len(secret) < 16:
        # the real receiver refuses to start with a short secret
        log("ERROR", "ALERTMANAGER_WEBHOOK_SECRET is shorter than 16 characters")
        return 1
    Handler.app = App()
    bind = os.environ.get("BIND", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    server = Server((bind, port), Handler)
    # As PID 1 in a container, SIGTERM is ignored unless handled: stop cleanly so
    # `docker stop` takes milliseconds, not its 10 s kill timeout.
    signal.signal(signal.SIGTERM,
                  lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log("INFO", "serving", bind=bind, port=port, colour=os.environ.get("COLOUR", ""))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    log("INFO", "stopped")
    return 0


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "serve"
    if cmd == "--version":
        print(f"erni-ki {VERSION}")
        return 0
    if cmd == "serve":
        return serve()
    if cmd == "migrate":
        return migrate(argv[1:])
    print(f"unknown command {cmd!r}: use serve, migrate or --version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
