"""The `swarm` command line: a thin client of the node's local daemon.

How this works: every command resolves its `--state-dir` (else the root's,
`swarm --state-dir DIR COMMAND`, else env SWARM_STATE_DIR) to a node and
talks to that node's daemon over STATE_DIR/swarm.sock with one blocking RPC
per request (`swarm.rpc.client.call_unix_sync`); the daemon does the
work and the CLI only validates input, builds params and prints. `init`,
`join` and `daemon` are the exceptions: they prepare the node's state and
start its daemon through `swarm.daemon.bootstrap` (imported when used). Input is
checked locally first (click usage error, exit 2); a failure reported by the
daemon or the bootstrap is printed as "Error: <sentence>" on stderr with exit
1; any other exception is an internal error, printed on one line, exit 1.
Output mirrors docker's; `--format json` prints exactly one JSON document.
Each command group lives in its own module (cluster, node, service, network,
image, lab, chaos, stack, volume; secret and config share one), uses the helpers of
swarm/cli/common.py and adds itself to the root group of swarm/cli/root.py, which
imports a module only when one of its commands runs (root.COMMANDS): a command
pays for its own imports only, and `swarm --help` for none of them.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from swarm.cli.common import internal_error
from swarm.cli.root import swarm


# -- entry point ---------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """`swarm` and `python -m swarm`: no traceback ever reaches the user."""
    try:
        swarm.main(args=list(argv) if argv is not None else None, prog_name="swarm")
    except SystemExit:
        raise
    except Exception as exc:  # raised outside a command (while parsing, say)
        try:
            internal_error(exc)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
