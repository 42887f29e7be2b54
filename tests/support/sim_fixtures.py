"""Pytest fixtures: one simulator per test module, the Codex CLI once per run (`from ... import *` in conftest)."""

import pytest

from .codex import codex_binary
from .simulator import Simulator, start_simulator

__all__ = ["simulator", "codex_bin"]


@pytest.fixture(scope="module")
def simulator() -> Simulator:
    """A running simulator; it is not reset between tests, so tests register fresh accounts."""
    sim = start_simulator()
    yield sim
    sim.close()


@pytest.fixture(scope="session")
def codex_bin() -> str:
    """The real Codex CLI; installing it fails the tests loudly rather than skipping them."""
    return codex_binary()
