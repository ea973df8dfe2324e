"""pg_backup against the sandbox's real PostgreSQL 15 (and, in container mode, a PostgreSQL 15 in a
container built from a Debian tree).

Every test works in its own scratch databases (erni_test_<random>), filled with known rows in two
tables, one in another schema: NULLs, empty strings, unicode, control characters, a bytea column,
numeric, timestamptz, arrays and jsonb. They are dropped in teardown; `openwebui` and
`openwebui_staging` are only ever connected to, never changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from helpers import free_port, secret
from modules_harness import run_module

USER = "openwebui_user"
PASSWORD = secret("production_db_password")
TCP = {"host": "127.0.0.1", "port": 5432, "user": USER, "password": PASSWORD}
SCRATCH = f"erni_test_v{secrets.token_hex(3)}_"   # verify's scratch databases in this session

KNOWN_SQL = r"""
CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, nickname text, avatar bytea, born date);
INSERT INTO people VALUES
  (1, 'Zoë Ångström', NULL, '\x00ff10'::bytea, '1990-01-02'),
  (2, '日本語のテキスト', 'にほん', NULL, NULL),
  (3, 'emoji 🚀 and "quotes", commas', '', '\x'::bytea, '2000-02-29'),
  (4, E'tab\tnew\nline\\back', NULL, decode('deadbeef00', 'hex'), NULL);
CREATE SCHEMA billing;
CREATE TABLE billing.orders (id serial PRIMARY KEY, person_id int REFERENCES people(id), amount numeric(10,2),
                             placed timestamptz, tags text[], note jsonb);
INSERT INTO billing.orders (person_id, amount, placed, tags, note) VALUES
  (1, 12.50, '2026-01-01 10:00:00+01', ARRAY['a', 'b'], '{"k": "v"}'),
  (2, NULL, NULL, NULL, NULL),
  (4, 0.01, '2026-06-30 23:59:59.999+00', ARRAY['ü', NULL], '[1, 2, null]');
"""
KNOWN_ROWS = {"public.people": 4, "billing.orders": 3}


# ------------------------------------------------------------------ helpers and fixtures

def connect(db: str = "openwebui"):
    conn = psycopg2.connect(host="127.0.0.1", port=5432, dbname=db, user=USER, password=PASSWORD)
    conn.autocommit = True
    return conn


def sql(db: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(connect(db)) as conn, conn.cursor() as cur:
        cur.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def databases_like(prefix: str) -> list[str]:
    return [r[0] for r in sql("openwebui", "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                              (prefix,))]


def rows(db: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of both known tables, in id order, bytea as bytes."""
    def norm(r: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
    return {"people": [norm(r) for r in sql(db, "SELECT * FROM people ORDER BY id")],
            "billing.orders": [norm(r) for r in sql(db, "SELECT * FROM billing.orders ORDER BY id")]}


def pg(args: dict[str, Any], check_mode: bool = False, conn: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run pg_backup; whatever it returns must never contain the password."""
    res = run_module("pg_backup", {**(TCP if conn is None else conn), **args}, check_mode=check_mode)
    text = json.dumps(res)
    assert PASSWORD not in text
    return res


@pytest.fixture
def make_db() -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(fill: str = KNOWN_SQL) -> str:
        name = f"erni_test_{secrets.token_hex(5)}"
        sql("openwebui", f'CREATE DATABASE "{name}"')
        created.append(name)
        if fill:
            sql(name, fill)
        return name

    yield make
    for name in [*created, *databases_like(SCRATCH)]:
        sql("openwebui", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    d = tmp_path / "backups"
    d.mkdir()
    return d


def dump(db: str, directory: Path, **kw: Any) -> dict[str, Any]:
    res = pg({"state": "dump", "database": db, "backup_dir": str(directory), **kw})
    assert not res.get("failed"), res.get("msg")
    return res


def verify(path: str, db: str | None = None, **kw: Any) -> dict[str, Any]:
    args = {"state": "verify", "backup_file": path, "scratch_prefix": SCRATCH, **kw}
    if db:
        args["database"] = db
    return pg(args)


def meta_of(path: str) -> dict[str, Any]:
    return json.loads(Path(path + ".json").read_text())


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# ------------------------------------------------------------------ dump and verify

def test_dump_writes_a_custom_archive_its_sha256_and_metadata(make_db, backup_dir: Path) -> None:
    db = make_db()
    res = dump(db, backup_dir)
    path = Path(res["file"])
    assert res["changed"] is True
    assert listing(backup_dir) == [path.name, path.name + ".json"]     # no temporary file left
    assert path.name.startswith(f"{db}-") and path.suffix == ".dump"
    data = path.read_bytes()
    assert data[:5] == b"PGDMP"
    assert (path.stat().st_mode & 0o777) == 0o600
    meta = meta_of(str(path))
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() == res["sha256"]
    assert meta["bytes"] == len(data) == res["bytes"]
    assert meta["file"] == path.name and meta["database"] == db and meta["host"] == "127.0.0.1"
    assert meta["server_version"].startswith("15.") and meta["pg_dump_version"].startswith("15.")
    assert meta["started"].endswith("Z") and meta["ended"].endswith("Z") and meta["started"] <= meta["ended"]
    assert isinstance(meta["seconds"], float) and 0 <= meta["seconds"] < 30
    assert meta["verified"] is False and meta["verified_at"] is None
    fp = meta["fingerprint"]
    assert fp["consistency"] == "snapshot"
    assert {t["table"]: t["rows"] for t in fp["tables"]} == KNOWN_ROWS
    assert PASSWORD not in json.dumps(meta)


def test_verify_restores_into_a_scratch_database_and_marks_the_backup_verified(make_db, backup_dir: Path) -> None:
    db = make_db()
    path = dump(db, backup_dir)["file"]
    res = verify(path)
    assert not res.get("failed"), res.get("msg")
    assert res["verified"] is True and res["changed"] is True
    assert res["tables"] == [
        {"table": "billing.orders", "rows_source": 3, "rows_restored": 3, "checksum_match": True, "status": "match"},
        {"table": "public.people", "rows_source": 4, "rows_restored": 4, "checksum_match": True, "status": "match"},
    ]
    assert isinstance(res["restore_seconds"], float) and res["restore_seconds"] > 0
    assert res["scratch_database"].startswith(SCRATCH)
    assert databases_like(SCRATCH) == []                  # the scratch database is gone
    meta = meta_of(path)
    assert meta["verified"] is True and meta["verified_at"] == res["verified_at"]
    assert meta["verified_at"].endswith("Z")


def test_verify_without_a_file_takes_the_newest_backup_of_the_database(make_db, backup_dir: Path) -> None:
    db = make_db()
    dump(db, backup_dir)
    second = dump(db, backup_dir)["file"]
    res = pg({"state": "verify", "backup_dir": str(backup_dir), "database": db, "scratch_prefix": SCRATCH})
    assert res["file"] == second and res["verified"] is True


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_damaged_dump_fails_verification(make_db, backup_dir: Path, damage: str) -> None:
    db = make_db()
    path = dump(db, backup_dir)["file"]
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    # the file changed after the dump: its sha256 no longer matches the metadata
    res = verify(path)
    assert res["failed"] is True and res["verified"] is False
    assert res["msg"].startswith(f"sha256 mismatch for {path}: its metadata records {meta_of(path)['sha256']}")
    assert meta_of(path)["verified"] is False
    # pg_dump itself wrote the short file and recorded its sha256: the restore finds it out
    meta = meta_of(path)
    meta["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    Path(path + ".json").write_text(json.dumps(meta))
    res = verify(path)
    assert res["failed"] is True and res["verified"] is False
    assert res["msg"].startswith(f"backup {path} does not restore: pg_restore failed")
    assert {t["status"] for t in res["tables"]} == {"missing"}
    assert meta_of(path)["verified"] is False
    assert databases_like(SCRATCH) == []


def test_a_dump_of_another_database_compared_with_the_source_fails_naming_the_tables(make_db, backup_dir) -> None:
    source = make_db()
    other = make_db()
    sql(other, "UPDATE billing.orders SET amount = 99 WHERE id = 1; DELETE FROM people WHERE id = 3")
    path = dump(other, backup_dir)["file"]
    assert verify(path)["verified"] is True                # it is a good dump of `other`...
    res = verify(path, source, compare_with="source")      # ...but not of `source`
    assert res["failed"] is True and res["verified"] is False
    assert res["differing_tables"] == ["billing.orders", "public.people"]
    assert "billing.orders (same 3 rows, checksum differs)" in res["msg"]
    assert "public.people (4 rows in the source, 3 restored)" in res["msg"]
    by_table = {t["table"]: t for t in res["tables"]}
    assert by_table["public.people"]["rows_source"] == 4 and by_table["public.people"]["rows_restored"] == 3
    assert meta_of(path)["verified"] is False
    # and the same database compared with its live source passes
    assert verify(path, other, compare_with="source")["verified"] is True


def test_the_fingerprint_ignores_row_order_and_sees_every_value(make_db) -> None:
    db = make_db()

    def fingerprint() -> dict[str, str]:
        res = pg({"state": "fingerprint", "database": db})
        assert res["changed"] is False and res["table_count"] == 2 and res["rows"] == 7
        return {t["table"]: t["checksum"] for t in res["tables"]}

    before = fingerprint()
    sql(db, "UPDATE people SET name = name WHERE id IN (1, 2)")          # same rows, new physical order
    assert sql(db, "SELECT id FROM people")[0][0] != 1
    assert fingerprint() == before
    sql(db, "UPDATE people SET avatar = '\\x00ff11'::bytea WHERE id = 1")  # one byte of a bytea
    after = fingerprint()
    assert after["public.people"] != before["public.people"]
    assert after["billing.orders"] == before["billing.orders"]
    sql(db, "UPDATE people SET avatar = '\\x00ff10'::bytea WHERE id = 1")
    assert fingerprint() == before
    sql(db, "UPDATE people SET nickname = NULL WHERE id = 3")             # '' and NULL differ
    assert fingerprint()["public.people"] != before["public.people"]


# ------------------------------------------------------------------ restore

def test_restore_brings_back_exactly_the_dumped_rows(make_db, backup_dir: Path) -> None:
    db = make_db()
    original = rows(db)
    path = dump(db, backup_dir)["file"]
    sql(db, "UPDATE people SET name = 'damaged', avatar = NULL WHERE id = 1; DELETE FROM billing.orders WHERE id = 2;"
            "INSERT INTO people VALUES (5, 'new', NULL, NULL, NULL);"
            "CREATE TABLE public.migration_leftover (x int); INSERT INTO public.migration_leftover VALUES (1);")
    assert rows(db) != original
    res = pg({"state": "restore", "database": db, "backup_file": path})
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True and res["fingerprint_matches"] is True
    assert res["dropped_tables"] == ["public.migration_leftover"]
    assert res["fingerprint"]["digest"] == meta_of(path)["fingerprint"]["digest"]
    assert rows(db) == original
    assert sql(db, "SELECT to_regclass('public.migration_leftover')") == [(None,)]
    # the restored sequence still hands out fresh ids
    assert sql(db, "INSERT INTO billing.orders (person_id) VALUES (1) RETURNING id") == [(4,)]


def test_restore_if_changed_leaves_an_unchanged_database_alone_and_restores_a_changed_one(
        make_db, backup_dir: Path) -> None:
    db = make_db()
    original = rows(db)
    path = dump(db, backup_dir)["file"]
    same = pg({"state": "fingerprint", "database": db, "backup_file": path})
    assert same["matches"] is True and same["differing_tables"] == []
    res = pg({"state": "restore", "database": db, "backup_file": path, "if_changed": True})
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is False and res["restored"] is False and "nothing to restore" in res["msg"]
    sql(db, "UPDATE people SET name = 'damaged' WHERE id = 1")
    differ = pg({"state": "fingerprint", "database": db, "backup_file": path})
    assert differ["matches"] is False and differ["differing_tables"] == ["public.people"]
    assert "public.people (same" in differ["differences"] and "checksum differs" in differ["differences"]
    res = pg({"state": "restore", "database": db, "backup_file": path, "if_changed": True})
    assert res["changed"] is True and res["restored"] is True and res["fingerprint_matches"] is True
    assert res["differing_before"] == ["public.people"]
    assert rows(db) == original


def test_a_restore_that_fails_changes_nothing(make_db, backup_dir: Path) -> None:
    db = make_db()
    path = dump(db, backup_dir)["file"]
    sql(db, "UPDATE people SET name = 'changed after the dump' WHERE id = 1;"
            "CREATE TABLE public.migration_leftover (x int); INSERT INTO public.migration_leftover VALUES (7);"
            "CREATE VIEW public.names AS SELECT name FROM people;")     # blocks pg_restore's DROP TABLE people
    changed = rows(db)
    res = pg({"state": "restore", "database": db, "backup_file": path})
    assert res["failed"] is True
    assert "rolled back" in res["msg"] and "other objects depend on it" in res["msg"]
    assert rows(db) == changed                                            # not one statement stayed
    assert sql(db, "SELECT x FROM public.migration_leftover") == [(7,)]   # its DROP was rolled back too


def test_restore_refuses_a_file_whose_sha256_does_not_match(make_db, backup_dir: Path) -> None:
    db = make_db()
    path = dump(db, backup_dir)["file"]
    sql(db, "DELETE FROM billing.orders")
    with open(path, "ab") as fh:
        fh.write(b"\0")
    res = pg({"state": "restore", "database": db, "backup_file": path})
    assert res["failed"] is True and res["msg"].startswith(f"sha256 mismatch for {path}")
    assert sql(db, "SELECT count(*) FROM billing.orders") == [(0,)]
    os.unlink(path + ".json")
    res = pg({"state": "restore", "database": db, "backup_file": path})
    assert res["failed"] is True and "has no metadata" in res["msg"] and "refusing to restore" in res["msg"]


# ------------------------------------------------------------------ prune

def test_prune_keeps_the_newest_verified_backup_whatever_the_policy(make_db, backup_dir: Path) -> None:
    db = make_db()
    oldest = dump(db, backup_dir)["file"]
    assert verify(oldest)["verified"] is True
    middle = dump(db, backup_dir)["file"]
    newest = dump(db, backup_dir)["file"]
    before = listing(backup_dir)
    args = {"state": "prune", "backup_dir": str(backup_dir), "database": db, "retention_count": 0}

    res = pg(args, check_mode=True)
    assert res["changed"] is True and listing(backup_dir) == before          # check mode deletes nothing
    assert sorted(d["file"] for d in res["deleted"]) == sorted([middle, newest])
    assert res["protected"] == oldest

    res = pg(args)
    assert res["changed"] is True and res["protected"] == oldest
    assert listing(backup_dir) == [Path(oldest).name, Path(oldest).name + ".json"]
    assert res["kept"][0]["reasons"] == ["the newest verified backup"]
    res = pg(args)
    assert res["changed"] is False and res["deleted"] == []


def test_prune_by_count_and_by_age(make_db, backup_dir: Path) -> None:
    db = make_db()
    files = [dump(db, backup_dir)["file"] for _ in range(3)]
    # make the oldest ten days old, the middle one two days old
    for path, days in ((files[0], 10), (files[1], 2)):
        meta = meta_of(path)
        then = time.gmtime(time.time() - days * 86400)
        meta["started"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", then)
        Path(path + ".json").write_text(json.dumps(meta))
    res = pg({"state": "prune", "backup_dir": str(backup_dir), "database": db, "retention_count": 1,
              "retention_days": 5})
    assert [d["file"] for d in res["deleted"]] == [files[0]]
    assert res["protected"] is None
    assert {k["file"]: k["reasons"] for k in res["kept"]} == {
        files[2]: ["among the newest 1", "younger than 5 days"], files[1]: ["younger than 5 days"]}
    assert not os.path.exists(files[0]) and not os.path.exists(files[0] + ".json")


# ------------------------------------------------------------------ check mode

def test_check_mode_changes_nothing(make_db, backup_dir: Path) -> None:
    db = make_db()
    res = pg({"state": "dump", "database": db, "backup_dir": str(backup_dir)}, check_mode=True)
    assert res["changed"] is True and res["msg"].startswith(f"would dump {db}")
    assert res["file"].startswith(str(backup_dir)) and listing(backup_dir) == []

    path = dump(db, backup_dir)["file"]
    meta_before = Path(path + ".json").read_bytes()
    res = pg({"state": "verify", "backup_file": path, "scratch_prefix": SCRATCH}, check_mode=True)
    assert res["changed"] is True and res["msg"].startswith(f"would restore {path}")
    assert Path(path + ".json").read_bytes() == meta_before and databases_like(SCRATCH) == []

    sql(db, "DELETE FROM billing.orders WHERE id = 1")
    changed = rows(db)
    res = pg({"state": "restore", "database": db, "backup_file": path}, check_mode=True)
    assert res["changed"] is True and res["msg"].startswith(f"would replace the contents of {db}")
    assert rows(db) == changed

    res = pg({"state": "fingerprint", "database": db}, check_mode=True)    # read-only: runs
    assert res["changed"] is False and res["rows"] == 6


# ------------------------------------------------------------------ disk space, failures, timeouts

@pytest.fixture
def small_dir(tmp_path: Path) -> Iterator[Path | None]:
    """A 1 MiB tmpfs, or None where mounting is not allowed."""
    d = tmp_path / "small"
    d.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(d)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        yield None
        return
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True, timeout=30)


def test_too_little_space_is_refused_before_writing(make_db, small_dir: Path | None, backup_dir: Path) -> None:
    db = make_db()
    directory, extra = (small_dir, {}) if small_dir else (backup_dir, {"space_factor": 1e9})
    res = pg({"state": "dump", "database": db, "backup_dir": str(directory), **extra})
    assert res["failed"] is True
    assert res["msg"].startswith(f"not enough free space in {directory}: {res['bytes_free']} bytes free, "
                                 f"{res['bytes_needed']} bytes needed (database {db} is ")
    assert res["bytes_needed"] > res["bytes_free"]
    assert listing(directory) == []


def test_a_dump_that_runs_out_of_space_leaves_no_file(make_db, small_dir: Path | None) -> None:
    if small_dir is None:
        pytest.skip("cannot mount a tmpfs here")
    # 2 MiB of incompressible bytes: more than the 1 MiB the directory has
    db = make_db("CREATE TABLE blob (b bytea); INSERT INTO blob SELECT decode(string_agg(md5(random()::text), ''),"
                 " 'hex') FROM generate_series(1, 131072);")
    res = pg({"state": "dump", "database": db, "backup_dir": str(small_dir), "space_factor": 0})
    assert res["failed"] is True
    assert "pg_dump failed" in res["msg"] and "No space left on device" in res["msg"]
    assert listing(small_dir) == []


def test_a_dump_that_times_out_leaves_no_file_and_no_session(make_db, backup_dir: Path) -> None:
    db = make_db()
    with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=5432, dbname=db, user=USER,
                                             password=PASSWORD)) as locker:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE people IN ACCESS EXCLUSIVE MODE")      # pg_dump waits for this lock
        t0 = time.monotonic()
        res = pg({"state": "dump", "database": db, "backup_dir": str(backup_dir), "timeout": 2})
        assert time.monotonic() - t0 < 15
        locker.rollback()
    assert res["failed"] is True
    assert res["msg"].startswith(f"pg_dump of {db} did not finish within 2 s (timeout)")
    assert listing(backup_dir) == []
    assert sql("openwebui", "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                            "'erni-deploy-pg_backup-%'") == [(0,)]


def test_partial_files_of_killed_dumps_are_removed_by_the_next_dump(make_db, backup_dir: Path) -> None:
    db = make_db()
    dead = backup_dir / f".{db}-20260101T000000Z.dump.partial-4194999"   # beyond pid_max by default
    alive = backup_dir / f".{db}-20260101T000001Z.dump.partial-{os.getppid()}"
    dead.write_bytes(b"PGDMP half")
    alive.write_bytes(b"PGDMP running")
    res = dump(db, backup_dir)
    assert res["removed_partials"] == [str(dead)]
    assert not dead.exists() and alive.exists()


def test_an_unreachable_server_is_named() -> None:
    port = free_port()
    res = pg({"state": "fingerprint", "database": "openwebui", "port": port})
    assert res["failed"] is True
    assert res["msg"].startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port} as openwebui_user: ")
    assert "Connection refused" in res["msg"]


def test_a_wrong_password_is_named_but_never_shown(backup_dir: Path) -> None:
    wrong = "not-the-password-" + secrets.token_hex(8)
    res = pg({"state": "dump", "database": "openwebui", "backup_dir": str(backup_dir)},
             conn={**TCP, "password": wrong})
    assert res["failed"] is True
    assert res["msg"].startswith("cannot connect to PostgreSQL at 127.0.0.1:5432 as openwebui_user: ")
    assert "password authentication failed" in res["msg"]
    assert wrong not in json.dumps(res) and listing(backup_dir) == []


def test_missing_backups_are_named(backup_dir: Path) -> None:
    missing = str(backup_dir / "nope.dump")
    res = verify(missing)
    assert res["failed"] is True and res["msg"] == f"backup file {missing} does not exist"
    res = pg({"state": "restore", "database": "erni_test_none", "backup_file": missing})
    assert res["failed"] is True and res["msg"] == f"backup file {missing} does not exist"
    res = pg({"state": "verify", "backup_dir": str(backup_dir), "database": "openwebui"})
    assert res["failed"] is True and res["msg"] == f"no backup (openwebui-*.dump) in {backup_dir}"
    res = pg({"state": "dump", "database": "openwebui", "backup_dir": str(backup_dir / "absent")})
    assert res["failed"] is True and res["msg"].startswith(f"backup_dir {backup_dir / 'absent'} does not exist")


@pytest.mark.parametrize("args, message", [
    ({"state": "verify", "backup_file": "/x.dump", "scratch_prefix": "Bad-Prefix"},
     "scratch_prefix 'Bad-Prefix' must be lower-case letters"),
    ({"state": "fingerprint", "database": "openwebui", "port": 70000}, "port=70000 must be from 1 to 65535"),
    ({"state": "dump", "database": "openwebui", "backup_dir": "/tmp", "space_factor": -1},
     "space_factor=-1.0 must be 0 or more"),
    ({"state": "prune", "backup_dir": "/tmp"},
     "state is prune but any of the following are missing: retention_count, retention_days"),
    ({"state": "fingerprint", "database": "openwebui", "mode": "container"},
     "mode is container but all of the following are missing: container"),
    ({"state": "restore", "database": "openwebui"}, "missing: backup_file"),
])
def test_bad_input_is_refused_naming_it(args: dict[str, Any], message: str) -> None:
    res = pg(args)
    assert res["failed"] is True
    assert message in res["msg"], res["msg"]


def test_the_password_travels_only_in_the_environment() -> None:
    from ansible.module_utils.erni_pg import PgConnection  # after modules_harness put module_utils on the path

    for mode in ("tcp", "container"):
        conn = PgConnection(user=USER, password=PASSWORD, database="openwebui", mode=mode, container="db")
        argv, env = conn.command("pg_dump", ["-Fc", *conn.conn_args(None)])
        assert PASSWORD not in " ".join(argv)
        assert env["PGPASSWORD"] == PASSWORD
        if mode == "container":
            assert argv[:3] == ["docker", "exec", "-i"]
            i = argv.index("PGPASSWORD")
            assert argv[i - 1] == "-e"                   # docker copies the value from its environment
        assert conn.redact(f"x {PASSWORD} y") == "x ******** y"


# ------------------------------------------------------------------ container mode

IMAGE = "erni-deploy/pg-test:15"
CACHE_DIR = Path(os.environ.get("ERNI_CACHE_DIR", "/var/cache/erni-deploy"))
TARBALL = CACHE_DIR / "postgresql-15-bookworm.tar"
CONTAINER_PASSWORD = "ctr-" + secrets.token_hex(12)
START = """
set -e
mkdir -p /tmp/pg && chown postgres /tmp/pg
printf '%s' "$ERNI_TEST_PW" > /tmp/pg/pw && chown postgres /tmp/pg/pw
su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/initdb -D /tmp/pg/data -U postgres --auth-local=peer \
  --auth-host=scram-sha-256 --pwfile=/tmp/pg/pw -E UTF8 --locale=C.UTF-8 >/tmp/pg/initdb.log"
rm /tmp/pg/pw
exec su postgres -s /bin/sh -c "exec /usr/lib/postgresql/15/bin/postgres -D /tmp/pg/data \
  -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp/pg"
"""


def docker(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kw)


def ensure_image() -> None:
    """The image: PostgreSQL 15 on a Debian tree from debootstrap (nothing can be pulled here),
    cached as a tarball so that it is bootstrapped once per machine."""
    if shutil.which("docker") is None or docker("info", timeout=30).returncode != 0:
        pytest.skip("no Docker engine: container mode is not tested")
    if docker("image", "inspect", IMAGE).returncode == 0:
        return
    if not TARBALL.exists():
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            pytest.skip(f"no {TARBALL} and no way to bootstrap it (debootstrap as root)")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        root = Path(subprocess.run(["mktemp", "-d", str(CACHE_DIR / "pgroot.XXXXXX")], capture_output=True,
                                   text=True, check=True).stdout.strip())
        try:
            subprocess.run(["debootstrap", "--variant=minbase", "--include=postgresql-15", "bookworm", str(root),
                            "http://deb.debian.org/debian"], capture_output=True, check=True, timeout=900)
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(root / junk, ignore_errors=True)
            subprocess.run(["tar", "-C", str(root), "-cf", f"{TARBALL}.tmp", "."], check=True, timeout=300)
            os.replace(f"{TARBALL}.tmp", TARBALL)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    proc = docker("import", str(TARBALL), IMAGE, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    ensure_image()
    name = f"erni_test_pg_{secrets.token_hex(4)}"
    env = {**os.environ, "ERNI_TEST_PW": CONTAINER_PASSWORD}
    proc = docker("run", "-d", "--name", name, "--network", "none", "-e", "ERNI_TEST_PW", IMAGE, "sh", "-c", START,
                  env=env)
    assert proc.returncode == 0, proc.stderr
    try:
        deadline = time.monotonic() + 60
        while docker("exec", name, "pg_isready", "-q", "-h", "127.0.0.1", timeout=10).returncode != 0:
            assert time.monotonic() < deadline, docker("logs", name).stderr
            time.sleep(0.2)
        in_container(name, "postgres", "CREATE ROLE erni LOGIN CREATEDB PASSWORD :'pw'; "
                                       "CREATE DATABASE erni_src OWNER erni;")
        in_container(name, "erni_src", "SET ROLE erni;\n" + KNOWN_SQL)
        yield name
    finally:
        docker("rm", "-f", name)


def in_container(name: str, db: str, statements: str) -> str:
    env = {**os.environ, "PGPASSWORD": CONTAINER_PASSWORD}
    proc = subprocess.run(["docker", "exec", "-i", "-e", "PGPASSWORD", name, "psql", "-X", "-q", "-A", "-t",
                           "-v", "ON_ERROR_STOP=1", "-v", f"pw={CONTAINER_PASSWORD}", "-h", "127.0.0.1",
                           "-U", "postgres", "-d", db], input=statements, capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def ctr(container: str) -> dict[str, Any]:
    return {"mode": "container", "container": container, "host": "127.0.0.1", "port": 5432, "user": "erni",
            "password": CONTAINER_PASSWORD}


def test_container_mode_dump_verify_restore(container: str, make_db, backup_dir: Path) -> None:
    conn = ctr(container)
    res = pg({"state": "dump", "database": "erni_src", "backup_dir": str(backup_dir)}, conn=conn)
    assert not res.get("failed"), res.get("msg")
    assert CONTAINER_PASSWORD not in json.dumps(res)
    path = res["file"]
    meta = meta_of(path)
    assert meta["mode"] == "container" and meta["container"] == container
    assert Path(path).read_bytes()[:5] == b"PGDMP"
    assert meta["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert meta["fingerprint"]["consistency"] == "snapshot"
    # the same rows give the same fingerprint in the container as over TCP on the host
    host_fp = pg({"state": "fingerprint", "database": make_db()})
    assert meta["fingerprint"]["digest"] == host_fp["digest"]

    res = pg({"state": "verify", "backup_file": path, "database": "erni_src", "scratch_prefix": SCRATCH}, conn=conn)
    assert res["verified"] is True, res.get("msg")
    names = in_container(container, "postgres", "SELECT datname FROM pg_database").split()
    assert [n for n in names if n.startswith(SCRATCH)] == []

    in_container(container, "erni_src", "SET ROLE erni; UPDATE people SET name = 'x'; DELETE FROM billing.orders;"
                                         "CREATE TABLE leftover (i int);")
    res = pg({"state": "restore", "database": "erni_src", "backup_file": path}, conn=conn)
    assert res["fingerprint_matches"] is True, res.get("msg")
    assert res["dropped_tables"] == ["public.leftover"]
    res = pg({"state": "fingerprint", "database": "erni_src"}, conn=conn)
    assert res["digest"] == meta["fingerprint"]["digest"] and res["rows"] == 7


def test_container_mode_names_a_missing_container_and_a_bad_password(container: str, backup_dir: Path) -> None:
    res = pg({"state": "fingerprint", "database": "erni_src"}, conn={**ctr(container), "container": "erni_test_absent"})
    assert res["failed"] is True and res["msg"].startswith("container 'erni_test_absent' not found")
    res = pg({"state": "dump", "database": "erni_src", "backup_dir": str(backup_dir)},
             conn={**ctr(container), "password": "wrong-" + secrets.token_hex(4)})
    assert res["failed"] is True
    assert res["msg"].startswith(f"cannot connect to PostgreSQL at 127.0.0.1:5432 (inside container {container}) "
                                 f"as erni: ")
    assert listing(backup_dir) == []


# ------------------------------------------------------------------ the reference app's migration knobs

def app_migrate(db: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    app = Path(__file__).resolve().parents[2] / "sandbox" / "app" / "erni_app.py"
    full = {**os.environ, "APP_VERSION": "1.2.3", "OPENWEBUI_DB_NAME": db, "POSTGRES_USER": USER,
            "POSTGRES_PASSWORD": PASSWORD, "OPENWEBUI_DB_PORT": "5432", **env}
    return subprocess.run([sys.executable, str(app), "migrate", *args], env=full, capture_output=True,
                          text=True, timeout=60)


def test_the_failing_migration_knob_fails_only_where_it_is_told_and_damages_only_when_told(make_db) -> None:
    db = make_db("")
    assert app_migrate(db).returncode == 0                                   # the release's own 0001, 0002
    sql(db, "INSERT INTO chats (title, model) VALUES ('kept', 'm')")
    knob = {"MIGRATION_FAIL": "1", "MIGRATION_FAIL_IN": "production"}
    status = json.loads(app_migrate(db, "--status", **knob, ENVIRONMENT="staging").stdout)
    assert status["pending"] == [9010203]                                    # numbered after release 1.2.3
    clean = app_migrate(db, **{**knob, "MIGRATION_FAIL": "clean"}, ENVIRONMENT="production")
    assert clean.returncode == 1 and "9010203_reshape_chats failed" in clean.stderr
    assert sql(db, "SELECT title FROM chats") == [("kept",)]                # undone by its own transaction
    damage = app_migrate(db, **knob, ENVIRONMENT="production")
    assert damage.returncode == 1 and sql(db, "SELECT title FROM chats") == [("lost in migration",)]
    sql(db, "UPDATE chats SET title = 'kept'")
    passed = app_migrate(db, **knob, ENVIRONMENT="staging")                 # elsewhere it applies
    assert passed.returncode == 0 and json.loads(passed.stdout)["applied"] == [9010203]
    assert sql(db, "SELECT title, model_ref FROM chats") == [("kept", None)]
