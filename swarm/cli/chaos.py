"""`swarm chaos ...`: list and run the fault-injection scenarios (also `python -m chaos`).

How this works: `run` resolves the scenario names ("all" for every one),
builds the demo image once, and for each scenario calls
chaos.runner.run_scenario, which builds its own lab, injects the faults,
checks the invariants and always tears the lab down. The verdict table is
printed at the end (and the JSON report written); the exit code is 1 if any
scenario violated an invariant or could not run. This module adds itself to
the root group when the root loads it
(swarm.cli.root.COMMANDS).
"""
from __future__ import annotations

import os
import random
import shlex
import shutil
import tempfile
import time

import click

from swarm.lab import lab as labmod
from swarm.cli.common import print_json, print_table
from swarm.cli.root import swarm


@swarm.group()
def chaos() -> None:
    """Break a lab cluster on purpose (kill, partition, pause) and check nothing acknowledged is lost."""


@chaos.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def chaos_list(fmt: str) -> None:
    """List the scenarios."""
    from chaos.scenarios import SCENARIOS

    if fmt == "json":
        print_json([{"name": s.name, "description": s.description, "expect_violation": s.expect_violation}
                    for s in SCENARIOS.values()])
        return
    print_table([[s.name, s.description] for s in SCENARIOS.values()], ("NAME", "DESCRIPTION"))
    click.echo("\nRun one or more: swarm chaos run SCENARIO... (or: swarm chaos run all)")


@chaos.command("run")
@click.argument("names", metavar="SCENARIO...", nargs=-1, required=True)
@click.option("--nodes", "-n", type=click.IntRange(1, labmod.MAX_NODES), default=4, show_default=True,
              help="Hosts in each scenario's lab.")
@click.option("--managers", "-m", type=click.IntRange(1, labmod.MAX_NODES), default=3, show_default=True,
              help="How many of them are managers.")
@click.option("--duration", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Rough length in seconds of each scenario's fault phase (full runs; --quick ignores it).")
@click.option("--seed", default=None, help="Seed of the fault schedules (default: random, printed); replays a run.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the verdicts as JSON to this file.")
@click.option("--quick", is_flag=True, help="Few fault cycles per scenario (for CI).")
@click.option("--clients", type=click.IntRange(1, 32), default=3, show_default=True, help="Concurrent clients.")
@click.option("--registers", type=click.IntRange(1, 32), default=3, show_default=True,
              help="Registers (node labels) the clients write and read.")
@click.option("--read-mode", type=click.Choice(["log", "local"]), default="log", show_default=True,
              help="Read through the Raft log (linearizable) or a manager's local copy (node inspect).")
@click.option("--unsafe-memory-journal", is_flag=True,
              help="UNSAFE: run the managers with swarm daemon --unsafe-memory-journal (new Raft entries in "
                   "memory only), to see the invariants fire.")
def chaos_run(names: tuple[str, ...], nodes: int, managers: int, duration: float, seed: str | None,
              report_path: str | None, quick: bool, clients: int, registers: int, read_mode: str,
              unsafe_memory_journal: bool) -> None:
    """Run SCENARIO... (see swarm chaos list; "all" runs every one), each on a new lab."""
    from chaos import report
    from chaos.runner import Options, build_image, run_scenario
    from chaos.scenarios import SCENARIOS, resolve

    if managers > nodes:
        raise click.BadParameter(f"{managers} managers but only {nodes} nodes", param_hint="'--managers'")
    unknown = [n for n in names if n != "all" and n not in SCENARIOS]
    if unknown:
        raise click.BadParameter(f"no scenario named {unknown[0]!r} (see swarm chaos list)",
                                 param_hint="'SCENARIO'")
    scenarios = resolve(list(names))
    seed_value: int | str = seed if seed is not None else str(random.SystemRandom().randrange(10**6))
    command = " ".join(["swarm chaos run", *map(shlex.quote, names), f"--nodes {nodes} --managers {managers}",
                        "--quick" if quick else f"--duration {duration:g}", f"--seed {shlex.quote(str(seed_value))}",
                        *(["--unsafe-memory-journal"] if unsafe_memory_journal else [])])
    click.echo(f"Seed {seed_value} (replay: {command})")
    opts = Options(nodes=nodes, managers=managers, duration=duration, seed=seed_value, quick=quick,
                   clients=clients, keys=registers, read_mode=read_mode, memory_journal=unsafe_memory_journal,
                   say=click.echo)
    workdir = tempfile.mkdtemp(prefix="swarm-chaos-")
    results = []
    started = time.time()
    try:
        image = build_image(workdir)
        for scenario in scenarios:
            result = run_scenario(scenario, opts, image)
            results.append(result)
            click.echo(f"[{scenario.name}] {'PASS' if result.passed else 'FAIL'} in {result.seconds:.0f} s: "
                       f"{report.verdict_text(result)}")
            if report_path:
                _write_report(report, report_path, results, seed_value, command, started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    click.echo("")
    click.echo(report.table(results, shutil.get_terminal_size((160, 24)).columns))
    if report_path:
        _write_report(report, report_path, results, seed_value, command, started)
        click.echo(f"\nReport written to {report_path}.")
    failed = [r.scenario for r in results if not r.passed]
    if failed:
        click.echo(f"\n{len(failed)} of {len(results)} scenario(s) failed: {', '.join(failed)}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"\nAll {len(results)} scenario(s) passed (seed {seed_value}).")


@chaos.command("show")
@click.argument("path", metavar="REPORT", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "markdown"]), default="table", show_default=True)
def chaos_show(path: str, fmt: str) -> None:
    """Print the verdict table of a report written by `swarm chaos run --report`."""
    import json

    from chaos import report
    from chaos.runner import result_from_json

    try:
        with open(path) as f:
            doc = json.load(f)
        results = [result_from_json(r) for r in doc["results"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(f"{path} is not a chaos report ({exc})", param_hint="'REPORT'") from None
    click.echo(f"Seed {doc.get('seed')}: {doc.get('command', '')}")
    click.echo(report.markdown(results) if fmt == "markdown" else report.table(results))


def _write_report(report, path: str, results, seed, command: str, started: float) -> None:
    report.write_json(os.path.abspath(path), results, {"seed": seed, "command": command, "started_at": started,
                                                        "finished_at": time.time()})
