"""The package as a user gets it: `pip install <repo>` into a fresh venv (no extras, not editable).

How this works. A copy of the repository (without .git, .venv and build
output, so that pip's in-tree build never writes into the checkout) is
installed into a new venv made with `python -m venv`; pip's cache and the
machine's wheel index keep that to seconds. A checker script then runs with
the venv's interpreter from a directory outside the repository, with no
PYTHONPATH and no user site: it imports every module of swarm, raft, overlay
and chaos, and reads every module's import statements (also those inside
functions, which only run when used, like pyroute2 in the lab) to check that
each third-party module they name is installed. A dependency missing from
[project.dependencies] (dnspython was once only in the test extra) fails it,
naming the module. Last, the installed `swarm` command prints its help.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("swarm", "raft", "overlay", "chaos")

CHECKER = textwrap.dedent('''
    """Import every module of the given packages; name what is missing. Prints one JSON object."""
    import ast, importlib, importlib.abc, importlib.util, json, os, pkgutil, sys

    packages, hidden = sys.argv[1].split(","), [m for m in sys.argv[2].split(",") if m]

    class Hide(importlib.abc.MetaPathFinder):
        """Makes `hidden` modules look uninstalled (the checker's own test)."""
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in hidden:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    if hidden:
        sys.meta_path.insert(0, Hide())
    problems, modules, files = [], [], []
    for top in packages:
        pkg = importlib.import_module(top)
        where = os.path.dirname(pkg.__file__)
        if not where.startswith(sys.prefix + os.sep):
            problems.append(f"{top} was imported from {where}, not from the venv {sys.prefix}")
        names = [top] + [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".",
                                                               onerror=lambda name: None)]
        for name in names:
            if name.rsplit(".", 1)[-1] == "__main__":   # runs the program when imported
                continue
            try:
                module = importlib.import_module(name)
            except BaseException as exc:
                problems.append(f"import {name}: {type(exc).__name__}: {exc}")
                continue
            modules.append(name)
            files.append((name, module.__file__))
        for dirpath, _, filenames in os.walk(where):   # also __main__ and modules that failed above
            files += [(None, os.path.join(dirpath, f)) for f in filenames if f.endswith(".py")]
    ours = set(packages)
    seen = set()
    for name, path in files:
        if path in seen or not path:
            continue
        seen.add(path)
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                wanted = [node.module]
            else:
                continue
            for module in wanted:
                top = module.split(".")[0]
                if top in ours or top in sys.stdlib_module_names:
                    continue
                try:
                    found = importlib.util.find_spec(top) is not None
                except ImportError:
                    found = False
                if not found and (path, top) not in seen:   # once per file and missing module
                    seen.add((path, top))
                    rel = os.path.relpath(path, os.path.dirname(where))
                    problems.append(f"{rel}:{node.lineno} imports {module}, but {top} is not installed")
    print(json.dumps({"problems": problems, "modules": modules}))
''')


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> str:
    """A fresh venv with the repository installed as `pip install <repo>` does; its python."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=60)
    python = str(base / "venv" / "bin" / "python")
    pip = subprocess.run([python, "-m", "pip", "install", "--quiet", str(src)], capture_output=True, text=True,
                         timeout=180, env=clean_env(), cwd=str(base))
    assert pip.returncode == 0, pip.stderr + pip.stdout
    return python


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def check(python: str, cwd: str, hide: tuple[str, ...] = ()) -> dict:
    proc = subprocess.run([python, "-c", CHECKER, ",".join(PACKAGES), ",".join(hide)], capture_output=True,
                          text=True, timeout=120, env=clean_env(), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_from_a_plain_install(venv, tmp_path):
    result = check(venv, str(tmp_path))
    assert result["problems"] == [], "runtime dependencies missing from [project.dependencies]:\n" + "\n".join(
        result["problems"])
    assert {"swarm.cli.main", "swarm.lab.lab", "raft.node", "overlay.dns", "chaos.runner"} <= set(result["modules"])


def test_the_installed_swarm_command_prints_its_help(venv, tmp_path):
    swarm = os.path.join(os.path.dirname(venv), "swarm")
    proc = subprocess.run([swarm, "--help"], capture_output=True, text=True, timeout=60, env=clean_env(),
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: swarm [OPTIONS] COMMAND [ARGS]...")
    assert " service " in proc.stdout and " lab " in proc.stdout


def test_the_checker_names_a_missing_dependency(venv, tmp_path):
    # dnspython uninstalled, as it was from a plain install when it sat in the test extra
    problems = check(venv, str(tmp_path), hide=("dns",))["problems"]
    # overlay.dns imports dnspython where it first serves DNS, so the module itself
    # imports; reading its import statements is what names the missing package.
    assert not any(p.startswith("import overlay.dns:") for p in problems)
    assert any(p.startswith("overlay/dns.py:") and p.endswith("but dns is not installed") for p in problems)
