"""compose_env_file: the env file that Compose itself reads back value for value (the real
`docker compose config`, no daemon needed); bad names and NULs are refused naming the variable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

# The filter imports Ansible's controller code, which would turn every later in-process module
# test's warnings into controller warnings: it runs in a process of its own, as under Ansible.
_RUN = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("compose_env", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
args = json.loads(sys.stdin.read())
try:
    print(json.dumps({"text": mod.compose_env_file(*args["args"], **args["kwargs"])}))
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
"""


def compose_env_file(env: dict, *args: str, **kwargs: str) -> str:
    """The filter's text; its error raised as RuntimeError with the filter's message."""
    proc = subprocess.run([sys.executable, "-c", _RUN, str(ROOT / "plugins" / "filter" / "compose_env.py")],
                          input=json.dumps({"args": [env, *args], "kwargs": kwargs}), capture_output=True,
                          text=True, timeout=60, check=True)
    out = json.loads(proc.stdout)
    if "error" in out:
        raise RuntimeError(out["error"])
    return str(out["text"])


# Every character class the issue names, each where it breaks naive quoting: at the end, next
# to a quote, as interpolation, as a comment, as an escape.
HARD = {
    "ENDS_IN_BACKSLASH": "secret-value\\",
    "SINGLE_QUOTE": "it's 'quoted'",
    "DOUBLE_QUOTE": 'say "hi" \\"there\\"',
    "DOLLAR": "$HOME ${PATH} $$ $",
    "SPACES_HASH_EQUALS": "  a # not a comment = b  ",
    "UNICODE": "ünïcødé 密码 ✓",
    "BACKSLASH_N": "literal \\n and \\t",
    "NEWLINE": "line one\nline two",
    "EMPTY": "",
}


def compose_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "app.env").write_text(text)
    (tmp_path / "compose.yml").write_text("services:\n  app:\n    image: scratch\n    env_file: [app.env]\n")
    return subprocess.run(["docker", "compose", "--project-directory", str(tmp_path), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, check=False)


def compose_environment(tmp_path: Path, text: str) -> dict[str, str]:
    proc = compose_config(tmp_path, text)
    assert proc.returncode == 0, proc.stderr
    # `config` prints a compose file, in which a literal $ is written $$
    return {k: v.replace("$$", "$") for k, v in json.loads(proc.stdout)["services"]["app"]["environment"].items()}


def test_compose_reads_back_every_value_exactly(tmp_path: Path) -> None:
    assert compose_environment(tmp_path, compose_env_file(HARD)) == HARD


def test_single_quotes_would_not_have_carried_them(tmp_path: Path) -> None:
    """The format before: a value ending in a backslash runs past its quote, and Compose's error
    quotes the next line, which is the next secret."""
    naive = "".join(f"{k}='{v}'\n" for k, v in {"A": "ends\\", "B": "next-secret-4f1e"}.items())
    proc = compose_config(tmp_path, naive)
    assert proc.returncode != 0 and "next-secret-4f1e" in proc.stderr


def test_the_placeholder_file_has_the_names_and_no_value(tmp_path: Path) -> None:
    text = compose_env_file(HARD, placeholder="placeholder")
    assert compose_environment(tmp_path, text) == dict.fromkeys(HARD, "placeholder")
    assert not any(v and v in text for v in HARD.values() if len(v) > 3)


@pytest.mark.parametrize(("env", "expected"), [
    ({"BAD-NAME": "x"}, "'BAD-NAME' is not an environment variable name"),
    ({"NUL": "a\0b"}, "app_secret_environment.NUL holds a NUL character"),
    ({"NESTED": {"a": 1}}, "app_secret_environment.NESTED is a dict, not a string"),
], ids=["name", "NUL", "nested"])
def test_what_cannot_be_written_is_named_without_its_value(env: dict, expected: str) -> None:
    with pytest.raises(RuntimeError) as err:
        compose_env_file(env, "app_secret_environment")
    assert expected in str(err.value)
    assert "a\0b" not in str(err.value)
