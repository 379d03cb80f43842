"""Plot bench/scale.py's results as an SVG (no plotting library: a hand-made one).

    .venv/bin/python bench/scale_plot.py [docs/scale_bench.json] [docs/scale.svg]

Three panels against the task count, log-log, one line per node count:
service create to all running (seconds), the leader's CPU seconds per 1,000
tasks, and the Raft log bytes per task. On log-log axes a linear cost is a
line of slope 1 in the first panel and a flat line in the others; anything
steeper is super-linear (and anything quadratic is a bug).
"""
from __future__ import annotations

import json
import math
import sys

PANELS = (("converge_s", "create to all running (s)"),
          ("leader_cpu_per_1000", "leader CPU s per 1,000 tasks"),
          ("raft_bytes_per_task", "Raft log bytes per task"))
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
W, H, PAD = 330, 260, 48


def series(results: list[dict]) -> dict[int, list[dict]]:
    """node count -> the measured points (tasks, figures), by task count."""
    out: dict[int, list[dict]] = {}
    for r in results:
        if "converge_s" not in r:
            continue
        leader = r["managers_after"].get(r["leader"], {})
        point = {"tasks": r["tasks"], "converge_s": r["converge_s"],
                 "leader_cpu_per_1000": leader.get("cpu_s_per_1000_tasks"),
                 "raft_bytes_per_task": r.get("raft_bytes_per_task")}
        out.setdefault(r["nodes"], []).append(point)
    return {n: sorted(ps, key=lambda p: p["tasks"]) for n, ps in sorted(out.items())}


def _log_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    return math.floor(math.log10(lo)), math.ceil(math.log10(hi)) if hi > lo else math.floor(math.log10(lo)) + 1


def panel(x0: int, key: str, title: str, data: dict[int, list[dict]]) -> list[str]:
    pts = [(p["tasks"], p[key]) for ps in data.values() for p in ps if p.get(key)]
    if not pts:
        return []
    (xl, xh), (yl, yh) = _log_range([x for x, _ in pts]), _log_range([y for _, y in pts])

    def sx(x: float) -> float:
        return x0 + PAD + (math.log10(x) - xl) / (xh - xl) * (W - PAD - 10)

    def sy(y: float) -> float:
        return H - PAD + 10 - (math.log10(y) - yl) / (yh - yl) * (H - PAD - 20)

    out = [f'<text x="{x0 + W / 2}" y="14" text-anchor="middle" font-size="12">{title}</text>',
           f'<rect x="{x0 + PAD}" y="10" width="{W - PAD - 10}" height="{H - PAD - 20 + 20}" fill="none" '
           f'stroke="#999"/>']
    for e in range(xl, xh + 1):
        out.append(f'<text x="{sx(10 ** e):.1f}" y="{H - PAD + 26}" text-anchor="middle" font-size="10">'
                   f'{10 ** e:,}</text>')
    for e in range(yl, yh + 1):
        out.append(f'<text x="{x0 + PAD - 4}" y="{sy(10 ** e) + 3:.1f}" text-anchor="end" font-size="10">'
                   f'{10 ** e:g}</text>')
        out.append(f'<line x1="{x0 + PAD}" x2="{x0 + W - 10}" y1="{sy(10 ** e):.1f}" y2="{sy(10 ** e):.1f}" '
                   f'stroke="#eee"/>')
    out.append(f'<text x="{x0 + W / 2}" y="{H - 6}" text-anchor="middle" font-size="10">tasks</text>')
    for i, (nodes, ps) in enumerate(data.items()):
        line = [(sx(p["tasks"]), sy(p[key])) for p in ps if p.get(key)]
        color = COLORS[i % len(COLORS)]
        if len(line) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in line) + '"/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in line]
    return out


def render(doc: dict) -> str:
    data = series(doc["results"])
    parts = []
    for i, (key, title) in enumerate(PANELS):
        parts += panel(i * W, key, title, data)
    legend = [f'<text x="{10 + 120 * i}" y="{H + 14}" font-size="11" fill="{COLORS[i % len(COLORS)]}">'
              f'{nodes:,} nodes</text>' for i, nodes in enumerate(data)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(PANELS)}" height="{H + 22}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(parts + legend) + "\n</svg>\n")


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/scale_bench.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/scale.svg"
    try:
        with open(src) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        sys.exit(f"scale_plot: cannot read {src}: {exc}")
    with open(dst, "w") as f:
        f.write(render(doc))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
