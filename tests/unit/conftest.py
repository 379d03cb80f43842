"""Fixtures shared by the CLI tests (test_cli*.py): a node state directory and the CLI run in it."""
from __future__ import annotations

import shutil
import tempfile
from typing import Any, Callable

import pytest
from click.testing import CliRunner, Result

from swarm.cli import main as cli


@pytest.fixture
def state_dir():
    # Short and fresh: unix socket paths are limited to ~107 bytes.
    path = tempfile.mkdtemp(prefix="swcli-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run(state_dir: str) -> Callable[..., Result]:
    """`swarm ARGS...` with SWARM_STATE_DIR=state_dir (and `input` on stdin)."""
    def invoke(*args: str, input: Any = None) -> Result:
        return CliRunner().invoke(cli.swarm, list(args), env={"SWARM_STATE_DIR": state_dir}, input=input)
    return invoke
