"""`swarm stack config` and the errors of `stack deploy` before the daemon is asked (exit 1,
one line on stderr, no traceback)."""
from __future__ import annotations

from click.testing import CliRunner

from swarm.cli.main import swarm

FILE = "services:\n  web:\n    image: demo:${TAG:-1}\n    ports: ['8080:80']\n    build: .\n"


def run(*args, env=None):
    return CliRunner().invoke(swarm, list(args), env=env, catch_exceptions=False)


def test_config_prints_the_merged_interpolated_file(tmp_path):
    (tmp_path / "a.yml").write_text(FILE)
    (tmp_path / "b.yml").write_text("services:\n  web:\n    environment: {A: '1'}\n")
    result = run("stack", "config", "-c", str(tmp_path / "a.yml"), "-c", str(tmp_path / "b.yml"), env={"TAG": "2"})
    assert result.exit_code == 0
    assert result.output == ("services:\n  web:\n    image: demo:2\n    ports:\n    - target: 80\n"
                             "      published: 8080\n      protocol: tcp\n      mode: ingress\n    build: .\n"
                             "    environment:\n      A: '1'\n")


def test_config_without_interpolation(tmp_path):
    (tmp_path / "a.yml").write_text(FILE)
    assert "image: demo:${TAG:-1}" in run("stack", "config", "--skip-interpolation", "-c", str(tmp_path / "a.yml")).output


def test_deploy_of_a_bad_file_fails_before_asking_the_daemon(tmp_path):
    (tmp_path / "a.yml").write_text("services:\n  web:\n    image: demo\nfoo: 1\n")
    result = CliRunner().invoke(
        swarm, ["stack", "deploy", "--state-dir", str(tmp_path / "none"), "-c", str(tmp_path / "a.yml"), "vote"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"Error: {tmp_path / 'a.yml'}, line 4: foo is not a top-level key")
    assert len(result.stderr.splitlines()) == 1


def test_deploy_needs_a_compose_file_and_a_name(tmp_path):
    assert run("stack", "deploy", "vote").exit_code == 2
    assert "invalid stack name" in run("stack", "deploy", "-c", "x.yml", "' '").output
