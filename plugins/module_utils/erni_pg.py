# -*- coding: utf-8 -*-
# erni-deploy: PostgreSQL backups (pg_backup): dump, verify by restoring, restore, fingerprint, prune.
"""PostgreSQL backups that are proven, not assumed.

A backup here is a custom-format `pg_dump` (`NAME.dump`) with a metadata file beside it
(`NAME.dump.json`): its sha256, size, timings, the server and client versions, and the
*fingerprint* of the source taken in the very snapshot the dump saw. Verifying a backup means
restoring it into a scratch database and comparing that database's fingerprint with the one
recorded at dump time, table by table.

The fingerprint of a database: for every user table (relkind 'r' in every schema but
pg_catalog, information_schema and the toast/temp schemas; tables that belong to an
extension are left out, since pg_dump does not dump their rows), the row count and a content
checksum: the sum, as numeric, of `hashtextextended(row::text, 0)` over all rows. A sum does
not depend on row order (a restore writes rows in another physical order), counts duplicates,
and cannot overflow. Row texts depend on a few session settings, so every fingerprint query
fixes them first (TimeZone UTC, DateStyle ISO, IntervalStyle postgres, extra_float_digits 1,
bytea_output hex). The per-table results are run as dynamic SQL inside one SELECT through
query_to_xml(), so that one statement, in one snapshot, fingerprints the whole database.

The same code drives the client tools on this host over TCP or, in container mode, inside
a container through `docker exec`; the password always travels as PGPASSWORD in the
environment (`docker exec -e PGPASSWORD` copies it from ours), never on a command line.
Every external command runs under a watchdog: on timeout its processes are killed and our
server sessions (found by a per-run application_name) are terminated, so nothing keeps
running inside a container or holds locks on the server.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

DUMP_SUFFIX = ".dump"
META_SUFFIX = ".json"
PARTIAL_MARK = ".partial-"
CHUNK = 1024 * 1024
PGDMP_MAGIC = b"PGDMP"
SCRATCH_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
NAME_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
MASK = "********"
# Session settings that make row texts, and so checksums, independent of the server's defaults.
SESSION_SETTINGS = ("SET TimeZone = 'UTC';\nSET DateStyle = 'ISO, YMD';\nSET IntervalStyle = 'postgres';\n"
                    "SET extra_float_digits = 1;\nSET bytea_output = 'hex';\n")
FINGERPRINT_SQL = r"""
SELECT coalesce(jsonb_agg(jsonb_build_object(
         'schema', t.nspname, 'name', t.relname,
         'x', query_to_xml(format(
                'SELECT count(*) AS n, coalesce(sum(hashtextextended(r::text, 0)::numeric), 0) AS s FROM %I.%I AS r',
                t.nspname, t.relname), false, true, '')::text)
       ORDER BY t.nspname, t.relname), '[]'::jsonb)
FROM (SELECT n.nspname, c.relname
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND c.relpersistence <> 't'
         AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                            AND d.deptype = 'e')) AS t;
"""
SERVER_SQL = """
SELECT jsonb_build_object('server_version', current_setting('server_version'),
                          'server_version_num', current_setting('server_version_num')::int,
                          'database_bytes', pg_database_size(current_database()),
                          'encoding', pg_encoding_to_char(d.encoding))
  FROM pg_catalog.pg_database d WHERE d.datname = current_database();
"""
_XML_N = re.compile(r"<n>(-?\d+)</n>")
_XML_S = re.compile(r"<s>(-?\d+)</s>")


class PgBackupError(Exception):
    """A failure whose message names the bad value; `result` is returned with it."""

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.result = result


# ------------------------------------------------------------------ time and files

def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        try:
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except (TypeError, ValueError):
            return None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def metadata_path(dump_path: str) -> str:
    return dump_path + META_SUFFIX


def read_metadata(dump_path: str) -> dict[str, Any] | None:
    path = metadata_path(dump_path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PgBackupError(f"metadata file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise PgBackupError(f"metadata file {path} does not hold a JSON object")
    return data


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Write to a temporary name in the same directory, fsync, rename: never a half-written file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_dir(path: str, writable: bool) -> str:
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise PgBackupError(f"backup_dir {path} does not exist or is not a directory; create it first "
                            f"(on its own volume: a missing mount must not fill the root disk)")
    if writable and not os.access(path, os.W_OK | os.X_OK):
        raise PgBackupError(f"backup_dir {path} is not writable by uid {os.getuid()}")
    return path


@dataclass
class Backup:
    path: str
    time: datetime
    metadata: dict[str, Any] | None
    mtime_ns: int = 0

    @property
    def verified(self) -> bool:
        return bool(self.metadata and self.metadata.get("verified") is True)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.path, "time": iso(self.time), "verified": self.verified,
                "has_metadata": self.metadata is not None}


def list_backups(directory: str, name_prefix: str | None) -> list[Backup]:
    """Complete backups (NAME.dump, not partial or hidden) in directory, newest first.

    With name_prefix, only files named PREFIX-*.dump. A backup's time is the start recorded in
    its metadata, or the file's modification time when it has none.
    """
    found = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or not name.endswith(DUMP_SUFFIX):
            continue
        if name_prefix and not name.startswith(name_prefix + "-"):
            continue
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        try:
            meta = read_metadata(path)
        except PgBackupError:
            meta = None
        st = os.stat(path)
        when = parse_iso(meta.get("started", "")) if meta else None
        if when is None:
            when = datetime.fromtimestamp(st.st_mtime, timezone.utc)
        found.append(Backup(path, when, meta, st.st_mtime_ns))
    found.sort(key=lambda b: (b.time, b.mtime_ns, b.path), reverse=True)
    return found


def resolve_backup(backup_file: str | None, backup_dir: str | None, name_prefix: str | None) -> str:
    if backup_file:
        path = os.path.abspath(backup_file)
        if not os.path.isfile(path):
            raise PgBackupError(f"backup file {path} does not exist")
        return path
    if not backup_dir:
        raise PgBackupError("give backup_file, or backup_dir to use its newest backup")
    directory = check_dir(backup_dir, writable=False)
    backups = list_backups(directory, name_prefix)
    if not backups:
        pattern = f"{name_prefix}-*{DUMP_SUFFIX}" if name_prefix else f"*{DUMP_SUFFIX}"
        raise PgBackupError(f"no backup ({pattern}) in {directory}")
    return backups[0].path


# ------------------------------------------------------------------ fingerprints

@dataclass
class TableSum:
    schema: str
    name: str
    rows: int
    checksum: str

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "checksum": self.checksum}


@dataclass
class Fingerprint:
    tables: list[TableSum]
    taken_at: str = ""

    @property
    def digest(self) -> str:
        text = json.dumps([t.as_dict() for t in self.tables], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def by_table(self) -> dict[str, dict[str, Any]]:
        return {t.table: t.as_dict() for t in self.tables}

    def as_dict(self) -> dict[str, Any]:
        return {"tables": [t.as_dict() for t in self.tables], "table_count": len(self.tables),
                "rows": sum(t.rows for t in self.tables), "digest": self.digest, "taken_at": self.taken_at}


def parse_fingerprint(text: str) -> Fingerprint:
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise PgBackupError(f"unexpected answer to the fingerprint query: {text[:200]!r}") from exc
    tables = []
    for e in entries:
        n, s = _XML_N.search(e["x"]), _XML_S.search(e["x"])
        if not n or not s:
            raise PgBackupError(f"unexpected fingerprint of {e['schema']}.{e['name']}: {e['x'][:200]!r}")
        tables.append(TableSum(e["schema"], e["name"], int(n.group(1)), s.group(1)))
    return Fingerprint(tables, iso(utc_now()))


def compare_fingerprints(reference: dict[str, dict[str, Any]],
                         restored: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-table comparison (reference = source side) and the names of the tables that differ."""
    rows, differ = [], []
    for table in sorted(set(reference) | set(restored)):
        ref, got = reference.get(table), restored.get(table)
        if ref is None:
            status = "extra"
        elif got is None:
            status = "missing"
        elif ref["rows"] != got["rows"]:
            status = "rows differ"
        elif str(ref["checksum"]) != str(got["checksum"]):
            status = "checksum differs"
        else:
            status = "match"
        match = status == "match"
        rows.append({"table": table, "rows_source": ref["rows"] if ref else None,
                     "rows_restored": got["rows"] if got else None,
                     "checksum_match": match, "status": status})
        if not match:
            differ.append(table)
    return rows, differ


def compare_with_backup(meta: dict[str, Any], fingerprint: Fingerprint) -> tuple[list[dict[str, Any]], list[str]]:
    """compare_fingerprints of the fingerprint in a backup's metadata (the reference) and a database's."""
    return compare_fingerprints({t["table"]: t for t in meta["fingerprint"]["tables"]}, fingerprint.by_table())


def describe_differences(tables: list[dict[str, Any]]) -> str:
    parts = []
    for t in tables:
        if t["status"] == "match":
            continue
        if t["status"] == "missing":
            parts.append(f"{t['table']} (missing after restore)")
        elif t["status"] == "extra":
            parts.append(f"{t['table']} (not in the source)")
        elif t["status"] == "rows differ":
            parts.append(f"{t['table']} ({t['rows_source']} rows in the source, {t['rows_restored']} restored)")
        else:
            parts.append(f"{t['table']} (same {t['rows_source']} rows, checksum differs)")
    return ", ".join(parts)


# ------------------------------------------------------------------ running the client tools

def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Watchdog:
    """Kills the registered processes and ends our server sessions when time is up."""

    def __init__(self, seconds: float, on_fire: Any) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.fired = False
        self._on_fire = on_fire
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.kill()
        with contextlib.suppress(Exception):
            self._on_fire()

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


@dataclass
class PgConnection:
    """Where PostgreSQL is and how its client tools are run (here over TCP, or in a container)."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str | None = None
    password: str | None = None
    database: str | None = None
    mode: str = "tcp"
    container: str | None = None
    docker: str = "docker"
    bin_dir: str | None = None
    connect_timeout: int = 10
    timeout: float = 3600.0
    app_name: str = field(default_factory=lambda: "erni-deploy-pg_backup-" + secrets.token_hex(6))
    _checked_container: bool = False

    # --- naming, for messages
    @property
    def who(self) -> str:
        if self.user:
            return self.user
        with contextlib.suppress(Exception):
            return getpass.getuser()
        return "the current user"  # pragma: no cover - getuser works where modules run

    @property
    def where(self) -> str:
        place = f"{self.host}:{self.port}"
        return f"{place} (inside container {self.container})" if self.mode == "container" else place

    def redact(self, text: str) -> str:
        return text.replace(self.password, MASK) if self.password else text

    # --- commands
    def tool(self, name: str) -> str:
        if self.bin_dir:
            path = os.path.join(self.bin_dir, name)
            if self.mode == "tcp" and not os.access(path, os.X_OK):
                raise PgBackupError(f"{name} not found at {path}: check bin_dir")
            return path
        if self.mode == "container":
            return name
        found = shutil.which(name)
        if found:
            return found
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                            key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")])
        if candidates:
            return candidates[-1]
        raise PgBackupError(f"{name} not found on PATH nor in /usr/lib/postgresql/*/bin; install the "
                            f"PostgreSQL client or set bin_dir")

    def conn_args(self, database: str | None) -> list[str]:
        args = ["-h", self.host, "-p", str(self.port)]
        if self.user:
            args += ["-U", self.user]
        return [*args, "-d", database or self.database or "postgres"]

    def command(self, tool: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and environment for one client tool; the password only ever in the environment."""
        pg_env = {"PGCONNECT_TIMEOUT": str(self.connect_timeout), "PGAPPNAME": self.app_name}
        if self.password:
            pg_env["PGPASSWORD"] = self.password
        env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGAPPNAME")}
        env.update(pg_env)
        if self.mode == "tcp":
            return [self.tool(tool), *args], env
        argv = [self.docker, "exec", "-i"]
        for name in sorted(pg_env):
            argv += ["-e", name]        # the value comes from our environment, not from argv
        return [*argv, str(self.container), self.tool(tool), *args], env

    def check_container(self) -> None:
        if self.mode != "container" or self._checked_container:
            return
        try:
            proc = subprocess.run([self.docker, "inspect", "--type", "container", "--format",
                                   "{{.State.Running}}", str(self.container)],
                                  capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError as exc:
            raise PgBackupError(f"docker CLI {self.docker!r} not found: container mode needs it") from exc
        except subprocess.TimeoutExpired as exc:
            raise PgBackupError(f"docker did not answer within 30 s about container {self.container}") from exc
        if proc.returncode != 0:
            raise PgBackupError(f"container {self.container!r} not found: {proc.stderr.strip()}")
        if proc.stdout.strip() != "true":
            raise PgBackupError(f"container {self.container!r} is not running")
        self._checked_container = True

    def error(self, what: str, rc: int, stderr: str, database: str | None) -> PgBackupError:
        text = self.redact(" ".join(line.strip() for line in stderr.strip().splitlines() if line.strip()))
        if self.mode == "container" and (rc in (125, 126, 127) or text.startswith("Error response from daemon")):
            return PgBackupError(f"docker exec in container {self.container} failed ({what}): {text}")
        conn_failed = "connection to server" in text or (what == "psql" and rc == 2)
        if conn_failed:
            reason = re.sub(r"^(psql|pg_dump|pg_restore): error: ", "", text)
            return PgBackupError(f"cannot connect to PostgreSQL at {self.where} as {self.who}: {reason}")
        db = database or self.database or "postgres"
        return PgBackupError(f"{what} failed on database {db} at {self.where} (exit {rc}): {text or 'no message'}")

    def terminate_sessions(self) -> None:
        """End every server session of this run (after a timeout or an interruption)."""
        sql = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608 - our own hex token
               f"WHERE application_name = '{self.app_name}' AND pid <> pg_backend_pid();")
        argv, env = self.command("psql", ["-X", "-q", "-A", "-t", *self.conn_args(None)])
        with contextlib.suppress(Exception):
            subprocess.run(argv, input=sql.encode(), env=env, capture_output=True, timeout=30, check=False)

    @contextlib.contextmanager
    def watchdog(self, what: str, seconds: float | None = None) -> Iterator[_Watchdog]:
        """Bound everything started inside by `seconds` (default: timeout); a timeout is an error."""
        limit = self.timeout if seconds is None else seconds
        dog = _Watchdog(limit, self.terminate_sessions)
        with dog:
            try:
                yield dog
            except BaseException as exc:
                running = any(p.poll() is None for p in dog.procs)
                _reap(dog.procs, kill=True)
                if running and not dog.fired:
                    # killing `docker exec` leaves its process in the container: end it from the server side
                    self.terminate_sessions()
                if dog.fired and isinstance(exc, Exception):
                    raise _timeout_error(what, limit) from exc
                raise
            _reap(dog.procs, kill=False)
        if dog.fired:
            raise _timeout_error(what, limit)

    def spawn(self, dog: _Watchdog, tool: str, args: list[str], stdin: Any = None, stdout: Any = None,
              stderr: Any = None) -> subprocess.Popen[bytes]:
        self.check_container()
        argv, env = self.command(tool, args)
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env)
        except OSError as exc:
            raise PgBackupError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        dog.procs.append(proc)
        return proc

    def psql(self, sql: str, database: str | None = None, seconds: float | None = None) -> str:
        """Run SQL with psql (unaligned, tuples only, stopping at the first error); its output."""
        args = ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *self.conn_args(database)]
        with self.watchdog("psql", seconds) as dog, tempfile.TemporaryFile() as err:
            proc = self.spawn(dog, "psql", args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            try:
                out, _ = proc.communicate((SESSION_SETTINGS + sql).encode())
            except BrokenPipeError:  # psql gave up before reading everything; its exit code says why
                out = b""
                proc.wait()
            stderr = _read(err)
        if proc.returncode != 0:
            raise self.error("psql", proc.returncode, stderr, database)
        return out.decode()

    def query_json(self, sql: str, database: str | None = None) -> Any:
        text = self.psql(sql, database).strip()
        try:
            return json.loads(text)
        except ValueError as exc:
            raise PgBackupError(f"unexpected answer from PostgreSQL at {self.where}: {text[:200]!r}") from exc

    def server_info(self, database: str | None = None) -> dict[str, Any]:
        """Versions, size and encoding of the database; the first contact, so it names connection errors."""
        info = self.query_json(SERVER_SQL, database)
        if not isinstance(info, dict):  # pragma: no cover - current_database() always exists
            raise PgBackupError(f"database {database or self.database} not found at {self.where}")
        return info

    def fingerprint(self, database: str | None = None) -> Fingerprint:
        return parse_fingerprint(self.psql(FINGERPRINT_SQL, database).strip())

    def tool_version(self, tool: str) -> str:
        with self.watchdog(tool, 60) as dog, tempfile.TemporaryFile() as err:
            proc = self.spawn(dog, tool, ["--version"], stdout=subprocess.PIPE, stderr=err)
            out, _ = proc.communicate()
            stderr = _read(err)
        if proc.returncode != 0:
            raise self.error(tool, proc.returncode, stderr, None)
        text = out.decode().strip()
        m = re.search(r"\(PostgreSQL\)\s+(\S+)", text)
        return m.group(1) if m else text

    def archive_input(self, path: str) -> tuple[list[str], IO[bytes] | None]:
        """How pg_restore reads an archive: by name here, streamed on stdin into a container."""
        if self.mode == "tcp":
            return [path], None
        return [], open(path, "rb")  # closed by the caller

    def create_database(self, name: str, encoding: str | None, maintenance_db: str | None) -> None:
        sql = f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"
        if encoding and re.match(r"^[A-Za-z0-9_]+$", encoding):
            sql += f" ENCODING '{encoding}'"
        self.psql(sql + ";\n", maintenance_db)

    def drop_database(self, name: str, maintenance_db: str | None, version_num: int) -> None:
        force = " WITH (FORCE)" if version_num >= 130000 else ""
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)}{force};\n", maintenance_db, seconds=120)


def _read(fh: IO[bytes]) -> str:
    fh.seek(0)
    return fh.read().decode(errors="replace")


def _reap(procs: list[subprocess.Popen[bytes]], kill: bool) -> None:
    for p in procs:
        if kill:
            with contextlib.suppress(OSError):
                p.kill()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a client tool that ignores its pipes closing
            p.kill()
            p.wait(timeout=30)


def _timeout_error(what: str, limit: float) -> PgBackupError:
    return PgBackupError(f"{what} did not finish within {limit:g} s (timeout); it was stopped and its "
                         f"server sessions were ended")


def quote_table(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


# ------------------------------------------------------------------ interruption

class Interrupted(BaseException):
    """SIGTERM or SIGHUP while working: unwinds through every cleanup (partial files, scratch databases)."""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception, so `finally` blocks clean up; restores the handlers."""
    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(f"interrupted by signal {signum}")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------ dump

class SnapshotSession:
    """A psql session holding a REPEATABLE READ, READ ONLY transaction and exporting its snapshot.

    pg_dump --snapshot dumps exactly what this transaction sees, and the fingerprint is queried
    in the transaction itself: the recorded fingerprint describes the dump's very data.
    """

    def __init__(self, conn: PgConnection, dog: _Watchdog, database: str) -> None:
        self.conn, self.database = conn, database
        self._err = tempfile.TemporaryFile()
        args = ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *conn.conn_args(database)]
        self.proc = conn.spawn(dog, "psql", args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        self.snapshot: str | None = None
        self.failure: str | None = None

    def _line(self, sql: str) -> str | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(sql.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        line = self.proc.stdout.readline()
        return line.decode().rstrip("\n") if line else None

    def export(self) -> str | None:
        self.snapshot = self._line(SESSION_SETTINGS + "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
                                   "SELECT pg_catalog.pg_export_snapshot();\n")
        if not self.snapshot:
            self.failure = self._stderr() or "no snapshot id"
        return self.snapshot

    def fingerprint(self) -> Fingerprint:
        line = self._line(" ".join(FINGERPRINT_SQL.split()) + "\n")
        if line is None:
            self.proc.wait(timeout=30)
            raise self.conn.error("psql (fingerprint in the dump's snapshot)", self.proc.returncode or 1,
                                  self._stderr(), self.database)
        return parse_fingerprint(line)

    def _stderr(self) -> str:
        return self.conn.redact(_read(self._err).strip())

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.write(b"COMMIT;\n\\q\n")
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self._err.close()


def _unique_name(directory: str, prefix: str, started: datetime) -> str:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    for i in range(1, 1000):
        name = f"{prefix}-{stamp}{'' if i == 1 else f'-{i}'}{DUMP_SUFFIX}"
        if not os.path.exists(os.path.join(directory, name)):
            return name
    raise PgBackupError(f"cannot find a free file name for {prefix}-{stamp} in {directory}")  # pragma: no cover


def stale_partials(directory: str) -> list[str]:
    """Temporary files of dumps that were killed (their process is gone)."""
    stale = []
    for name in os.listdir(directory):
        if not name.startswith(".") or PARTIAL_MARK not in name:
            continue
        pid = name.rsplit(PARTIAL_MARK, 1)[1]
        alive = False
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
                alive = int(pid) != os.getpid()
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            stale.append(os.path.join(directory, name))
    return sorted(stale)


def dump(conn: PgConnection, backup_dir: str, name_prefix: str | None = None, space_factor: float = 1.2,
         check_mode: bool = False) -> dict[str, Any]:
    """pg_dump -Fc into backup_dir under a temporary name, renamed when complete; sha256; metadata."""
    directory = check_dir(backup_dir, writable=True)
    database = conn.database or ""
    prefix = name_prefix or database
    if not NAME_PREFIX_RE.match(prefix):
        raise PgBackupError(f"name_prefix {prefix!r} is not usable in a file name (letters, digits, '.', '_', '-')")
    info = conn.server_info()
    size = int(info["database_bytes"])
    needed = math.ceil(size * space_factor)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise PgBackupError(f"not enough free space in {directory}: {free} bytes free, {needed} bytes needed "
                            f"(database {database} is {size} bytes, space_factor {space_factor:g}); "
                            f"nothing was written", bytes_free=free, bytes_needed=needed)
    started = utc_now()
    name = _unique_name(directory, prefix, started)
    path = os.path.join(directory, name)
    partials = stale_partials(directory)
    plan = {"file": path, "metadata_file": metadata_path(path), "database": database, "host": conn.host,
            "database_bytes": size, "bytes_free": free, "bytes_needed": needed,
            "server_version": info["server_version"]}
    if check_mode:
        return {"changed": True, **plan, "removed_partials": partials,
                "msg": f"would dump {database} ({size} bytes) to {path}"}
    for stale in partials:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    pg_dump_version = conn.tool_version("pg_dump")
    tmp = os.path.join(directory, f".{name}{PARTIAL_MARK}{os.getpid()}")
    t0 = time.monotonic()
    try:
        with conn.watchdog(f"pg_dump of {database}") as dog:
            session = SnapshotSession(conn, dog, database)
            try:
                snapshot = session.export()
                _run_pg_dump(conn, dog, database, tmp, snapshot)
                if snapshot:
                    fingerprint, consistency = session.fingerprint(), "snapshot"
                else:
                    consistency = f"after_dump (the snapshot could not be exported: {session.failure})"
                    fingerprint = None
            finally:
                session.close()
        if fingerprint is None:
            fingerprint = conn.fingerprint()
        nbytes = os.path.getsize(tmp)
        with open(tmp, "rb") as fh:
            magic = fh.read(len(PGDMP_MAGIC))
        if magic != PGDMP_MAGIC:
            raise PgBackupError(f"pg_dump of {database} reported success but wrote {nbytes} bytes that are not a "
                                f"custom-format archive; nothing was kept")
        digest = sha256_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    ended = utc_now()
    meta = {
        "file": name, "sha256": digest, "bytes": nbytes, "format": "custom", "database": database,
        "host": conn.host, "port": conn.port, "mode": conn.mode, "container": conn.container,
        "server_version": info["server_version"], "server_version_num": info["server_version_num"],
        "encoding": info["encoding"], "pg_dump_version": pg_dump_version,
        "started": iso(started), "ended": iso(ended), "seconds": round(time.monotonic() - t0, 3),
        "fingerprint": {**fingerprint.as_dict(), "consistency": consistency},
        "verified": False, "verified_at": None,
    }
    write_json_atomic(metadata_path(path), meta)
    return {"changed": True, **meta, "file": path, "metadata_file": metadata_path(path),
            "database_bytes": size, "bytes_free": free, "bytes_needed": needed, "removed_partials": partials}


def _run_pg_dump(conn: PgConnection, dog: _Watchdog, database: str, tmp: str, snapshot: str | None) -> None:
    lock_wait_ms = max(1, int(conn.timeout * 1000))
    args = ["-Fc", f"--lock-wait-timeout={lock_wait_ms}", *conn.conn_args(database)]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with tempfile.TemporaryFile() as err:
        try:
            if conn.mode == "tcp":
                os.close(fd)
                fd = -1
                proc = conn.spawn(dog, "pg_dump", [*args, "-f", tmp], stdin=subprocess.DEVNULL, stderr=err)
                proc.wait()
            else:
                proc = conn.spawn(dog, "pg_dump", args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
                assert proc.stdout is not None
                try:
                    for chunk in iter(lambda: proc.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
                        _write_all(fd, chunk)
                    os.fsync(fd)
                except OSError as exc:
                    proc.kill()
                    proc.wait()
                    raise PgBackupError(f"writing the dump of {database} to {tmp} failed: {exc.strerror}; "
                                        f"nothing was kept") from exc
                proc.wait()
        finally:
            if fd >= 0:
                os.close(fd)
        stderr = _read(err)
    if dog.fired:
        return  # the watchdog context raises the timeout
    if proc.returncode != 0:
        raise conn.error("pg_dump", proc.returncode, stderr, database)
    if conn.mode == "tcp":
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# ------------------------------------------------------------------ verify

def check_sha256(path: str, meta: dict[str, Any] | None) -> str:
    actual = sha256_file(path)
    if meta and meta.get("sha256") and meta["sha256"] != actual:
        raise PgBackupError(f"sha256 mismatch for {path}: its metadata records {meta['sha256']}, the file has "
                            f"{actual}; the file changed or was damaged after the dump", sha256=actual,
                            expected_sha256=meta["sha256"], verified=False)
    return actual


def restore_into_scratch(conn: PgConnection, path: str, scratch: str) -> None:
    args, stdin = conn.archive_input(path)
    try:
        with conn.watchdog(f"pg_restore of {path}") as dog, tempfile.TemporaryFile() as err:
            proc = conn.spawn(dog, "pg_restore", ["--no-owner", "--no-acl", "--exit-on-error",
                                                  *conn.conn_args(scratch), *args],
                              stdin=stdin if stdin else subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            proc.wait()
            stderr = _read(err)
    finally:
        if stdin:
            stdin.close()
    if proc.returncode != 0:
        raise conn.error("pg_restore", proc.returncode, stderr, scratch)


def verify(conn: PgConnection, backup_file: str | None = None, backup_dir: str | None = None,
           name_prefix: str | None = None, scratch_prefix: str = "erni_verify_", compare_with: str = "metadata",
           maintenance_db: str | None = None, check_mode: bool = False) -> dict[str, Any]:
    """Restore into a scratch database, fingerprint it, compare; record the outcome in the metadata."""
    if not SCRATCH_PREFIX_RE.match(scratch_prefix):
        raise PgBackupError(f"scratch_prefix {scratch_prefix!r} must be lower-case letters, digits and '_', "
                            f"starting with a letter or '_', at most 41 characters")
    path = resolve_backup(backup_file, backup_dir, name_prefix)
    meta = read_metadata(path)
    if compare_with == "metadata" and not (meta and (meta.get("fingerprint") or {}).get("tables") is not None):
        raise PgBackupError(f"{path} has no metadata with a fingerprint ({metadata_path(path)}); verify it "
                            f"against the live database with compare_with=source", file=path, verified=False)
    if compare_with == "source" and not conn.database:
        raise PgBackupError("compare_with=source needs database: the source to compare with")
    try:
        digest = check_sha256(path, meta)
    except PgBackupError as exc:
        if meta and not check_mode:
            _record_verification(path, meta, False, {"reason": str(exc)})
        exc.result.setdefault("file", path)
        raise
    maint = maintenance_db or conn.database or "postgres"
    if check_mode:
        return {"changed": True, "file": path, "sha256": digest, "verified": bool(meta and meta.get("verified")),
                "compared_with": compare_with,
                "msg": f"would restore {path} into a scratch database {scratch_prefix}* and compare it with the "
                       f"{'fingerprint in its metadata' if compare_with == 'metadata' else 'source database'}"}
    info = conn.server_info(maint)
    scratch = scratch_prefix + secrets.token_hex(4)
    encoding = (meta or {}).get("encoding")
    t0 = time.monotonic()
    failure = None
    restored: Fingerprint | None = None
    conn.create_database(scratch, encoding, maint)
    try:
        try:
            restore_into_scratch(conn, path, scratch)
            restore_seconds = round(time.monotonic() - t0, 3)
            restored = conn.fingerprint(scratch)
        except PgBackupError as exc:
            restore_seconds = round(time.monotonic() - t0, 3)
            failure = str(exc)
    finally:
        try:
            conn.drop_database(scratch, maint, int(info["server_version_num"]))
        except PgBackupError as exc:
            raise PgBackupError(f"could not drop the scratch database {scratch} after verifying {path}: {exc}; "
                                f"drop it by hand") from exc
    if compare_with == "metadata":
        assert meta is not None
        reference = {t["table"]: t for t in meta["fingerprint"]["tables"]}
    else:
        reference = conn.fingerprint().by_table()
    result: dict[str, Any] = {"changed": True, "file": path, "sha256": digest, "scratch_database": scratch,
                              "compared_with": compare_with, "restore_seconds": restore_seconds}
    if failure is not None:
        tables, _ = compare_fingerprints(reference, {})
        msg = f"backup {path} does not restore: {failure}"
        result.update(verified=False, tables=tables, differing_tables=[])
    else:
        assert restored is not None
        tables, differ = compare_fingerprints(reference, restored.by_table())
        result.update(verified=not differ, tables=tables, differing_tables=differ,
                      fingerprint=restored.as_dict())
        against = ("the fingerprint taken at dump time" if compare_with == "metadata"
                   else f"the source database {conn.database}")
        msg = (f"backup {path} restores and matches {against} in all {len(tables)} tables" if not differ
               else f"backup {path} restores but differs from {against}: {describe_differences(tables)}")
    if meta is not None:
        result["verified_at"] = _record_verification(path, meta, result["verified"], {
            "restore_seconds": restore_seconds, "compared_with": compare_with, "reason": msg,
            "differing_tables": result["differing_tables"]})
    if not result["verified"]:
        raise PgBackupError(msg, **result)
    result["msg"] = msg
    return result


def _record_verification(path: str, meta: dict[str, Any], verified: bool, details: dict[str, Any]) -> str:
    at = iso(utc_now())
    write_json_atomic(metadata_path(path), {**meta, "verified": verified, "verified_at": at, "verification": details})
    return at


# ------------------------------------------------------------------ restore

def restore(conn: PgConnection, backup_file: str, drop_extra_tables: bool = True, no_owner: bool = False,
            no_acl: bool = False, check_mode: bool = False, if_changed: bool = False) -> dict[str, Any]:
    """Replace the target database's contents with the backup's, in one transaction.

    With if_changed, a database whose fingerprint already equals the backup's is left alone
    (a migration that failed inside its own transaction changed nothing to undo).
    """
    database = conn.database or ""
    path = resolve_backup(backup_file, None, None)
    meta = read_metadata(path)
    if meta is None or (meta.get("fingerprint") or {}).get("tables") is None or not meta.get("sha256"):
        raise PgBackupError(f"{path} has no metadata ({metadata_path(path)}) with its sha256 and fingerprint; "
                            f"refusing to restore what cannot be checked")
    digest = check_sha256(path, meta)
    conn.server_info()
    before = conn.fingerprint()
    expected = {t["table"] for t in meta["fingerprint"]["tables"]}
    extra = [t for t in before.tables if t.table not in expected]
    result: dict[str, Any] = {"file": path, "sha256": digest, "database": database,
                              "extra_tables": [t.table for t in extra],
                              "dropped_tables": [t.table for t in extra] if drop_extra_tables else [],
                              "fingerprint_before": before.as_dict()}
    if if_changed:
        tables, differ = compare_with_backup(meta, before)
        result.update(differing_before=differ, tables_before=tables)
        if not differ:
            return {"changed": False, **result, "restored": False, "fingerprint_matches": True, "tables": tables,
                    "differing_tables": [], "restore_seconds": 0.0,
                    "msg": f"{database} equals {path} (same fingerprint): nothing to restore"}
    if check_mode:
        return {"changed": True, **result,
                "msg": f"would replace the contents of {database} with {path} in one transaction"
                       + (f", dropping {', '.join(result['dropped_tables'])}" if result["dropped_tables"] else "")}
    drops = "".join(f"DROP TABLE IF EXISTS {quote_table(t.schema, t.name)} CASCADE;\n"
                    for t in extra) if drop_extra_tables else ""
    t0 = time.monotonic()
    _restore_single_transaction(conn, path, database, drops, no_owner, no_acl)
    seconds = round(time.monotonic() - t0, 3)
    after = conn.fingerprint()
    tables, differ = compare_with_backup(meta, after)
    matches = not differ
    return {"changed": True, **result, "restored": True, "restore_seconds": seconds, "fingerprint": after.as_dict(),
            "fingerprint_matches": matches, "tables": tables, "differing_tables": differ,
            "backup_fingerprint_digest": meta["fingerprint"].get("digest"),
            "msg": (f"restored {path} into {database}; its fingerprint equals the backup's" if matches else
                    f"restored {path} into {database}, but it differs from the backup: "
                    f"{describe_differences(tables)}")}


def _restore_single_transaction(conn: PgConnection, path: str, database: str, drops: str, no_owner: bool,
                                no_acl: bool) -> None:
    """pg_restore's script, piped into psql inside one transaction that first drops the extra tables.

    pg_restore --single-transaction wraps its script in BEGIN/COMMIT (and then leaves out the
    BEGIN/COMMIT it would put around large objects); our BEGIN comes first, so the drops and the
    whole script are one transaction (psql only warns about the second BEGIN). Any error stops
    psql, and a script that never reaches its COMMIT is rolled back when the session ends.
    """
    restore_args = ["--clean", "--if-exists", "--single-transaction", "--exit-on-error", "-f", "-"]
    if no_owner:
        restore_args.append("--no-owner")
    if no_acl:
        restore_args.append("--no-acl")
    archive_args, stdin = conn.archive_input(path)
    psql_args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", *conn.conn_args(database)]
    try:
        with conn.watchdog(f"restore of {path} into {database}") as dog, \
                tempfile.TemporaryFile() as psql_err, tempfile.TemporaryFile() as restore_err:
            psql = conn.spawn(dog, "psql", psql_args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=psql_err)
            pg_restore = conn.spawn(dog, "pg_restore", [*restore_args, *archive_args],
                                    stdin=stdin if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=restore_err)
            assert psql.stdin is not None and pg_restore.stdout is not None
            try:
                psql.stdin.write(b"BEGIN;\n" + drops.encode())
                for chunk in iter(lambda: pg_restore.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
                    psql.stdin.write(chunk)
                if pg_restore.wait() != 0:
                    psql.stdin.write(b"ROLLBACK;\n")
                psql.stdin.close()
            except BrokenPipeError:  # psql stopped at an error: the transaction is gone
                pg_restore.kill()
            pg_restore.wait()
            psql.wait()
            restore_stderr, psql_stderr = _read(restore_err), _read(psql_err)
    finally:
        if stdin:
            stdin.close()
    if pg_restore.returncode != 0:
        raise conn.error("pg_restore", pg_restore.returncode, restore_stderr, database)
    if psql.returncode != 0:
        raise conn.error("psql (restore, rolled back)", psql.returncode, psql_stderr, database)


# ------------------------------------------------------------------ prune

def prune(backup_dir: str, retention_count: int | None, retention_days: float | None, name_prefix: str | None,
          check_mode: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Keep the newest retention_count backups and those younger than retention_days (either rule keeps
    a backup), and always the newest verified one; delete the rest with their metadata."""
    if retention_count is None and retention_days is None:
        raise PgBackupError("prune needs retention_count, retention_days or both")
    directory = check_dir(backup_dir, writable=not check_mode)
    now = now or utc_now()
    backups = list_backups(directory, name_prefix)
    protected = next((b for b in backups if b.verified), None)
    kept, doomed = [], []
    for i, b in enumerate(backups):
        reasons = []
        if retention_count is not None and i < retention_count:
            reasons.append(f"among the newest {retention_count}")
        age_days = (now - b.time).total_seconds() / 86400
        if retention_days is not None and age_days < retention_days:
            reasons.append(f"younger than {retention_days:g} days")
        if b is protected:
            reasons.append("the newest verified backup")
        if reasons:
            kept.append({**b.as_dict(), "reasons": reasons})
        else:
            doomed.append(b)
    deleted: list[dict[str, Any]] = []
    for b in doomed:
        files = [b.path] + ([metadata_path(b.path)] if os.path.exists(metadata_path(b.path)) else [])
        if not check_mode:
            for f in files:
                try:
                    os.unlink(f)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise PgBackupError(f"cannot delete {f}: {exc.strerror}", deleted=deleted) from exc
        deleted.append({**b.as_dict(), "files": files})
    verb = "would delete" if check_mode else "deleted"
    return {"changed": bool(deleted), "deleted": deleted, "kept": kept,
            "protected": protected.path if protected else None,
            "msg": f"{verb} {len(deleted)} of {len(backups)} backups in {directory}; kept {len(kept)}"}


def fingerprint(conn: PgConnection, backup_file: str | None = None) -> dict[str, Any]:
    """The database's fingerprint; with backup_file, also whether it equals that backup's."""
    meta = None
    if backup_file:
        path = resolve_backup(backup_file, None, None)
        meta = read_metadata(path)
        if meta is None or (meta.get("fingerprint") or {}).get("tables") is None:
            raise PgBackupError(f"{path} has no metadata with a fingerprint ({metadata_path(path)}) to compare with")
    conn.server_info()
    fp = conn.fingerprint()
    result: dict[str, Any] = {"changed": False, "database": conn.database, **fp.as_dict()}
    if meta is not None:
        tables, differ = compare_with_backup(meta, fp)
        result.update(file=backup_file, matches=not differ, differing_tables=differ, comparison=tables,
                      differences=describe_differences(tables))
    return result
