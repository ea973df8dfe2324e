#!/usr/bin/python
# -*- coding: utf-8 -*-
# erni-deploy: PostgreSQL backups that are proven by restoring them.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_backup
short_description: Dump, verify by restoring, restore, fingerprint and prune PostgreSQL backups
description:
  - One action per call, chosen by O(state). The checklist's "Create database snapshot",
    "Database backups tested (restore verification)", "Database rollback scripts tested" and
    "Backups running automatically" rest on it.
  - V(dump) runs C(pg_dump -Fc) into O(backup_dir) under a hidden temporary name, renamed when
    complete, then writes C(NAME.dump.json) beside it, with the file name, sha256, size, database,
    host, server and pg_dump versions, start and end (UTC), seconds, the source's fingerprint and
    C(verified=false). The fingerprint is taken in the dump's own snapshot (the dump runs with
    C(--snapshot) exported by a REPEATABLE READ transaction that also runs the fingerprint query);
    if no snapshot can be exported it is taken right after the dump, and C(fingerprint.consistency)
    says which. Before writing, free space in O(backup_dir) must be at least the database's size
    (C(pg_database_size)) times O(space_factor). A failed or interrupted dump leaves no file behind
    (temporary files of killed runs are removed by the next dump).
  - The fingerprint of a database lists, for every user table (all schemas but the system ones;
    tables owned by extensions left out), its row count and a checksum that does not depend on row
    order, the sum as numeric of C(hashtextextended) (seed 0) of each row's text, computed with fixed
    session settings (TimeZone UTC, DateStyle ISO, bytea_output hex, extra_float_digits 1) so that
    the same rows always give the same sum.
  - V(verify) checks the file's sha256 against its metadata, restores it into a new scratch database
    (O(scratch_prefix) and a random suffix; dropped afterwards, also on failure), fingerprints it and
    compares each table with the fingerprint recorded at dump time (or with the live database,
    O(compare_with=source)). It records C(verified) and C(verified_at) in the metadata. A backup that
    does not restore, or restores with other counts or checksums, fails the task naming the tables.
  - V(restore) checks the sha256 against the metadata, then replaces the contents of O(database) with
    the backup in a single transaction (C(pg_restore --clean --if-exists --single-transaction)
    piped into C(psql), after dropping tables the backup does not have, see O(drop_extra_tables)),
    and returns the fingerprint afterwards and whether it equals the backup's. Used by rollback.
  - V(fingerprint) is read-only and returns the fingerprint of O(database); with O(backup_file), also
    whether it equals that backup's (C(matches), C(differing_tables), C(differences)).
  - V(prune) keeps the newest O(retention_count) backups and those younger than O(retention_days)
    (a backup either rule keeps is kept), and never deletes the newest verified backup.
  - Client tools run on the target over TCP (O(mode=tcp)), or inside a container through
    C(docker exec) (O(mode=container)); the dump is streamed out and restores are streamed in, and
    the fingerprint and verify queries run through the container's C(psql). The password is passed
    as E(PGPASSWORD) in the environment (C(docker exec -e PGPASSWORD)), never on a command line.
  - In check mode V(dump), V(verify), V(restore) and V(prune) say what they would do and change
    nothing (the read-only preconditions, such as free space and the sha256, are still checked);
    V(fingerprint) runs.
version_added: "1.0.0"
author: erni-deploy
options:
  state:
    description: The action.
    type: str
    choices: [dump, verify, restore, fingerprint, prune]
    required: true
  mode:
    description:
      - V(tcp) runs the client tools here and connects to O(host):O(port).
      - V(container) runs them in O(container) with C(docker exec); O(host) and O(port) are then
        as seen from inside the container.
    type: str
    choices: [tcp, container]
    default: tcp
  container:
    description: Name or id of the container that runs PostgreSQL's client tools (O(mode=container)).
    type: str
  docker_cli:
    description: The docker command used in container mode.
    type: str
    default: docker
  host:
    description: PostgreSQL host.
    type: str
    default: 127.0.0.1
  port:
    description: PostgreSQL port.
    type: int
    default: 5432
  database:
    description:
      - The database to dump, restore into or fingerprint. With V(verify), the source for
        O(compare_with=source) and the database connected to while creating the scratch database.
    type: str
  user:
    description: PostgreSQL user (default, the user running the tools). Needs CREATEDB for V(verify).
    type: str
  password:
    description: PostgreSQL password; passed in the environment only.
    type: str
  connect_timeout:
    description: Seconds to wait for a connection.
    type: int
    default: 10
  timeout:
    description:
      - Seconds each step may take (the dump with its fingerprint, a restore, a query). On timeout
        the tools are killed and this run's server sessions terminated.
    type: float
    default: 3600
  bin_dir:
    description:
      - Directory of C(pg_dump), C(pg_restore) and C(psql) (inside the container in container mode).
        Default, the PATH, then the newest C(/usr/lib/postgresql/*/bin).
    type: path
  backup_dir:
    description:
      - Directory of the backups. Required for V(dump) and V(prune); V(verify) uses its newest backup
        when O(backup_file) is not given. It must exist (it is not created).
    type: path
  backup_file:
    description:
      - The backup to verify or restore (required for V(restore)); with V(fingerprint), the backup whose
        fingerprint the database is compared with.
    type: path
  name_prefix:
    description:
      - Backups are named C(PREFIX-YYYYMMDDTHHMMSSZ.dump). V(prune) and V(verify) without O(backup_file)
        only consider files with this prefix. Default, O(database) (all C(*.dump) files when neither is set).
    type: str
  space_factor:
    description:
      - Free space needed in O(backup_dir) before a dump, as a multiple of C(pg_database_size). The
        custom format is compressed and holds no index data, so a dump is usually much smaller than the
        database; 1.2 leaves room for incompressible data. V(0) turns the check off.
    type: float
    default: 1.2
  scratch_prefix:
    description: Prefix of the scratch database V(verify) creates (lower-case letters, digits, C(_)).
    type: str
    default: erni_verify_
  maintenance_db:
    description:
      - Database to connect to while creating and dropping the scratch database (default O(database),
        else C(postgres)).
    type: str
  compare_with:
    description: What V(verify) compares the restored database with.
    type: str
    choices: [metadata, source]
    default: metadata
  drop_extra_tables:
    description:
      - V(restore) first drops (CASCADE) the tables the target has and the backup does not, for example
        tables created by a failed migration, in the same transaction, so that the result equals the backup.
    type: bool
    default: true
  if_changed:
    description:
      - V(restore) first compares the target's fingerprint with the backup's and restores only when they
        differ (C(restored) says which). A migration that failed inside its own transaction changed
        nothing, and a restore then would only cost time.
    type: bool
    default: false
  no_owner:
    description: V(restore) without restoring ownership (C(pg_restore --no-owner)).
    type: bool
    default: false
  no_acl:
    description: V(restore) without restoring privileges (C(pg_restore --no-acl)).
    type: bool
    default: false
  retention_count:
    description: V(prune) keeps this many newest backups (0 keeps none but the newest verified).
    type: int
  retention_days:
    description: V(prune) keeps backups younger than this many days.
    type: float
notes:
  - Verification restores with C(--no-owner --no-acl), so the user needs no other roles; it must be
    able to create the extensions the dump uses.
  - Rows of tables owned by extensions, sequences' positions, functions and other objects are not
    part of the fingerprint.
requirements:
  - PostgreSQL client tools (pg_dump, pg_restore, psql) of at least the server's major version,
    here or in the container.
"""

EXAMPLES = r"""
- name: Create database snapshot
  pg_backup:
    state: dump
    host: 127.0.0.1
    database: openwebui
    user: openwebui_user
    password: "{{ db_password }}"
    backup_dir: /var/backups/erni-ki/postgres
  register: snapshot
  no_log: true

- name: "Check: the snapshot restores and matches the source"
  pg_backup:
    state: verify
    backup_file: "{{ snapshot.file }}"
    database: openwebui
    user: openwebui_user
    password: "{{ db_password }}"
  no_log: true

- name: Roll the database back to the snapshot
  pg_backup:
    state: restore
    backup_file: "{{ snapshot.file }}"
    mode: container
    container: erni-ki-db-1
    host: 127.0.0.1
    database: openwebui
    user: openwebui_user
    password: "{{ db_password }}"
  register: rollback
  no_log: true

- name: Keep a week of backups, and always the newest verified one
  pg_backup:
    state: prune
    backup_dir: /var/backups/erni-ki/postgres
    name_prefix: openwebui
    retention_count: 7
"""

RETURN = r"""
file:
  description: Absolute path of the backup dumped, verified or restored (dump in check mode, the file it would write).
  returned: state is dump, verify or restore
  type: str
metadata_file:
  description: Path of the backup's metadata file.
  returned: state is dump
  type: str
sha256:
  description: sha256 of the backup file.
  returned: state is dump, verify or restore (not dump in check mode)
  type: str
bytes:
  description: Size of the backup file.
  returned: state is dump (not in check mode)
  type: int
started:
  description: UTC time the dump started (ISO 8601 with Z).
  returned: state is dump (not in check mode)
  type: str
ended:
  description: UTC time the dump ended.
  returned: state is dump (not in check mode)
  type: str
seconds:
  description: Seconds the dump took.
  returned: state is dump (not in check mode)
  type: float
server_version:
  description: Version of the PostgreSQL server.
  returned: state is dump
  type: str
pg_dump_version:
  description: Version of the pg_dump that made the dump.
  returned: state is dump (not in check mode)
  type: str
database_bytes:
  description: pg_database_size of the source.
  returned: state is dump
  type: int
bytes_free:
  description: Free bytes in backup_dir before the dump.
  returned: state is dump
  type: int
bytes_needed:
  description: Free bytes the dump needed (database_bytes times space_factor).
  returned: state is dump
  type: int
removed_partials:
  description: Temporary files of interrupted dumps that were (or would be) removed.
  returned: state is dump
  type: list
  elements: str
fingerprint:
  description:
    - Fingerprint C({tables, table_count, rows, digest, taken_at}); each table C({table, rows, checksum}).
      For dump the source's (with C(consistency) V(snapshot) or V(after_dump ...)); for verify the
      restored scratch database's; for restore the target's after the restore.
  returned: state is dump, verify or restore (not in check mode)
  type: dict
tables:
  description:
    - State fingerprint, one C({table, rows, checksum}) per table. States verify and restore, one
      C({table, rows_source, rows_restored, checksum_match, status}) per table.
  returned: state is fingerprint, verify or restore (not in check mode)
  type: list
  elements: dict
table_count:
  description: Number of user tables.
  returned: state is fingerprint
  type: int
rows:
  description: Rows in all user tables.
  returned: state is fingerprint
  type: int
digest:
  description: sha256 over the per-table fingerprint; equal digests mean equal fingerprints.
  returned: state is fingerprint
  type: str
restored:
  description: Whether V(restore) replaced the database (false with O(if_changed) when it already equalled the backup).
  returned: state is restore (not in check mode)
  type: bool
matches:
  description: Whether the database's fingerprint equals O(backup_file)'s.
  returned: state is fingerprint with backup_file
  type: bool
verified:
  description: Whether the backup restored and matched (dump, always false).
  returned: state is dump or verify
  type: bool
verified_at:
  description: UTC time recorded as the verification time in the metadata.
  returned: state is verify (not in check mode, when the backup has metadata)
  type: str
restore_seconds:
  description: Seconds the restore took.
  returned: state is verify or restore (not in check mode)
  type: float
scratch_database:
  description: Name of the scratch database verify used (and dropped).
  returned: state is verify (not in check mode)
  type: str
differing_tables:
  description: Tables whose rows or checksum differ, or that are missing on one side.
  returned: state is verify or restore (not in check mode), or fingerprint with backup_file
  type: list
  elements: str
fingerprint_matches:
  description: Whether the target's fingerprint after the restore equals the one in the backup's metadata.
  returned: state is restore (not in check mode)
  type: bool
extra_tables:
  description: Tables the target had that the backup does not.
  returned: state is restore
  type: list
  elements: str
dropped_tables:
  description: Extra tables that were (or would be) dropped.
  returned: state is restore
  type: list
  elements: str
deleted:
  description: Backups deleted (would be, in check mode) by prune, each C({file, time, verified, files}).
  returned: state is prune
  type: list
  elements: dict
kept:
  description: Backups prune kept, each with the C(reasons) it was kept.
  returned: state is prune
  type: list
  elements: dict
protected:
  description: The newest verified backup, which prune never deletes (null when none is verified).
  returned: state is prune
  type: str
msg:
  description: What was (or would be) done.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.erni_pg import (
    PgBackupError,
    PgConnection,
    dump,
    fingerprint,
    interruptible,
    prune,
    restore,
    verify,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["dump", "verify", "restore", "fingerprint", "prune"]),
            mode=dict(type="str", choices=["tcp", "container"], default="tcp"),
            container=dict(type="str"),
            docker_cli=dict(type="str", default="docker"),
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=5432),
            database=dict(type="str"),
            user=dict(type="str"),
            password=dict(type="str", no_log=True),
            connect_timeout=dict(type="int", default=10),
            timeout=dict(type="float", default=3600),
            bin_dir=dict(type="path"),
            backup_dir=dict(type="path"),
            backup_file=dict(type="path"),
            name_prefix=dict(type="str"),
            space_factor=dict(type="float", default=1.2),
            scratch_prefix=dict(type="str", default="erni_verify_"),
            maintenance_db=dict(type="str"),
            compare_with=dict(type="str", choices=["metadata", "source"], default="metadata"),
            drop_extra_tables=dict(type="bool", default=True),
            if_changed=dict(type="bool", default=False),
            no_owner=dict(type="bool", default=False),
            no_acl=dict(type="bool", default=False),
            retention_count=dict(type="int"),
            retention_days=dict(type="float"),
        ),
        required_if=[
            ["mode", "container", ["container"]],
            ["state", "dump", ["database", "backup_dir"]],
            ["state", "fingerprint", ["database"]],
            ["state", "restore", ["database", "backup_file"]],
            ["state", "prune", ["backup_dir"]],
            ["state", "prune", ["retention_count", "retention_days"], True],
            ["state", "verify", ["backup_file", "backup_dir"], True],
        ],
        supports_check_mode=True,
    )
    p = module.params
    checks = [("port", 1 <= p["port"] <= 65535, "from 1 to 65535"),
              ("connect_timeout", p["connect_timeout"] >= 1, "at least 1"),
              ("timeout", p["timeout"] > 0, "more than 0"),
              ("space_factor", p["space_factor"] >= 0, "0 or more"),
              ("retention_count", p["retention_count"] is None or p["retention_count"] >= 0, "0 or more"),
              ("retention_days", p["retention_days"] is None or p["retention_days"] >= 0, "0 or more")]
    for key, ok, rule in checks:
        if not ok:
            module.fail_json(msg=f"{key}={p[key]} must be {rule}")
    if p["mode"] == "tcp" and p["container"]:
        module.warn(f"container={p['container']} is ignored with mode=tcp")

    conn = PgConnection(host=p["host"], port=p["port"], user=p["user"], password=p["password"],
                        database=p["database"], mode=p["mode"], container=p["container"], docker=p["docker_cli"],
                        bin_dir=p["bin_dir"], connect_timeout=p["connect_timeout"], timeout=p["timeout"])
    prefix = p["name_prefix"] or p["database"]
    state, check = p["state"], module.check_mode
    try:
        with interruptible():
            if state == "dump":
                result = dump(conn, p["backup_dir"], name_prefix=prefix, space_factor=p["space_factor"],
                              check_mode=check)
            elif state == "verify":
                result = verify(conn, backup_file=p["backup_file"], backup_dir=p["backup_dir"], name_prefix=prefix,
                                scratch_prefix=p["scratch_prefix"], compare_with=p["compare_with"],
                                maintenance_db=p["maintenance_db"], check_mode=check)
            elif state == "restore":
                result = restore(conn, p["backup_file"], drop_extra_tables=p["drop_extra_tables"],
                                 no_owner=p["no_owner"], no_acl=p["no_acl"], check_mode=check,
                                 if_changed=p["if_changed"])
            elif state == "fingerprint":
                result = fingerprint(conn, p["backup_file"])
                result["msg"] = (f"{result['table_count']} tables, {result['rows']} rows in "
                                 f"{p['database']} at {conn.where}")
            else:
                result = prune(p["backup_dir"], p["retention_count"], p["retention_days"], prefix,
                               check_mode=check)
    except PgBackupError as exc:
        details = {k: v for k, v in exc.result.items() if k != "msg"}
        module.fail_json(msg=conn.redact(str(exc)), **details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
