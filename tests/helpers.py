"""Helpers shared by the tests: paths, the sandbox's secrets, and runners of the real tools."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_DIR = Path(os.environ.get("SANDBOX_DIR", ROOT / ".sandbox"))
VENV_BIN = Path(sys.executable).parent
PROD_URL = "https://127.0.0.1:8443"
CA_FILE = str(SANDBOX_DIR / "tls" / "ca.crt")
REGISTRY = "127.0.0.1:5000"


@dataclass
class PlaybookRun:
    rc: int
    output: str
    seconds: float

    def recap(self) -> dict[str, int]:
        """Counts from the PLAY RECAP line of the first host."""
        for line in self.output.splitlines():
            if " : ok=" in line:
                return {k: int(v) for k, v in
                        (item.split("=") for item in line.split(":", 1)[1].split())}
        raise AssertionError(f"no PLAY RECAP in output:\n{self.output[-3000:]}")


def playbook_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", **(env or {})}


def start_playbook(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """ansible-playbook in the background, in its own process group, its output in `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), *args], cwd=ROOT, env=playbook_env(env),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_playbook(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> PlaybookRun:
    """Run ansible-playbook from the repository root, as an operator would."""
    full_env = playbook_env(env)
    t0 = time.monotonic()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), *args], cwd=ROOT, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)
    return PlaybookRun(proc.returncode, proc.stdout, time.monotonic() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secret(name: str) -> str:
    return (SANDBOX_DIR / "secrets" / name).read_text().strip()


_built: dict[tuple[str, tuple[str, ...]], str] = {}


def build_release(version: str, *knobs: str) -> str:
    """Build and push erni-ki:VERSION with the given knobs (once per session); returns the digest."""
    key = (version, tuple(sorted(knobs)))
    if key not in _built:
        proc = subprocess.run([str(ROOT / "sandbox/bin/build-release"), version, *knobs],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        _built[key] = proc.stdout.strip().splitlines()[-1]
    return _built[key]


def image_digest(release: str) -> str | None:
    """The registry digest (sha256:...) of erni-ki:RELEASE as its last push left it (pulled when
    the local copy was removed); None if it was never built."""
    ref = f"{REGISTRY}/erni-ki:{release}"
    for pulled in (False, True):
        proc = subprocess.run(["docker", "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}",
                               ref], capture_output=True, text=True, check=False)
        digest = next((line.split("@", 1)[1] for line in proc.stdout.splitlines()
                       if line.startswith(f"{REGISTRY}/erni-ki@")), None)
        if digest or pulled:
            return digest
        subprocess.run(["docker", "pull", "-q", ref], capture_output=True, check=False, timeout=120)
    return None


def staging_passed(records: Path, release: str, digest: str | None = None) -> Path:
    """The record the staging phase writes for a release that passed it, finished now, with the
    digest staging tested (the release's registry digest unless given). A release never built
    gets a digest no image has: its pull fails before the digest is compared."""
    (records / release).mkdir(parents=True, exist_ok=True)
    record = records / release / "staging.json"
    record.write_text(json.dumps({
        "release": release, "passed": True, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "digest": digest or image_digest(release) or "sha256:" + "0" * 64}))
    return record


def serving_version(url: str = PROD_URL) -> str | None:
    r = requests.get(url + "/api/version", verify=CA_FILE, timeout=5)
    return r.json().get("version") if r.status_code == 200 else None


def auth(env: str = "production", role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {secret(f'{env}_{role}_token')}"}


def db_connect(env: str = "production"):
    names = {"production": ("openwebui", "openwebui_user"),
             "staging": ("openwebui_staging", "openwebui_staging_user")}
    db, user = names[env]
    conn = psycopg2.connect(host="127.0.0.1", port=5432, dbname=db, user=user,
                            password=secret(f"{env}_db_password"))
    conn.autocommit = True
    return conn


def chats_fingerprint(env: str = "production") -> tuple[int, str]:
    """Row count and a checksum over every chat and message, in a stable order."""
    with db_connect(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, title, model FROM chats ORDER BY id")
        chats = cur.fetchall()
        cur.execute("SELECT id, chat_id, role, content FROM messages ORDER BY id")
        messages = cur.fetchall()
    digest = hashlib.sha256(json.dumps([chats, messages], default=str).encode()).hexdigest()
    return len(chats), digest


def chat_rows(env: str = "production") -> set[tuple[str, ...]]:
    """Every chat and message as rows: a deploy's smoke tests add some, nothing may go missing.
    Empty before the environment's first deploy has created the tables."""
    with db_connect(env) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('chats') IS NOT NULL AND to_regclass('messages') IS NOT NULL")
        row = cur.fetchone()
        if not (row and row[0]):
            return set()
        cur.execute("SELECT 'chat', id::text, title, model FROM chats")
        rows = {tuple(map(str, r)) for r in cur.fetchall()}
        cur.execute("SELECT 'message', id::text, chat_id::text, content FROM messages")
        rows |= {tuple(map(str, r)) for r in cur.fetchall()}
    return rows
