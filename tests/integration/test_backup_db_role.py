"""roles/backup_db through ansible-playbook (tests/playbooks/backup_db.yml) on a scratch database of
the sandbox's PostgreSQL; the assertions look at what is really in the backup directory and in the
database, and at the facts the role publishes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from helpers import PlaybookRun, run_playbook, secret

USER = "openwebui_user"
PASSWORD = secret("production_db_password")
SCRATCH = f"erni_test_r{secrets.token_hex(3)}_"
KNOWN_SQL = r"""
CREATE TABLE chats (id int PRIMARY KEY, title text, avatar bytea);
INSERT INTO chats VALUES (1, 'Grüezi 👋', '\x00ff'::bytea), (2, NULL, NULL), (3, '', '\x'::bytea);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id bigserial PRIMARY KEY, chat_id int REFERENCES chats(id), at timestamptz, body jsonb);
INSERT INTO audit.events (chat_id, at, body) VALUES (1, '2026-11-27 12:00:00+00', '{"a": 1}'), (3, NULL, NULL);
"""


@pytest.fixture(scope="module", autouse=True)
def sandbox_up() -> None:
    """Overrides the integration conftest's fixture of the same name: these tests need only the
    sandbox's PostgreSQL, so they ask it directly instead of running `sandbox/bin/sandbox status`."""
    try:
        connect("openwebui").close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"the sandbox's PostgreSQL on 127.0.0.1:5432 does not answer: {exc}")


def connect(db: str):
    conn = psycopg2.connect(host="127.0.0.1", port=5432, dbname=db, user=USER, password=PASSWORD)
    conn.autocommit = True
    return conn


def sql(db: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(connect(db)) as conn, conn.cursor() as cur:
        cur.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def scratch_databases() -> list[str]:
    return [r[0] for r in sql("openwebui", "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                              (SCRATCH,))]


def content(db: str) -> list[list[tuple[Any, ...]]]:
    def norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return [norm(sql(db, "SELECT * FROM chats ORDER BY id")), norm(sql(db, "SELECT * FROM audit.events ORDER BY id"))]


@pytest.fixture
def db() -> Iterator[str]:
    name = f"erni_test_{secrets.token_hex(5)}"
    sql("openwebui", f'CREATE DATABASE "{name}"')
    try:
        sql(name, KNOWN_SQL)
        yield name
    finally:
        for n in [name, *scratch_databases()]:
            sql("openwebui", f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    d = tmp_path / "backups"
    d.mkdir()
    return d


def play(db: str, backup_dir: Path, result: Path, *args: str, **extra: Any) -> PlaybookRun:
    """The test playbook on localhost only (no inventory, so no environment's variables leak in); the
    password goes in through the environment."""
    ev = {"backup_db_name": db, "backup_db_dir": str(backup_dir), "backup_db_scratch_prefix": SCRATCH,
          "backup_db_test_result_file": str(result), **extra}
    run = run_playbook("-i", "localhost,", "tests/playbooks/backup_db.yml", "-e", json.dumps(ev), *args,
                       env={"BACKUP_DB_TEST_PASSWORD": PASSWORD}, timeout=120)
    assert PASSWORD not in run.output
    return run


def dumps_in(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".dump"))


def test_check_mode_then_backup_then_retention(db: str, backup_dir: Path, tmp_path: Path) -> None:
    result = tmp_path / "result.json"

    run = play(db, backup_dir, result, "--check")
    assert run.rc == 0, run.output[-3000:]
    assert run.recap()["failed"] == 0
    assert os.listdir(backup_dir) == []                                   # check mode wrote nothing
    published = json.loads(result.read_text())["backup_db_result"]
    assert published["check_mode"] is True and published["verified"] is False
    assert published["file"].startswith(f"{backup_dir}/{db}-")
    assert f"would dump {db}" in run.output

    run = play(db, backup_dir, result)
    assert run.rc == 0, run.output[-3000:]
    assert run.recap()["failed"] == 0
    assert "Check: a database snapshot is taken" in run.output
    assert "Check: the snapshot restores and matches the source" in run.output
    (first,) = dumps_in(backup_dir)
    path = backup_dir / first
    meta = json.loads((backup_dir / (first + ".json")).read_text())
    assert meta["verified"] is True and meta["verified_at"].endswith("Z")
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    published = json.loads(result.read_text())["backup_db_result"]
    assert published["file"] == str(path) and published["sha256"] == meta["sha256"]
    assert published["bytes"] == path.stat().st_size and published["verified"] is True
    assert isinstance(published["seconds"], float) and isinstance(published["restore_seconds"], float)
    assert [(t["table"], t["rows_source"], t["rows_restored"], t["checksum_match"]) for t in published["tables"]] \
        == [("audit.events", 2, 2, True), ("public.chats", 3, 3, True)]
    assert scratch_databases() == []

    # a second run with a retention of one: the new backup stays, the first one goes
    run = play(db, backup_dir, result, backup_db_retention_count=1)
    assert run.rc == 0, run.output[-3000:]
    (second,) = dumps_in(backup_dir)
    assert second != first
    assert sorted(os.listdir(backup_dir)) == [second, second + ".json"]
    assert json.loads(result.read_text())["backup_db_result"]["pruned"] == [str(path)]


def test_rollback_restores_the_backup_and_freshness_is_checked(db: str, backup_dir: Path, tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    original = content(db)
    run = play(db, backup_dir, result, backup_db_test_steps=["backup", "freshness"])
    assert run.rc == 0, run.output[-3000:]
    assert "Check: the newest backup is recent and verified" in run.output
    fresh = json.loads(result.read_text())["backup_db_freshness"]
    assert fresh["verified"] is True and fresh["age_hours"] < 0.1
    (dump,) = dumps_in(backup_dir)

    # a "failed migration": rows damaged, a table added
    sql(db, "UPDATE chats SET title = 'migrated badly'; DELETE FROM audit.events WHERE id = 2;"
            "CREATE TABLE public.chats_v2 (id int)")
    assert content(db) != original
    run = play(db, backup_dir, result, backup_db_test_steps=["restore", "freshness"],
               backup_db_restore_file=str(backup_dir / dump), backup_db_max_age_hours=0.00001)
    assert content(db) == original                                       # the rollback happened...
    assert sql(db, "SELECT to_regclass('public.chats_v2')") == [(None,)]
    published = json.loads(result.read_text())
    assert published["backup_db_restore_result"]["fingerprint_matches"] is True
    assert published["backup_db_restore_result"]["dropped_tables"] == ["public.chats_v2"]
    assert "Check: the restored database equals the backup" in run.output
    assert run.rc == 2 and run.recap()["failed"] == 1                   # ...and the stale backup was caught
    assert f"The newest backup, {backup_dir / dump}, is" in run.output and "(limit 1e-05 h)" in run.output


def test_a_missing_directory_or_a_bad_mode_stops_before_anything(db: str, tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    missing = tmp_path / "not-mounted"
    run = play(db, missing, result)
    assert run.rc == 2 and not missing.exists()
    assert f"backup_db_dir {missing} does not exist: create it" in run.output
    assert "TASK [backup_db : Dump the database into the backup directory]" not in run.output
    run = play(db, tmp_path, result, backup_db_mode="bogus")
    assert run.rc == 2
    assert "backup_db_mode" in run.output and "tcp, container" in run.output
    assert dumps_in(tmp_path) == []
