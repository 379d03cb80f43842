"""The architecture as a checked contract: the import layers of pyproject.toml
(import-linter) and the lint rules (ruff) hold for the whole tree."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def run(tool, *args):
    return subprocess.run([os.path.join(BIN, tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    proc = run("lint-imports")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_ruff_finds_nothing():
    proc = run("ruff", "check", "swarm", "raft", "overlay", "chaos", "tests", "bench", "scripts")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
