"""Fixtures for every test; the helpers themselves live in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import ROOT, SANDBOX_DIR


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def sandbox_dir() -> Path:
    return SANDBOX_DIR
