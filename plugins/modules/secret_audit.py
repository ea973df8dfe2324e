#!/usr/bin/python
# erni-deploy: audit named secrets (strength, placeholders, rotation, reuse) and scan code for hard-coded ones.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: secret_audit
short_description: Audit secrets for strength, placeholders, age and reuse; scan code for hard-coded secrets
description:
  - Judges each secret in O(secrets) against the policy of its O(secrets[].kind) and returns one
    verdict per secret with its checks C(present), C(length), C(classes), C(placeholder), C(age)
    (only with O(rotation_record)) and C(reuse).
  - "Default policy per kind: C(password) 20 characters with lower- and upper-case letters, digits
    and symbols; C(webhook_secret), C(jwt_secret) and C(api_key) 32 characters; C(token) 20;
    C(generic) 16. Only C(password) requires character classes by default."
  - "Built-in placeholders (case-insensitive): changeme, change_me, change-me, changeit, password,
    passw0rd, secret, default, example, test, admin, todo, <set>, <strong> and any other value in
    angle brackets, runs of x (xxx, xxxx-xxxx), values made of one repeated character, and values
    containing changeme, change_me, change-me or example."
  - With O(scan_paths), scans files with the detect-secrets library (its default plugins and
    filters) and reports each finding by file, line and type.
  - No secret value, nor any piece of one six characters or longer, appears in the result or its
    messages; a name, path or message that would carry one is masked with C(********).
  - Read-only; runs in check mode and never reports a change.
version_added: "1.0.0"
author: erni-deploy
options:
  secrets:
    description: The secrets to audit. Names must be unique.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the secret, as the results and the rotation record call it.
        type: str
        required: true
      value:
        description: The secret. Empty or left out, the secret fails as not set.
        type: str
      kind:
        description: What the secret is; chooses the default policy.
        type: str
        default: generic
        choices: [password, webhook_secret, jwt_secret, api_key, token, generic]
      min_length:
        description: Minimum length in characters, instead of the kind's (1 or more).
        type: int
      require_classes:
        description: Character classes required, instead of the kind's (an empty list requires none).
        type: list
        elements: str
        choices: [lower, upper, digit, symbol]
  placeholders:
    description: More values treated as placeholders (compared whole, case-insensitively).
    type: list
    elements: str
    default: []
  rotation_record:
    description:
      - YAML or JSON file mapping each secret's name to the date it was last rotated
        (ISO 8601 date or datetime; without a zone, UTC).
      - A secret older than O(max_age_days) fails; a secret missing from the record warns; a date in
        the future (more than 5 minutes) fails. A file that is missing or cannot be parsed fails the
        task.
    type: path
  max_age_days:
    description: Days a secret may go unrotated; 0 or more.
    type: float
    default: 30
  scan_paths:
    description:
      - Files or directories to scan for hard-coded secrets. Any finding fails the
        C(hardcoded_secrets) check.
      - Directories named .git, .venv, node_modules and __pycache__ are always skipped; symbolic links
        are not followed.
    type: list
    elements: path
  scan_exclude:
    description:
      - Regular expressions (Python, searched anywhere in the path) for paths to skip, matched against
        the path relative to the scanned directory with C(/) separators; directories end with C(/).
    type: list
    elements: str
    default: []
  fail_on_error:
    description: Fail the task when any secret or the scan fails (the results are returned either way).
    type: bool
    default: true
notes:
  - At least one of O(secrets) and O(scan_paths) is required.
requirements:
  - detect-secrets (for scan_paths)
  - PyYAML (for a YAML rotation_record)
"""

EXAMPLES = r"""
- name: Secrets are strong, rotated and not hard-coded
  secret_audit:
    secrets:
      - {name: db_password, kind: password, value: "{{ vault_db_password }}"}
      - {name: webhook_secret, kind: webhook_secret, value: "{{ vault_webhook_secret }}"}
      - {name: jwt_secret, kind: jwt_secret, value: "{{ vault_jwt_secret }}"}
      - {name: litellm_master_key, kind: api_key, value: "{{ vault_litellm_master_key }}"}
    rotation_record: "{{ inventory_dir }}/secret-rotation.yml"
    max_age_days: 30
    scan_paths: ["{{ playbook_dir }}/.."]
    scan_exclude: ['^tests/fixtures/']
  no_log: true
  register: secret_audit

- name: Report only, with a local policy for one secret
  secret_audit:
    secrets:
      - name: smtp_password
        value: "{{ vault_smtp_password }}"
        kind: password
        min_length: 24
        require_classes: [lower, upper, digit]
    placeholders: ["{{ company_default_password }}"]
    fail_on_error: false
  no_log: true
"""

RETURN = r"""
secrets:
  description: One result per secret, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: The secret's name., type: str}
    kind: {description: The secret's kind., type: str}
    verdict: {description: "C(fail) if any check failed, else C(warn) if any warned, else C(pass).", type: str}
    checks:
      description: >-
        Checks, each {name, status, value, limit, reason}: present (value true/false), length (value =
        length, limit = minimum), classes (value = classes present, limit = classes required),
        placeholder (value true when it is one), age (value = days since rotation rounded to 0.1,
        limit = O(max_age_days)), reuse (value = number of other secrets with the same value, limit 0).
        A secret that is not set has only the present check.
      type: list
      elements: dict
scan:
  description: The code scan; null without O(scan_paths).
  returned: always
  type: dict
  contains:
    paths: {description: The paths scanned., type: list, elements: str}
    files_scanned: {description: Files scanned., type: int}
    files_skipped: {description: Files skipped by O(scan_exclude) or as symbolic links., type: int}
    dirs_skipped: {description: "Directories skipped whole (always-skipped names, O(scan_exclude), links).", type: int}
    findings:
      description: What was found, sorted; never the secret or its hash.
      type: list
      elements: dict
      contains:
        file: {description: Path relative to the scanned directory., type: str}
        line: {description: Line number., type: int}
        type: {description: "detect-secrets' secret type, e.g. C(AWS Access Key).", type: str}
    errors: {description: "Files that could not be scanned, as {file, error}.", type: list, elements: dict}
    status: {description: "C(fail) with findings, C(warn) when files could not be scanned, else C(pass).", type: str}
    check: {description: "The C(hardcoded_secrets) check (value = number of findings, limit 0).", type: dict}
summary:
  description: >-
    Counts of audited items: each secret by its verdict, and the scan as one item
    (C(failed) alone would be read by Ansible as the task's outcome).
  returned: always
  type: dict
  contains:
    total: {description: Items audited., type: int}
    passed: {description: Items that passed., type: int}
    failed: {description: Items that failed., type: int}
    warned: {description: Items with warnings only., type: int}
msg:
  description: The outcome, naming failed items (and, without failures, warned ones) with reasons; never a value.
  returned: always
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.erni_secrets import (
    DETECT_SECRETS_IMPORT_ERROR,
    HAS_DETECT_SECRETS,
    KINDS,
    AuditInputError,
    audit,
    compile_excludes,
    redactor_for,
)

SECRET_SPEC = {
    "name": {"type": "str", "required": True},
    "value": {"type": "str", "no_log": True},
    "kind": {"type": "str", "default": "generic", "choices": list(KINDS)},
    "min_length": {"type": "int"},
    "require_classes": {"type": "list", "elements": "str", "choices": ["lower", "upper", "digit", "symbol"]},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "secrets": {"type": "list", "elements": "dict", "options": SECRET_SPEC},
            "placeholders": {"type": "list", "elements": "str", "default": [], "no_log": True},
            "rotation_record": {"type": "path"},
            "max_age_days": {"type": "float", "default": 30},
            "scan_paths": {"type": "list", "elements": "path"},
            "scan_exclude": {"type": "list", "elements": "str", "default": []},
            "fail_on_error": {"type": "bool", "default": True},
        },
        required_one_of=[["secrets", "scan_paths"]],
        supports_check_mode=True,
    )
    p = module.params
    secrets = p["secrets"] or []
    redactor = redactor_for(secrets, p["placeholders"] or [])
    invocation = {"module_args": redactor.apply(p)}

    def refuse(msg: str) -> None:  # fail_json exits
        module.fail_json(msg=redactor.text(msg), invocation=invocation)

    seen: dict[str, int] = {}
    for i, spec in enumerate(secrets):
        name = spec["name"].strip()
        if not name:
            refuse(f"secrets[{i}].name is empty: give every secret a name")
        if name in seen:
            refuse(f"secrets[{i}].name {name!r} repeats secrets[{seen[name]}]: names must be unique")
        seen[name] = i
        spec["name"] = name
        if spec["min_length"] is not None and spec["min_length"] < 1:
            refuse(f"secrets[{i}].min_length={spec['min_length']} ({name}) must be 1 or more")
    if not p["max_age_days"] >= 0:  # also refuses NaN
        refuse(f"max_age_days={p['max_age_days']} must be a number of days, 0 or more")
    if p["scan_paths"]:
        if not HAS_DETECT_SECRETS:
            module.fail_json(msg=missing_required_lib("detect-secrets"), exception=str(DETECT_SECRETS_IMPORT_ERROR),
                             invocation=invocation)
        try:
            compile_excludes(p["scan_exclude"])
        except AuditInputError as exc:
            refuse(str(exc))

    try:
        result = audit(secrets, placeholders=p["placeholders"], rotation_record=p["rotation_record"],
                       max_age_days=p["max_age_days"], scan_paths=p["scan_paths"], scan_exclude=p["scan_exclude"])
    except AuditInputError as exc:
        refuse(str(exc))
    except Exception as exc:  # the traceback too may quote a value: it goes out redacted
        module.fail_json(msg=redactor.text(f"secret audit stopped by an unexpected {type(exc).__name__}: {exc}"),
                         exception=redactor.text(traceback.format_exc()), invocation=invocation)

    if result["summary"]["failed"] and p["fail_on_error"]:
        module.fail_json(changed=False, invocation=invocation, **result)
    module.exit_json(changed=False, invocation=invocation, **result)


if __name__ == "__main__":
    main()
