"""Fixtures shared by the engine tests (tests/engine and tests/engine/speculation)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import structgen

# tests/engine/speculation/* and tests/engine/* import tiny_models by name, wherever pytest's rootdir puts them.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    """The real tokenizer of the embedded model."""
    return structgen.default_tokenizer()


@pytest.fixture(scope="session")
def tiny():
    """A tiny random-weight model over the real vocabulary (tests/engine/tiny_models.py)."""
    return tiny_model()
