"""awx/: the AWX configuration as code, checked without an AWX server.

What is checked, and how:
- awx/configure.yml passes ansible-playbook's syntax check, names every task, uses FQCNs,
  hides secrets, and its preflight (the only part that runs here: --tags preflight never
  reaches AWX) stops a run that lacks its required inputs;
- awx/vars.yml (PyYAML) defines job templates whose playbooks exist, whose surveys AWX would
  accept and ask for release_version, a workflow that runs the phases in the checklist's order,
  and a credential type whose injectors AWX would accept and render;
- the monitoring schedules, rendered by Ansible itself (tests/playbooks/awx_render.yml), are
  rrules that AWX would accept and that give the checklist's runs (python-dateutil, which AWX
  uses for schedules too);
- a job runs as AWX runs it: ansible-runner with the survey's extra variables, an inventory
  script, and the vault password answered at the prompt (tests/playbooks/awx_runner_probe.yml).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
import yaml
from dateutil.rrule import rrulestr
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from helpers import ROOT, VENV_BIN

AWX = ROOT / "awx"
CONFIGURE = AWX / "configure.yml"
VARS = AWX / "vars.yml"
PROBE = ROOT / "tests" / "playbooks" / "awx_runner_probe.yml"
RENDER = ROOT / "tests" / "playbooks" / "awx_render.yml"

# Required inputs without a default in vars.yml (documented there in comments).
REQUIRED_INPUTS = {"awx_project_scm_url", "awx_vault_password"}
PHASES = ["pre_deployment", "staging", "production_preparation", "production_deployment", "post_deployment"]
TEAM_PREP = {"confirm_oncall_notified", "confirm_window_scheduled", "confirm_stakeholders_informed"}
SIGN_OFF = {"confirm_qa_signoff", "confirm_devops_signoff", "confirm_techlead_signoff"}
# AWX's survey question types, and the ones whose min/max are lengths.
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
TEXT_TYPES = {"text", "textarea", "password"}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RULE_TIME = "%Y%m%dT%H%M%SZ"


# ----------------------------------------------------------------------------- helpers
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus Ansible's !unsafe tag (a plain string to PyYAML)."""


def _unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_Loader.add_constructor("!unsafe", _unsafe)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}


def ansible_playbook(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), *args], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def module_of(task: dict[str, Any]) -> str:
    """The module key of a task: the one key that names a plugin (it has a dot)."""
    keys = [k for k in task if "." in k]
    assert len(keys) == 1, f"task {task.get('name')!r} has module keys {keys}"
    return keys[0]


def tags_of(task: dict[str, Any]) -> set[str]:
    tags = task.get("tags", [])
    return {tags} if isinstance(tags, str) else set(tags)


@pytest.fixture(scope="module")
def play() -> dict[str, Any]:
    plays = load_yaml(CONFIGURE)
    assert isinstance(plays, list) and len(plays) == 1
    return dict(plays[0])


@pytest.fixture(scope="module")
def tasks(play: dict[str, Any]) -> list[dict[str, Any]]:
    return list(play["tasks"])


@pytest.fixture(scope="module")
def awx_vars() -> dict[str, Any]:
    data = load_yaml(VARS)
    assert isinstance(data, dict)
    return data


def task_using(tasks: list[dict[str, Any]], module: str) -> dict[str, Any]:
    found = [t for t in tasks if module in t]
    assert len(found) >= 1, f"no task uses {module}"
    return found[0]


def survey_errors(spec: list[dict[str, Any]]) -> list[str]:
    """What AWX's survey validation would refuse in these questions (our reading of its rules)."""
    errors: list[str] = []
    seen: set[str] = set()
    for q in spec:
        name = q.get("variable", "?")
        for key in ("question_name", "variable", "type", "required"):
            if key not in q:
                errors.append(f"{name}: no {key}")
        if q.get("type") not in SURVEY_TYPES:
            errors.append(f"{name}: type {q.get('type')!r}")
        if not IDENTIFIER.match(str(name)):
            errors.append(f"{name}: not a variable name")
        if name in seen:
            errors.append(f"{name}: asked twice")
        seen.add(str(name))
        if not isinstance(q.get("required"), bool):
            errors.append(f"{name}: required is not a boolean")
        if q.get("type") in TEXT_TYPES:
            low, high = q.get("min", 0), q.get("max", 1024)
            if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
                errors.append(f"{name}: min {low!r} / max {high!r}")
            default = q.get("default")
            if default not in (None, "") and not (isinstance(default, str) and low <= len(default) <= high):
                errors.append(f"{name}: default {default!r} outside min/max")
    return errors


# --------------------------------------------------------------- configure.yml as a play
def test_configure_passes_the_syntax_check() -> None:
    proc = ansible_playbook("--syntax-check", str(CONFIGURE.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr


def test_configure_is_a_local_play(play: dict[str, Any]) -> None:
    assert play["hosts"] == "localhost"
    assert play["connection"] == "local"
    assert play["gather_facts"] is False
    assert play["vars_files"] == ["vars.yml"]


def test_every_task_is_named_and_uses_a_fqcn(tasks: list[dict[str, Any]]) -> None:
    for task in tasks:
        assert task.get("name"), f"unnamed task: {task}"
        assert module_of(task).split(".")[0] in ("ansible", "awx"), task["name"]


def test_configure_creates_every_object(tasks: list[dict[str, Any]]) -> None:
    used = {module_of(t) for t in tasks}
    for module in ("organization", "project", "inventory", "inventory_source", "credential_type", "credential",
                   "job_template", "workflow_job_template", "schedule"):
        assert f"awx.awx.{module}" in used


def test_only_the_preflight_runs_with_tags_preflight(tasks: list[dict[str, Any]]) -> None:
    """--tags preflight must never reach AWX: no awx.awx task carries that tag (or 'always')."""
    preflight = [t for t in tasks if "preflight" in tags_of(t)]
    assert len(preflight) >= 4
    for task in tasks:
        assert tags_of(task), f"{task['name']}: untagged"
        if module_of(task).startswith("awx.awx."):
            assert not tags_of(task) & {"preflight", "always"}, task["name"]
        else:
            assert "preflight" in tags_of(task), task["name"]
    # The checks come first: nothing is created before every check has passed.
    kinds = [module_of(t).startswith("awx.awx.") for t in tasks]
    assert kinds == sorted(kinds)


def test_secrets_are_handled_with_no_log(tasks: list[dict[str, Any]]) -> None:
    secret_names = ("awx_vault_password", "awx_k8s_auth_api_key", "awx_registry_password")
    for task in tasks:
        text = json.dumps(task)
        if module_of(task) == "awx.awx.credential":
            assert task.get("no_log") is True, task["name"]
        elif any(name in text for name in secret_names) and module_of(task) != "ansible.builtin.assert":
            assert task.get("no_log") is True, task["name"]
    vault = [t for t in tasks if "awx_vault_password" in json.dumps(t.get("awx.awx.credential", {}))]
    assert len(vault) == 1


def test_job_templates_take_only_their_survey(tasks: list[dict[str, Any]]) -> None:
    jt = task_using(tasks, "awx.awx.job_template")["awx.awx.job_template"]
    assert jt["ask_variables_on_launch"] is False
    assert jt["survey_enabled"] is True
    assert jt["survey_spec"]["spec"] == "{{ item.survey }}"
    assert "awx_vault_credential_name" in jt["credentials"] and "awx_env_credential_name" in jt["credentials"]
    wf = task_using(tasks, "awx.awx.workflow_job_template")["awx.awx.workflow_job_template"]
    assert wf["ask_variables_on_launch"] is False and wf["survey_enabled"] is True
    assert wf["workflow_nodes"] == "{{ awx_workflow_nodes }}"


def test_inventories_are_sourced_from_the_project(tasks: list[dict[str, Any]]) -> None:
    source = task_using(tasks, "awx.awx.inventory_source")["awx.awx.inventory_source"]
    assert source["source"] == "scm"
    assert source["source_project"] == "{{ awx_project_name }}"
    assert source["source_path"] == "{{ item.value.source_path }}"


def test_schedules_are_created_from_the_rendered_rrules(tasks: list[dict[str, Any]]) -> None:
    task = task_using(tasks, "awx.awx.schedule")
    assert task["loop"] == "{{ _awx_monitoring_schedules }}"
    args = task["awx.awx.schedule"]
    assert args["rrule"] == "{{ item.rrule }}"
    assert args["enabled"] == "{{ awx_monitoring_enabled | bool }}"
    assert args["unified_job_template"] == "{{ awx_monitoring_job_template }}"


def test_every_variable_is_defined_and_documented(awx_vars: dict[str, Any]) -> None:
    text = CONFIGURE.read_text()
    vars_text = VARS.read_text()
    used = set(re.findall(r"\b_?awx_[a-z0-9_]+\b", text)) - {"_awx_env_inputs"}
    undefined = used - set(awx_vars) - REQUIRED_INPUTS
    assert not undefined
    for name in REQUIRED_INPUTS:
        assert name not in awx_vars, f"{name} must have no default"
        assert re.search(rf"^# {name}:$", vars_text, re.M), f"{name} is not documented in vars.yml"
    # Each public variable sits in a paragraph that starts with (or contains, above it) a comment.
    for paragraph in re.split(r"\n\s*\n", vars_text):
        commented = False
        for line in paragraph.splitlines():
            if line.startswith("#"):
                commented = True
            elif re.match(r"^awx_[a-z0-9_]+:", line):
                assert commented, f"undocumented: {line}"


# ------------------------------------------------------------------ the credential type
def _credential_type(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(task_using(tasks, "awx.awx.credential_type")["awx.awx.credential_type"])


def test_credential_type_injectors_are_ones_awx_accepts(tasks: list[dict[str, Any]]) -> None:
    ctype = _credential_type(tasks)
    assert ctype["kind"] in ("cloud", "net")  # the only kinds AWX allows for custom types
    env = ctype["injectors"]["env"]
    assert {"K8S_AUTH_HOST", "K8S_AUTH_API_KEY", "K8S_AUTH_SSL_CA_CERT", "ERNI_REGISTRY_PASSWORD"} <= set(env)
    for name in env:
        assert IDENTIFIER.match(name), name
        # AWX refuses (and at run time drops) ANSIBLE_* variables from custom credential types.
        assert not name.startswith("ANSIBLE_"), name
    for label in ctype["injectors"]["file"]:
        assert label == "template" or label.startswith("template."), label
    fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
    assert fields["k8s_auth_api_key"]["secret"] is True and fields["registry_password"]["secret"] is True
    assert set(ctype["inputs"]["required"]) <= set(fields)


def _render_injectors(ctype: dict[str, Any], inputs: dict[str, Any],
                      strict: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Render the injectors as AWX does: inputs that were given, missing booleans as False,
    each file template written and named in tower.filename.<label>."""
    env_kwargs: dict[str, Any] = {"undefined": StrictUndefined} if strict else {}
    jinja = ImmutableSandboxedEnvironment(**env_kwargs)
    namespace: dict[str, Any] = {k: v for k, v in inputs.items() if v not in ("", None)}
    for field in ctype["inputs"]["fields"]:
        if field["type"] == "boolean" and field["id"] not in namespace:
            namespace[field["id"]] = False
    files = {label.split(".", 1)[-1]: jinja.from_string(tmpl).render(**namespace)
             for label, tmpl in ctype["injectors"]["file"].items()}
    namespace["tower"] = {"filename": {label: f"/runner/env/tmp_{label}" for label in files}}
    env = {name: jinja.from_string(tmpl).render(**namespace) for name, tmpl in ctype["injectors"]["env"].items()}
    return env, files


def test_credential_type_injectors_render_every_input(tasks: list[dict[str, Any]]) -> None:
    ctype = _credential_type(tasks)
    inputs = {"k8s_auth_host": "https://k8s.example:6443", "k8s_auth_api_key": "tok", "k8s_auth_verify_ssl": True,
              "k8s_auth_ssl_ca_cert": "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
              "registry_url": "registry.example", "registry_username": "deploy", "registry_password": "pw"}
    assert set(inputs) == {f["id"] for f in ctype["inputs"]["fields"]}
    env, files = _render_injectors(ctype, inputs, strict=True)
    assert env["K8S_AUTH_HOST"] == "https://k8s.example:6443"
    assert env["K8S_AUTH_API_KEY"] == "tok"
    assert env["K8S_AUTH_VERIFY_SSL"] == "True"
    assert env["K8S_AUTH_SSL_CA_CERT"] == "/runner/env/tmp_k8s_ca"
    assert files["k8s_ca"] == inputs["k8s_auth_ssl_ca_cert"]
    assert (env["ERNI_REGISTRY_URL"], env["ERNI_REGISTRY_USERNAME"], env["ERNI_REGISTRY_PASSWORD"]) == (
        "registry.example", "deploy", "pw")


def test_credential_type_injectors_without_optional_inputs(tasks: list[dict[str, Any]]) -> None:
    """A credential with nothing filled in: no CA file is pointed at, TLS verification is off
    only because AWX defaults a missing boolean to False (the field's default is True)."""
    ctype = _credential_type(tasks)
    env, _ = _render_injectors(ctype, {}, strict=False)
    assert env["K8S_AUTH_SSL_CA_CERT"] == ""
    assert env["K8S_AUTH_HOST"] == "" and env["ERNI_REGISTRY_PASSWORD"] == ""
    verify = next(f for f in ctype["inputs"]["fields"] if f["id"] == "k8s_auth_verify_ssl")
    assert verify["default"] is True


# --------------------------------------------------------------------- job templates
def test_every_job_template_playbook_exists_and_is_a_playbook(awx_vars: dict[str, Any]) -> None:
    for jt in awx_vars["awx_job_templates"]:
        path = ROOT / jt["playbook"]
        assert path.is_file(), f"{jt['name']}: {jt['playbook']} is missing"
        plays = load_yaml(path)
        assert isinstance(plays, list) and plays
        for entry in plays:
            assert "hosts" in entry or "ansible.builtin.import_playbook" in entry, f"{jt['playbook']}: {entry}"


def test_every_phase_playbook_has_a_job_template(awx_vars: dict[str, Any]) -> None:
    playbooks = [jt["playbook"] for jt in awx_vars["awx_job_templates"]]
    names = [jt["name"] for jt in awx_vars["awx_job_templates"]]
    assert len(set(names)) == len(names)
    assert len(set(playbooks)) == len(playbooks)
    on_disk = {f"playbooks/{p.name}" for p in (ROOT / "playbooks").glob("*.yml")}
    assert on_disk | {"deploy.yml"} == set(playbooks)
    for i, phase in enumerate(PHASES, start=1):
        jt = next(j for j in awx_vars["awx_job_templates"] if j["playbook"] == f"playbooks/{phase}.yml")
        assert jt["name"].startswith(f"erni-deploy: {i} "), jt["name"]
    assert {"erni-deploy: rollback", "erni-deploy: full deploy"} <= set(names)


def test_every_survey_is_valid_and_requires_release_version(awx_vars: dict[str, Any]) -> None:
    surveys = {jt["name"]: jt["survey"] for jt in awx_vars["awx_job_templates"]}
    surveys[awx_vars["awx_workflow_name"]] = awx_vars["awx_workflow_survey"]
    for name, spec in surveys.items():
        assert survey_errors(spec) == [], name
        release = [q for q in spec if q["variable"] == "release_version"]
        assert len(release) == 1, name
        assert release[0]["required"] is True and release[0]["type"] == "text", name
        assert release[0]["min"] >= 5, name  # "1.2.3" at least


def test_survey_validation_catches_what_awx_refuses() -> None:
    good = {"question_name": "Q", "variable": "v", "type": "text", "required": True, "min": 1, "max": 5}
    assert survey_errors([good]) == []
    assert survey_errors([good, dict(good)]) == ["v: asked twice"]
    assert survey_errors([{**good, "min": 6}]) == ["v: min 6 / max 5"]
    assert survey_errors([{**good, "default": "toolong"}]) == ["v: default 'toolong' outside min/max"]
    assert survey_errors([{**good, "type": "string"}]) == ["v: type 'string'"]
    assert survey_errors([{**good, "variable": "a-b"}]) == ["a-b: not a variable name"]


def test_confirmations_are_asked_where_the_checklist_needs_them(awx_vars: dict[str, Any]) -> None:
    by_playbook = {jt["playbook"]: {q["variable"]: q for q in jt["survey"]} for jt in awx_vars["awx_job_templates"]}
    # Team preparation: required before production changes.
    for playbook in ("playbooks/production_preparation.yml", "playbooks/production_deployment.yml", "deploy.yml"):
        questions = by_playbook[playbook]
        assert TEAM_PREP <= set(questions), playbook
        assert all(questions[v]["required"] is True and questions[v]["min"] >= 8 for v in TEAM_PREP), playbook
    # Sign-offs: asked, never required (scheduled runs have nobody to sign).
    for playbook in ("playbooks/post_deployment.yml", "deploy.yml"):
        questions = by_playbook[playbook]
        assert SIGN_OFF <= set(questions), playbook
        assert all(questions[v]["required"] is False for v in SIGN_OFF), playbook
    for playbook in ("playbooks/pre_deployment.yml", "playbooks/staging.yml"):
        assert set(by_playbook[playbook]) == {"release_version"}, playbook
    workflow = {q["variable"]: q for q in awx_vars["awx_workflow_survey"]}
    assert TEAM_PREP | SIGN_OFF | {"release_version"} == set(workflow)


def test_rollback_asks_what_rollback_yml_reads(awx_vars: dict[str, Any]) -> None:
    jt = next(j for j in awx_vars["awx_job_templates"] if j["playbook"] == "playbooks/rollback.yml")
    questions = {q["variable"]: q for q in jt["survey"]}
    text = (ROOT / "playbooks" / "rollback.yml").read_text()
    for variable in ("rollback_release", "rollback_reason", "rollback_restore_backup"):
        assert questions[variable]["required"] is False
        assert variable in text, f"rollback.yml does not read {variable}"
    assert questions["rollback_reason"]["default"] == "manual rollback"


def test_job_template_inventories(awx_vars: dict[str, Any]) -> None:
    inventories = awx_vars["awx_inventories"]
    assert set(inventories) == {"staging", "prod"}
    assert inventories["staging"]["source_path"] == "inventories/staging"
    assert inventories["prod"]["source_path"] == "inventories/prod"
    by_playbook = {jt["playbook"]: jt for jt in awx_vars["awx_job_templates"]}
    assert by_playbook["playbooks/staging.yml"]["inventory"] == "staging"
    assert by_playbook["deploy.yml"]["inventory"] == "prod" and by_playbook["deploy.yml"]["ask_inventory_on_launch"]
    for phase in ("production_preparation", "production_deployment", "post_deployment", "rollback"):
        assert by_playbook[f"playbooks/{phase}.yml"]["inventory"] == "prod", phase
        assert by_playbook[f"playbooks/{phase}.yml"]["ask_inventory_on_launch"] is False, phase


# -------------------------------------------------------------------------- workflow
def test_workflow_runs_the_phases_in_order_on_success(awx_vars: dict[str, Any]) -> None:
    nodes = {n["identifier"]: n for n in awx_vars["awx_workflow_nodes"]}
    assert len(nodes) == len(awx_vars["awx_workflow_nodes"])
    children = {i: [s["identifier"] for s in n["related"].get("success_nodes", [])] for i, n in nodes.items()}
    for node in nodes.values():
        assert set(node["related"]) == {"success_nodes"}, "only success links: a failed phase stops the release"
        assert node["unified_job_template"]["type"] == "job_template"
    targets = [c for kids in children.values() for c in kids]
    assert set(targets) <= set(nodes) and len(targets) == len(set(targets))
    roots = [i for i in nodes if i not in targets]
    assert len(roots) == 1
    order, current = [], roots[0]
    while True:
        order.append(current)
        if not children[current]:
            break
        assert len(children[current]) == 1
        current = children[current][0]
    assert len(order) == len(nodes)
    playbook_of = {jt["name"]: jt["playbook"] for jt in awx_vars["awx_job_templates"]}
    assert [playbook_of[nodes[i]["unified_job_template"]["name"]] for i in order] == [
        f"playbooks/{phase}.yml" for phase in PHASES]


def test_workflow_nodes_only_override_what_their_template_prompts_for(awx_vars: dict[str, Any]) -> None:
    asks = {jt["name"]: jt["ask_inventory_on_launch"] for jt in awx_vars["awx_job_templates"]}
    with_inventory = [n for n in awx_vars["awx_workflow_nodes"] if "inventory" in n]
    assert [n["identifier"] for n in with_inventory] == ["pre-deployment"]
    assert with_inventory[0]["inventory"]["name"] == "{{ awx_inventories.prod.name }}"
    for node in with_inventory:
        assert asks[node["unified_job_template"]["name"]] is True, node["identifier"]


# ------------------------------------------------------- schedules, rendered by Ansible
def render(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"render-{len(list(tmp_path.iterdir()))}.json"
    proc = ansible_playbook(str(RENDER.relative_to(ROOT)), "-e", f"awx_render_out={out}", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert isinstance(data, dict)
    return data


def awx_rrule_errors(rrule: str) -> list[str]:
    """Our reading of AWX's schedule rules: one UTC DTSTART, one RRULE with an INTERVAL,
    no SECONDLY, not both COUNT and UNTIL, COUNT at most 999."""
    errors = []
    if len(re.findall(r"DTSTART:\d{8}T\d{6}Z(?=\s)", rrule)) != 1 or rrule.count("DTSTART") != 1:
        errors.append("one UTC DTSTART:YYYYMMDDTHHMMSSZ")
    rules = re.findall(r"RRULE:(\S+)", rrule)
    if len(rules) != 1:
        errors.append("one RRULE")
    for rule in rules:
        parts = dict(p.split("=", 1) for p in rule.split(";") if "=" in p)
        if "INTERVAL" not in parts:
            errors.append("INTERVAL required")
        if parts.get("FREQ") == "SECONDLY":
            errors.append("SECONDLY")
        if "COUNT" in parts and "UNTIL" in parts:
            errors.append("COUNT and UNTIL")
        if int(parts.get("COUNT", "0")) > 999:
            errors.append("COUNT > 999")
    return errors


def occurrences(rrule: str) -> list[datetime]:
    # AWX keeps DTSTART and RRULE on one line; dateutil reads them as two.
    return list(rrulestr(rrule.replace(" RRULE:", "\nRRULE:")))


def test_awx_rrule_rules_catch_bad_rules() -> None:
    assert awx_rrule_errors("DTSTART:20261127T140000Z RRULE:FREQ=HOURLY;INTERVAL=1;COUNT=24") == []
    assert awx_rrule_errors("DTSTART:20261127T140000 RRULE:FREQ=HOURLY;INTERVAL=1;COUNT=24") == [
        "one UTC DTSTART:YYYYMMDDTHHMMSSZ"]
    assert awx_rrule_errors("DTSTART:20261127T140000Z RRULE:FREQ=HOURLY;COUNT=24") == ["INTERVAL required"]
    assert awx_rrule_errors("DTSTART:20261127T140000Z RRULE:FREQ=DAILY;INTERVAL=1;COUNT=1000") == ["COUNT > 999"]


def test_monitoring_schedules_are_disabled_and_stable_by_default(tmp_path: Path) -> None:
    first, second = render(tmp_path), render(tmp_path)
    monitoring = first["monitoring"]
    assert monitoring["enabled"] is False
    assert monitoring["extra_data"] == {}
    assert monitoring["job_template"] == "erni-deploy: monitoring"
    assert "playbooks/monitor.yml" in (ROOT / "awx" / "vars.yml").read_text()
    # Re-running changes nothing: no rrule depends on the time of the run.
    assert [s["rrule"] for s in monitoring["schedules"]] == [s["rrule"] for s in second["monitoring"]["schedules"]]
    for schedule in monitoring["schedules"]:
        assert awx_rrule_errors(schedule["rrule"]) == [], schedule["rrule"]


def test_monitoring_schedules_follow_the_checklist(tmp_path: Path) -> None:
    start = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    data = render(tmp_path, "-e", "awx_monitoring_enabled=true", "-e", "awx_monitoring_release=1.2.3",
                  "-e", f"awx_monitoring_start={start.strftime(RULE_TIME)}")
    monitoring = data["monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["extra_data"] == {"release_version": "1.2.3"}
    by_rule = {s["rule"]: s["rrule"] for s in monitoring["schedules"]}
    assert set(by_rule) == {"FREQ=MINUTELY;INTERVAL=15;COUNT=8", "FREQ=HOURLY;INTERVAL=1;COUNT=24"}
    for rrule in by_rule.values():
        assert awx_rrule_errors(rrule) == [], rrule

    quarter = occurrences(by_rule["FREQ=MINUTELY;INTERVAL=15;COUNT=8"])
    assert len(quarter) == 8
    assert quarter[0] == start
    assert {b - a for a, b in itertools.pairwise(quarter)} == {timedelta(minutes=15)}
    assert quarter[-1] + timedelta(minutes=15) == start + timedelta(hours=2)  # covers 2 hours

    hourly = occurrences(by_rule["FREQ=HOURLY;INTERVAL=1;COUNT=24"])
    assert len(hourly) == 24
    assert {b - a for a, b in itertools.pairwise(hourly)} == {timedelta(hours=1)}
    assert hourly[0] == start + timedelta(hours=2)  # then hourly: starts when the 15-minute series ends
    assert hourly[-1] - hourly[0] == timedelta(hours=23)
    assert not set(quarter) & set(hourly)


def test_workflow_nodes_render_with_the_inventory_names(tmp_path: Path) -> None:
    data = render(tmp_path, "-e", "awx_organization=Acme")
    nodes = {n["identifier"]: n for n in data["workflow"]["nodes"]}
    assert nodes["pre-deployment"]["inventory"] == {"name": "ERNI-KI prod", "organization": {"name": "Acme"}}
    assert {n["unified_job_template"]["organization"]["name"] for n in nodes.values()} == {"Acme"}


# ------------------------------------------------- the preflight (no AWX is contacted)
SANDBOX_INVENTORIES = json.dumps({"awx_inventories": {
    "staging": {"name": "S", "description": "s", "source_path": "inventories/sandbox"},
    "prod": {"name": "P", "description": "p", "source_path": "inventories/sandbox"}}})
VAULT_SENTINEL = "vault-pw-sentinel-7c1e"


def preflight(*extra: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(str(CONFIGURE.relative_to(ROOT)), "--tags", "preflight", *extra)


def test_preflight_passes_with_the_required_inputs_and_reaches_nothing() -> None:
    proc = preflight("-e", "awx_project_scm_url=https://git.example.org/erni-deploy.git",
                     "-e", f"awx_vault_password={VAULT_SENTINEL}", "-e", SANDBOX_INVENTORIES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "failed=0" in proc.stdout
    assert "Create or update" not in proc.stdout and "awx.awx" not in proc.stdout
    assert VAULT_SENTINEL not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("extra", "message"), [
    ((f"awx_vault_password={VAULT_SENTINEL}",), "awx_project_scm_url is not set"),
    (("awx_project_scm_url=https://git.example.org/x.git",), "awx_vault_password is not set"),
    (("awx_project_scm_url=https://git.example.org/x.git", f"awx_vault_password={VAULT_SENTINEL}",
      "awx_monitoring_enabled=true", "awx_monitoring_release=1.2.3"), "awx_monitoring_start"),
])
def test_preflight_stops_a_run_without_its_inputs(extra: tuple[str, ...], message: str) -> None:
    args = [a for e in extra for a in ("-e", e)]
    proc = preflight(*args, "-e", SANDBOX_INVENTORIES)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout
    assert VAULT_SENTINEL not in proc.stdout + proc.stderr


def test_preflight_stops_when_an_inventory_is_not_in_the_checkout() -> None:
    missing = json.dumps({"awx_inventories": {
        "staging": {"name": "S", "description": "s", "source_path": "inventories/sandbox"},
        "prod": {"name": "P", "description": "p", "source_path": "inventories/no-such-env"}}})
    proc = preflight("-e", "awx_project_scm_url=https://git.example.org/x.git",
                     "-e", f"awx_vault_password={VAULT_SENTINEL}", "-e", missing)
    assert proc.returncode != 0
    assert "inventories/no-such-env is not in this checkout" in proc.stdout


# ---------------------------------------------------- a job, run the way AWX runs it
def new_private_data_dir(base: Path) -> Path:
    """An ansible-runner private data dir laid out as AWX lays one out for each job: the
    project (here its config, plugins and roles, and the probe playbook) under project/, the
    inventory as a script under inventory/. A fresh one per job, as in AWX: ansible-runner
    keeps a job's cmdline and passwords in env/."""
    pdd = base / f"job-{len(list(base.glob('job-*')))}"
    project = pdd / "project"
    project.mkdir(parents=True)
    (pdd / "inventory").mkdir()
    shutil.copy(ROOT / "ansible.cfg", project / "ansible.cfg")
    for name in ("plugins", "roles"):
        (project / name).symlink_to(ROOT / name, target_is_directory=True)
    shutil.copy(PROBE, project / PROBE.name)
    return pdd


@pytest.fixture
def private_data_dir(tmp_path: Path) -> Path:
    return new_private_data_dir(tmp_path)


def write_inventory_script(pdd: Path, data: dict[str, Any]) -> Path:
    """AWX hands a job its inventory as an executable that prints the inventory's JSON."""
    script = pdd / "inventory" / "hosts"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({json.dumps(json.dumps(data))})\n")
    script.chmod(0o700)
    return script


LOCALHOST = {"all": {"hosts": ["localhost"]}, "_meta": {"hostvars": {"localhost": {"ansible_connection": "local"}}}}


def run_job(pdd: Path, extravars: dict[str, Any], **kwargs: Any) -> Any:
    inventory = kwargs.pop("inventory", None) or write_inventory_script(pdd, LOCALHOST)
    return ansible_runner.run(
        private_data_dir=str(pdd), playbook=PROBE.name, extravars=extravars, inventory=str(inventory),
        envvars={"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
                 "ANSIBLE_CONFIG": str(pdd / "project" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        quiet=True, timeout=90, **kwargs)


def task_events(runner: Any) -> dict[str, dict[str, Any]]:
    """The last result event of each task, by task name."""
    results: dict[str, dict[str, Any]] = {}
    for event in runner.events:
        if event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_skipped"):
            results[event["event_data"]["task"]] = event
    return results


CHECK_RELEASE = "Check: release_version arrived as an extra variable"
CHECK_CONFIRM = "Check: a survey confirmation arrived as 'Name, date'"
CHECK_VAULT = "Check: the vault-encrypted inventory value decrypts"


def test_a_job_gets_its_survey_answers_as_extra_vars(private_data_dir: Path) -> None:
    answers = {"release_version": "1.2.3", "confirm_oncall_notified": "Anna Muster, 2026-11-27"}
    runner = run_job(private_data_dir, answers)
    assert runner.status == "successful", runner.stdout.read()
    assert runner.rc == 0
    events = task_events(runner)
    assert events[CHECK_RELEASE]["event"] == "runner_on_ok"
    assert events[CHECK_RELEASE]["event_data"]["res"]["msg"] == "release_version 1.2.3 arrived"
    assert events[CHECK_CONFIRM]["event_data"]["res"]["msg"] == "on-call notified: Anna Muster, 2026-11-27"
    assert events[CHECK_VAULT]["event"] == "runner_on_skipped"
    # ansible-runner passed them as AWX does: a file of extra variables in env/.
    written = yaml.safe_load((private_data_dir / "env" / "extravars").read_text())
    assert written["release_version"] == "1.2.3"


def test_a_job_with_a_bad_answer_fails(private_data_dir: Path) -> None:
    runner = run_job(private_data_dir, {"release_version": "latest"})
    assert runner.status == "failed"
    assert runner.rc == 2
    events = task_events(runner)
    assert events[CHECK_RELEASE]["event"] == "runner_on_failed"
    assert events[CHECK_RELEASE]["event_data"]["res"]["msg"] == "release_version is 'latest', not X.Y.Z"
    assert CHECK_CONFIRM not in events


def _vault(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "vault-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def _encrypt_string(password_file: Path, value: str, name: str) -> str:
    proc = subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt_string", "--vault-password-file",
                           str(password_file), value, "--name", name],
                          capture_output=True, text=True, env=ansible_env(), timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _export_inventory(source: Path) -> subprocess.CompletedProcess[str]:
    """What an AWX inventory sync runs on an inventory sourced from a project: no vault password."""
    return subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(source), "--list", "--export"],
                          capture_output=True, text=True, env=ansible_env(), timeout=60, check=False)


def test_inline_vaulted_inventory_values_reach_a_job_with_the_vault_credential(
        private_data_dir: Path, tmp_path: Path) -> None:
    password, secret = "probe-vault-pw-3f9a", "probe-secret-value-81d2"
    password_file = _vault(tmp_path, password)
    source = tmp_path / "inventories" / "prod"
    (source / "group_vars" / "all").mkdir(parents=True)
    (source / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    (source / "group_vars" / "all" / "vars.yml").write_text(
        f"probe_secret_sha256: {hashlib.sha256(secret.encode()).hexdigest()}\n")
    (source / "group_vars" / "all" / "vault.yml").write_text(_encrypt_string(password_file, secret, "probe_secret"))

    # The sync: the value stays encrypted in what AWX stores.
    export = _export_inventory(source)
    assert export.returncode == 0, export.stderr
    assert secret not in export.stdout
    stored = json.loads(export.stdout)
    assert "__ansible_vault" in stored["all"]["vars"]["probe_secret"]
    inventory = write_inventory_script(private_data_dir, stored)

    # The job: AWX's Vault credential answers ansible-playbook's vault password prompt.
    runner = run_job(private_data_dir, {"release_version": "1.2.3"}, inventory=inventory,
                     cmdline="--ask-vault-pass", passwords={r"Vault password:\s*?$": password})
    assert runner.status == "successful", runner.stdout.read()
    assert task_events(runner)[CHECK_VAULT]["event"] == "runner_on_ok"
    output = (private_data_dir / "artifacts" / runner.config.ident / "stdout").read_text()
    assert secret not in output and password not in output

    # Without the vault credential the job cannot read the value.
    bare = new_private_data_dir(tmp_path)
    runner = run_job(bare, {"release_version": "1.2.3"}, inventory=write_inventory_script(bare, stored))
    assert runner.status == "failed"
    assert task_events(runner)[CHECK_VAULT]["event"] == "runner_on_failed"


def test_a_whole_file_vault_cannot_be_synced_without_a_password(tmp_path: Path) -> None:
    """Why awx/README.md asks for inline-encrypted values in AWX-synced inventories."""
    password_file = _vault(tmp_path, "probe-vault-pw-3f9a")
    source = tmp_path / "inventories" / "prod"
    (source / "group_vars" / "all").mkdir(parents=True)
    (source / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n")
    vault = source / "group_vars" / "all" / "vault.yml"
    vault.write_text("vault_db_password: probe\n")
    proc = subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file),
                           str(vault)], capture_output=True, text=True, env=ansible_env(), timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    export = _export_inventory(source)
    assert "no vault secrets" in export.stdout + export.stderr
    assert "vault_db_password" not in export.stdout
