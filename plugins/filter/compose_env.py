"""`secrets | compose_env_file`: the text of a Compose env file that carries every value exactly.

Each value is written double-quoted with the escapes Compose's env-file syntax documents
(https://docs.docker.com/compose/env-file/): a
backslash, a double quote, a newline and a carriage return are escaped with a backslash, and `$`
is doubled so that interpolation leaves it alone. Single quotes cannot do this: in them `\\'` is an
escaped quote, so a value ending in a backslash runs past its closing quote (and Compose's error
then quotes the next line, the next secret). Quotes, `#`, `=`, spaces and unicode need nothing.

A name that is not an environment variable name, or a value with a NUL (which no environment
can hold), is refused naming the variable, never the value. With `placeholder`, every value is
replaced by it: a file for validating the Compose definition that holds no secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "$$", "\n": "\\n", "\r": "\\r"}


def compose_env_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in text) + '"'


def compose_env_file(env: Mapping[str, Any], what: str = "the secret environment",
                     placeholder: str | None = None) -> str:
    if not isinstance(env, Mapping):
        raise AnsibleFilterError(f"{what} must be a mapping of variable names to values, not {type(env).__name__}")
    lines = []
    for name in sorted(env):
        if not _NAME.match(str(name)):
            raise AnsibleFilterError(f"{what}: {str(name)!r} is not an environment variable name "
                                     "([A-Za-z_][A-Za-z0-9_]*)")
        value = env[name]
        if isinstance(value, (Mapping, list, tuple)):
            raise AnsibleFilterError(f"{what}.{name} is a {type(value).__name__}, not a string")
        if "\0" in ("" if value is None else str(value)):
            raise AnsibleFilterError(f"{what}.{name} holds a NUL character, which no environment variable can carry")
        lines.append(f"{name}={compose_env_value(value if placeholder is None else placeholder)}\n")
    return "".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"compose_env_file": compose_env_file, "compose_env_value": compose_env_value}
