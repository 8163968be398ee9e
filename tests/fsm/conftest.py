"""Fixtures of the constraint-language tests (helpers live in automaton_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from automaton_helpers import data_dir


@pytest.fixture
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared test data not found at {d} (set STRUCTGEN_DATA_DIR)")
    return d
