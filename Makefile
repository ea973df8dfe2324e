# erni-deploy. Two commands set up everything on a fresh machine:
#   make demo   the main job on the sandbox
#   make test   the tests
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST_ARGS ?=

.PHONY: help venv sandbox sandbox-status sandbox-down demo test test-unit test-integration molecule lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Python virtual environment with the pinned dependencies

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

sandbox: venv ## bring the local reference stack up (idempotent)
	sandbox/bin/sandbox up

sandbox-status: ## show each part of the sandbox and whether it answers
	sandbox/bin/sandbox status

sandbox-down: ## stop everything the sandbox started
	sandbox/bin/sandbox down

demo: sandbox ## deploy 1.0.0, then 1.1.0 (canary steps, judged live), then two bad releases
	sandbox/bin/demo

COVERAGE := --cov=plugins --cov-report=term --cov-fail-under=85

test: sandbox lint ## lint, unit and integration tests against the sandbox (coverage of plugins/), Molecule
	$(PY) -m pytest $(COVERAGE) $(PYTEST_ARGS) tests
	$(MAKE) --no-print-directory molecule

molecule: sandbox ## Molecule scenarios default, rollback (sandbox) and kubernetes (API double), each with check and idempotence
	$(VENV)/bin/molecule test --all

test-unit: venv ## unit tests only
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

test-integration: sandbox ## integration tests only
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

lint: venv ## ruff, mypy, yamllint and ansible-lint (production profile)
	$(VENV)/bin/ruff check plugins tests sandbox bench roles/notify/action_plugins
	$(VENV)/bin/mypy plugins tests sandbox/app/erni_app.py sandbox/sink/sink.py bench roles/notify/action_plugins
	$(VENV)/bin/yamllint --strict .
	$(VENV)/bin/ansible-lint --offline --profile production --nocolor -q

bench: sandbox ## measure the figures the README quotes; writes bench/results.json
	$(PY) bench/run.py

clean: sandbox-down ## stop the sandbox and remove its state, the venv and reports
	rm -rf .sandbox reports $(VENV)
