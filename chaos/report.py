"""The verdict table printed after a run, and the JSON report (`--report FILE`).

How this works. One row per scenario: faults injected, client requests
ok/failed/indeterminate, "all 5 held" or the first violated invariant with
its evidence, and the seconds the service took to converge after heal. The
JSON report holds every result in full (schedule, injected faults with their
times, every invariant's evidence) plus the command line and the seed, so a
run can be replayed with `--seed`.
"""
from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from typing import Any

from chaos.invariants import NAMES, NO_LOST_WRITE

COLUMNS = ("SCENARIO", "FAULTS", "OK", "FAILED", "INDETERMINATE", "INVARIANTS", "CONVERGED")


def verdict_text(result: Any) -> str:
    if result.error:
        return f"ERROR: {result.error}"
    bad = result.violations
    if result.expect_violation:
        if result.passed:
            lost = next(v for v in bad if v.name == NO_LOST_WRITE)
            others = [v.name for v in bad if v is not lost]
            also = f" (also fired: {', '.join(others)})" if others else ""
            return f"caught as expected: {lost.name}: {lost.evidence}{also}"
        return "SELF-TEST FAILED: the lost-write invariant did not fire"
    if not bad:
        return f"all {len(result.verdicts) or len(NAMES)} held"
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"VIOLATED {bad[0].name}: {bad[0].evidence}{more}"


def rows(results: Sequence[Any]) -> list[list[str]]:
    out = []
    for r in results:
        req = r.requests or {}
        converged = "-" if r.converge_seconds is None else f"{r.converge_seconds:.1f} s"
        out.append([r.scenario, str(len(r.faults)), str(req.get("ok", 0)), str(req.get("fail", 0)),
                    str(req.get("unknown", 0)), verdict_text(r), converged])
    return out


def table(results: Sequence[Any], width: int = 0) -> str:
    """A plain-text table; the INVARIANTS column wraps to fit `width` (0: no wrapping)."""
    body = rows(results)
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    col = COLUMNS.index("INVARIANTS")
    if width:
        others = sum(w + 2 for i, w in enumerate(widths) if i != col)
        widths[col] = max(30, min(widths[col], width - others))
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(COLUMNS)).rstrip()]
    for row in body:
        wrapped = textwrap.wrap(row[col], widths[col]) or [""]
        for n, piece in enumerate(wrapped):
            cells = [("" if n else row[i]) if i != col else piece for i in range(len(COLUMNS))]
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip())
    return "\n".join(lines)


def markdown(results: Sequence[Any]) -> str:
    lines = ["| " + " | ".join(COLUMNS).lower() + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def write_json(path: str, results: Sequence[Any], meta: dict) -> None:
    doc = dict(meta, passed=all(r.passed for r in results), results=[r.to_json() for r in results])
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)
