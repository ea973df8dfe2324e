"""secret_audit: policies, placeholders, rotation, reuse, and detect-secrets over real files.

Every test plants distinctive values (made at run time, so that this file itself holds no
secret for a scanner to find) and checks, through audit(), that neither a value nor any six
characters of one appear in the module's result.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modules_harness import run_module

SYMBOLS = "!#%&*+-=?@^_~"
CHECK_NAMES = ["present", "length", "classes", "placeholder", "reuse"]
_rng = secrets.SystemRandom()


def random_text(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def strong(n: int = 28) -> str:
    """A password with every character class, n characters long."""
    chars = [_rng.choice(string.ascii_lowercase), _rng.choice(string.ascii_uppercase),
             _rng.choice(string.digits), _rng.choice(SYMBOLS)]
    chars += list(random_text(n - 4, string.ascii_letters + string.digits + SYMBOLS))
    _rng.shuffle(chars)
    return "".join(chars)


PLACEHOLDER = "Site-" + random_text(14)


def strings_in(data: Any) -> list[str]:
    """Every string value (not key) in a result."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for v in data.values() for s in strings_in(v)]
    if isinstance(data, list):
        return [s for v in data for s in strings_in(v)]
    return []


def assert_no_leak(result: dict[str, Any], values: list[str]) -> None:
    """No value appears whole in the JSON, nor any 6 characters of one in any string of it.

    (Keys are the result's fixed schema; "changed" would otherwise share "change" with the
    placeholder "changeme".)
    """
    text = json.dumps(result)
    strings = strings_in(result)
    for value in values:
        assert value not in text, f"a planted value leaked into the result: {text[:2000]}"
        for i in range(len(value) - 5):
            piece = value[i:i + 6]
            leaked = [s for s in strings if piece in s]
            assert not leaked, f"six characters of a planted value leaked: {leaked}"


def audit(args: dict[str, Any], *planted: str, check_mode: bool = False) -> dict[str, Any]:
    """Run secret_audit and check that no secret value (nor anything else planted) leaked."""
    res = run_module("secret_audit", args, check_mode=check_mode)
    values = [s["value"] for s in args.get("secrets") or [] if isinstance(s.get("value"), str) and s["value"]]
    values += [p for p in args.get("placeholders") or [] if p]
    assert_no_leak(res, values + [p for p in planted if p])
    return res


def only(res: dict[str, Any], name: str) -> dict[str, Any]:
    [item] = [s for s in res["secrets"] if s["name"] == name]
    return item


def checks_of(res: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in only(res, name)["checks"]}


# --- strength ---------------------------------------------------------------------------------

def test_a_strong_password_passes() -> None:
    res = audit({"secrets": [{"name": "db_password", "kind": "password", "value": strong(24)}]})
    assert not res.get("failed"), res
    assert res["changed"] is False
    item = only(res, "db_password")
    assert item["verdict"] == "pass" and item["kind"] == "password"
    assert [c["name"] for c in item["checks"]] == CHECK_NAMES
    assert all(c["status"] == "pass" and c["reason"] is None for c in item["checks"])
    checks = checks_of(res, "db_password")
    assert checks["length"]["value"] == 24 and checks["length"]["limit"] == 20
    assert checks["classes"]["value"] == ["lower", "upper", "digit", "symbol"]
    assert res["summary"] == {"total": 1, "passed": 1, "failed": 0, "warned": 0}
    assert res["scan"] is None
    assert res["msg"] == "all 1 audited items passed"


def test_a_short_weak_password_fails_length_and_classes() -> None:
    weak = random_text(12, string.ascii_lowercase)
    res = audit({"secrets": [{"name": "db_password", "kind": "password", "value": weak}]})
    assert res["failed"] is True
    checks = checks_of(res, "db_password")
    assert checks["length"] == {"name": "length", "status": "fail", "value": 12, "limit": 20,
                                "reason": "12 characters, needs at least 20: generate a longer one"}
    assert checks["classes"]["status"] == "fail"
    assert checks["classes"]["value"] == ["lower"]
    assert checks["classes"]["limit"] == ["lower", "upper", "digit", "symbol"]
    assert checks["classes"]["reason"].startswith("missing upper, digit, symbol")
    assert res["msg"].startswith("1 of 1 audited items failed: db_password (length: 12 characters")
    assert res["summary"] == {"total": 1, "passed": 0, "failed": 1, "warned": 0}


def test_a_long_password_without_symbols_fails_classes_only() -> None:
    value = random_text(30, string.ascii_letters) + "7"
    res = audit({"secrets": [{"name": "pg", "kind": "password", "value": value}]})
    checks = checks_of(res, "pg")
    assert checks["length"]["status"] == "pass"
    assert checks["classes"]["status"] == "fail" and checks["classes"]["reason"].startswith("missing symbol")


@pytest.mark.parametrize("length, verdict", [(31, "fail"), (32, "pass")])
def test_a_webhook_secret_needs_32_characters(length: int, verdict: str) -> None:
    value = random_text(length, string.ascii_lowercase + string.digits)
    res = audit({"secrets": [{"name": "webhook_secret", "kind": "webhook_secret", "value": value}],
                 "fail_on_error": False})
    assert only(res, "webhook_secret")["verdict"] == verdict
    length_check = checks_of(res, "webhook_secret")["length"]
    assert (length_check["value"], length_check["limit"], length_check["status"]) == (length, 32, verdict)
    # no character classes are asked of a webhook secret
    assert checks_of(res, "webhook_secret")["classes"]["limit"] == []
    assert "failed" not in res


@pytest.mark.parametrize("kind, minimum", [("jwt_secret", 32), ("api_key", 32), ("token", 20), ("generic", 16)])
def test_each_kind_has_its_minimum_length(kind: str, minimum: int) -> None:
    res = audit({"secrets": [{"name": "short", "kind": kind, "value": random_text(minimum - 1)},
                             {"name": "enough", "kind": kind, "value": random_text(minimum)}],
                 "fail_on_error": False})
    assert checks_of(res, "short")["length"]["status"] == "fail"
    assert checks_of(res, "enough")["length"]["status"] == "pass"
    assert checks_of(res, "enough")["length"]["limit"] == minimum


def test_min_length_and_require_classes_override_the_kind() -> None:
    value = random_text(18, string.ascii_lowercase) + "42"
    res = audit({"secrets": [
        {"name": "relaxed", "kind": "password", "value": value, "min_length": 16,
         "require_classes": ["lower", "digit"]},
        {"name": "strict", "kind": "token", "value": value[::-1], "min_length": 40, "require_classes": ["upper"]},
    ], "fail_on_error": False})
    assert only(res, "relaxed")["verdict"] == "pass"
    strict = checks_of(res, "strict")
    assert strict["length"]["limit"] == 40 and strict["length"]["status"] == "fail"
    assert strict["classes"]["limit"] == ["upper"] and strict["classes"]["status"] == "fail"


# --- placeholders, missing values, reuse ----------------------------------------------------------

@pytest.mark.parametrize("value", ["changeme", "<strong>", "CHANGEME", "Passw0rd", "xxxx-xxxx-xxxx",
                                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "an-example-for-docs"])
def test_a_placeholder_fails(value: str) -> None:
    res = audit({"secrets": [{"name": "jwt_secret", "kind": "generic", "value": value}], "fail_on_error": False})
    placeholder = checks_of(res, "jwt_secret")["placeholder"]
    assert placeholder["status"] == "fail" and placeholder["value"] is True
    assert placeholder["reason"] == "the value is a well-known placeholder: set a real secret"
    assert only(res, "jwt_secret")["verdict"] == "fail"


def test_given_placeholders_are_matched_whole_and_without_case() -> None:
    site_default = "Erni" + random_text(20) + "!"
    res = audit({"secrets": [{"name": "smtp", "value": site_default.upper()},
                             {"name": "other", "value": strong(24)}],
                 "placeholders": [site_default], "fail_on_error": False})
    assert checks_of(res, "smtp")["placeholder"]["reason"] == \
        "the value is one of the given placeholders: set a real secret"
    assert checks_of(res, "other")["placeholder"]["status"] == "pass"


@pytest.mark.parametrize("secret", [{"name": "litellm_key", "kind": "api_key"},
                                    {"name": "litellm_key", "kind": "api_key", "value": ""},
                                    {"name": "litellm_key", "kind": "api_key", "value": "   "}])
def test_a_missing_value_fails_as_not_set(secret: dict[str, str]) -> None:
    planted = strong(40)
    res = audit({"secrets": [secret, {"name": "present_one", "value": planted}]})
    assert res["failed"] is True
    assert only(res, "litellm_key")["checks"] == [
        {"name": "present", "status": "fail", "value": False, "limit": True, "reason": "not set"}]
    assert only(res, "present_one")["verdict"] == "pass"
    assert res["msg"] == "1 of 2 audited items failed: litellm_key (not set)"


def test_the_same_value_under_two_names_fails_both_naming_each_other() -> None:
    shared = strong(36)
    res = audit({"secrets": [
        {"name": "db_password", "kind": "password", "value": shared},
        {"name": "db_backup_password", "kind": "password", "value": shared},
        {"name": "webhook_secret", "kind": "webhook_secret", "value": strong(40)},
    ]})
    assert res["failed"] is True
    first = checks_of(res, "db_password")["reuse"]
    second = checks_of(res, "db_backup_password")["reuse"]
    assert first["status"] == second["status"] == "fail"
    assert first["value"] == second["value"] == 1
    assert first["reason"].startswith("same value as db_backup_password")
    assert second["reason"].startswith("same value as db_password")
    assert checks_of(res, "webhook_secret")["reuse"]["status"] == "pass"
    assert res["summary"] == {"total": 3, "passed": 1, "failed": 2, "warned": 0}


def test_a_name_that_contains_part_of_its_value_is_masked() -> None:
    value = strong(30)
    while "_" in value:     # an underscore in the value would let the mask reach into "key_"
        value = strong(30)
    name = f"key_{value[3:11]}"
    res = audit({"secrets": [{"name": name, "value": value}]})
    assert res["secrets"][0]["name"] == "key_********"
    assert res["secrets"][0]["verdict"] == "pass"


def test_a_value_given_as_a_number_is_audited_and_not_echoed() -> None:
    number = int("9" + random_text(19, string.digits))
    res = audit({"secrets": [{"name": "pin", "value": number}]}, str(number))
    assert checks_of(res, "pin")["length"]["value"] == 20
    assert checks_of(res, "pin")["classes"]["value"] == ["digit"]


# --- rotation ---------------------------------------------------------------------------------------

def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def rotation(tmp_path: Path) -> dict[str, Any]:
    now = datetime.now(UTC)
    record = tmp_path / "secret-rotation.yml"
    record.write_text(
        "# secret name: when it was last rotated\n"
        f"db_password: {_iso(now - timedelta(days=45))}\n"
        f"webhook_secret: {(now - timedelta(days=3)).date().isoformat()}\n"   # a YAML date
        f"jwt_secret: '{(now - timedelta(days=10)).isoformat()}'\n"           # a string with an offset
        f"api_key: {_iso(now + timedelta(days=10))}\n"
        "token: not a date\n")
    secrets_ = [
        {"name": "db_password", "kind": "password", "value": strong(24)},
        {"name": "webhook_secret", "kind": "webhook_secret", "value": strong(40)},
        {"name": "jwt_secret", "kind": "jwt_secret", "value": strong(40)},
        {"name": "api_key", "kind": "api_key", "value": strong(40)},
        {"name": "token", "kind": "token", "value": strong(30)},
        {"name": "smtp_password", "kind": "password", "value": strong(24)},
    ]
    return {"record": record, "secrets": secrets_}


def test_rotation_old_fails_recent_passes_absent_warns_future_fails(rotation: dict[str, Any]) -> None:
    record = rotation["record"]
    res = audit({"secrets": rotation["secrets"], "rotation_record": str(record), "max_age_days": 30,
                 "fail_on_error": False})
    age = {s["name"]: checks_of(res, s["name"])["age"] for s in rotation["secrets"]}
    assert age["db_password"]["status"] == "fail"
    assert age["db_password"]["value"] == 45.0 and age["db_password"]["limit"] == 30
    assert age["db_password"]["reason"].startswith("rotated 45.0 days ago, limit 30")

    # a date means its midnight: 3 days and the hours since, shown to a tenth (4.0 after 22:48 UTC)
    assert age["webhook_secret"]["status"] == "pass" and 3.0 <= age["webhook_secret"]["value"] <= 4.0
    assert age["jwt_secret"]["status"] == "pass" and age["jwt_secret"]["value"] == 10.0

    assert age["api_key"]["status"] == "fail"
    assert "in the future" in age["api_key"]["reason"] and str(record) in age["api_key"]["reason"]

    assert age["token"]["status"] == "fail" and "not an ISO 8601 date" in age["token"]["reason"]

    assert age["smtp_password"]["status"] == "warn"
    assert age["smtp_password"]["reason"].startswith("no rotation record")
    assert only(res, "smtp_password")["verdict"] == "warn"

    assert res["summary"] == {"total": 6, "passed": 2, "failed": 3, "warned": 1}
    assert "failed" not in res
    # a warning alone does not fail the task
    warned_only = audit({"secrets": [rotation["secrets"][-1]], "rotation_record": str(record)})
    assert not warned_only.get("failed")
    assert warned_only["msg"].startswith(
        "no audited item failed, 1 of 1 with warnings: smtp_password (age: no rotation record")


def test_a_json_rotation_record_and_a_longer_limit(tmp_path: Path) -> None:
    record = tmp_path / "rotation.json"
    record.write_text(json.dumps({"db_password": _iso(datetime.now(UTC) - timedelta(days=45))}))
    value = strong(24)
    res = audit({"secrets": [{"name": "db_password", "kind": "password", "value": value}],
                 "rotation_record": str(record), "max_age_days": 60})
    assert not res.get("failed"), res
    assert checks_of(res, "db_password")["age"]["value"] == 45.0


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("db_password: [2024-01-01\n  - : :\n", "is not valid YAML or JSON (line"),
    ("- db_password\n- 2024-01-01\n", "holds a list, not a mapping"),
    ("", "is empty"),
])
def test_a_bad_rotation_record_is_refused_naming_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    record = tmp_path / "rotation.yml"
    if content is not None:
        record.write_text(content)
    res = audit({"secrets": [{"name": "db_password", "kind": "password", "value": strong(24)}],
                 "rotation_record": str(record)})
    assert res["failed"] is True
    assert res["msg"].startswith(f"rotation_record {record} ")
    assert message in res["msg"], res["msg"]
    assert "secrets" not in res


# --- the code scan ------------------------------------------------------------------------------------

def plant_tree(root: Path) -> dict[str, str]:
    """A small source tree with three kinds of hard-coded secret; returns what was planted."""
    aws_key = "AKIA" + random_text(16, string.ascii_uppercase + string.digits)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()).decode()
    blob = base64.b64encode(secrets.token_bytes(33)).decode()
    (root / "app").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "keys").mkdir()
    (root / "app" / "settings.py").write_text(
        f'import os\n\nREGION = "eu-central-1"\nAWS_ACCESS_KEY_ID = "{aws_key}"\nDEBUG = False\n')
    (root / "keys" / "deploy.pem").write_text(pem)
    (root / "config" / "litellm.yml").write_text(
        f'model_list:\n  - model_name: llama3\n    upstream_auth: "{blob}"\n')
    (root / "README.md").write_text("# app\n\nNothing secret here.\n")
    pem_body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return {"aws": aws_key, "pem_body": pem_body, "blob": blob}


def test_the_scan_finds_a_key_a_private_key_and_a_high_entropy_string_by_file_and_line(tmp_path: Path) -> None:
    planted = plant_tree(tmp_path / "src")
    res = audit({"scan_paths": [str(tmp_path / "src")]}, *planted.values())
    assert res["failed"] is True
    scan = res["scan"]
    assert scan["findings"] == [
        {"file": "app/settings.py", "line": 4, "type": "AWS Access Key"},
        {"file": "config/litellm.yml", "line": 3, "type": "Base64 High Entropy String"},
        {"file": "keys/deploy.pem", "line": 1, "type": "Private Key"},
    ]
    assert scan["files_scanned"] == 4 and scan["status"] == "fail"
    assert scan["check"] == {"name": "hardcoded_secrets", "status": "fail", "value": 3, "limit": 0,
                             "reason": "3 possible secrets in 3 files: move them to the vault and rotate them"}
    assert res["summary"] == {"total": 1, "passed": 0, "failed": 1, "warned": 0}
    assert "hardcoded_secrets (3 possible secrets in 3 files" in res["msg"]


def test_a_single_file_can_be_scanned(tmp_path: Path) -> None:
    planted = plant_tree(tmp_path)
    res = audit({"scan_paths": [str(tmp_path / "app" / "settings.py")], "fail_on_error": False}, *planted.values())
    assert res["scan"]["findings"] == [{"file": "settings.py", "line": 4, "type": "AWS Access Key"}]


def test_a_clean_tree_has_no_findings(tmp_path: Path) -> None:
    (tmp_path / "roles" / "app" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "app" / "tasks" / "main.yml").write_text(
        "- name: Write the env file\n  ansible.builtin.template:\n    src: env.j2\n    dest: /srv/app/.env\n"
        "  vars:\n    db_password: \"{{ vault_db_password }}\"\n")
    (tmp_path / "app.py").write_text("import os\n\nPASSWORD = os.environ['DB_PASSWORD']\nprint('ok')\n")
    value = strong(24)
    res = audit({"scan_paths": [str(tmp_path)],
                 "secrets": [{"name": "db_password", "kind": "password", "value": value}]})
    assert not res.get("failed"), res
    assert res["scan"]["findings"] == [] and res["scan"]["files_scanned"] == 2
    assert res["scan"]["status"] == "pass" and res["scan"]["check"]["reason"] is None
    assert res["summary"] == {"total": 2, "passed": 2, "failed": 0, "warned": 0}


def test_excluded_and_always_skipped_paths_are_not_scanned(tmp_path: Path) -> None:
    planted = plant_tree(tmp_path)
    aws_line = f'KEY = "{planted["aws"]}"\n'
    for skipped in ("vendor/lib", "node_modules/pkg", ".git", ".venv/lib", "__pycache__"):
        (tmp_path / skipped).mkdir(parents=True)
        (tmp_path / skipped / "leak.py").write_text(aws_line)
    res = audit({"scan_paths": [str(tmp_path)], "scan_exclude": ["^vendor/", r"\.pem$", "^config/"],
                 "fail_on_error": False}, *planted.values())
    assert res["scan"]["findings"] == [{"file": "app/settings.py", "line": 4, "type": "AWS Access Key"}]
    assert res["scan"]["files_skipped"] == 1  # keys/deploy.pem
    assert res["scan"]["dirs_skipped"] == 6   # config/ and the five others
    # the same tree without the exclusions: vendor is scanned, the always-skipped ones are not
    res = audit({"scan_paths": [str(tmp_path)], "fail_on_error": False}, *planted.values())
    files = {f["file"] for f in res["scan"]["findings"]}
    assert files == {"app/settings.py", "config/litellm.yml", "keys/deploy.pem", "vendor/lib/leak.py"}


# --- input, check mode ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ({"secrets": [{"name": "x", "kind": "passphrase", "value": "@V"}]}, "kind"),
    ({"secrets": [{"name": "x", "value": "@V"}], "max_age_days": -1}, "max_age_days=-1.0 must be"),
    ({"secrets": [{"name": "x", "value": "@V", "min_length": 0}]}, "secrets[0].min_length=0 (x) must be 1 or more"),
    ({"secrets": [{"name": "x", "value": "@V", "require_classes": ["emoji"]}]}, "require_classes"),
    ({"secrets": [{"name": "x", "value": "@V"}, {"name": "x", "value": "@V"}]},
     "secrets[1].name 'x' repeats secrets[0]"),
    ({"secrets": [{"name": " ", "value": "@V"}]}, "secrets[0].name is empty"),
    ({"secrets": [{"value": "@V"}]}, "name"),
    ({"placeholders": [PLACEHOLDER]}, "one of the following is required: secrets, scan_paths"),
    ({"scan_paths": ["/nonexistent/src"]}, "scan_paths[0] /nonexistent/src does not exist"),
    ({"scan_paths": ["/tmp"], "scan_exclude": ["(unclosed"]}, "scan_exclude[0] '(unclosed' is not a valid"),
])
def test_bad_input_is_refused_with_a_message_naming_it(args: dict[str, Any], message: str) -> None:
    value = strong(30)
    for secret in args.get("secrets") or []:
        if secret.get("value") == "@V":
            secret["value"] = value
    res = audit(args)
    assert res["failed"] is True
    assert message in res["msg"], res["msg"]
    assert "summary" not in res


def test_runs_in_check_mode(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print('hello')\n")
    res = audit({"secrets": [{"name": "db_password", "kind": "password", "value": strong(24)}],
                 "scan_paths": [str(tmp_path)]}, check_mode=True)
    assert res["changed"] is False
    assert res["summary"] == {"total": 2, "passed": 2, "failed": 0, "warned": 0}
