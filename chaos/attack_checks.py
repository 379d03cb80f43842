"""The invariants of the attack scenarios, as pure functions of what was recorded.

How this works. While an attack runs (chaos/attacks.py) the harness records
plain data: each daemon's resident memory (VmRSS from /proc/PID/status),
every manager's (term, leader), every node's status, the canary service's
progress, the answers to the attack's requests, the task's log file sizes,
probe latencies. Each function here turns one of those records into a
`Verdict` (chaos/invariants.py): held, or the first violation with its
evidence. Nothing here does I/O or reads a clock.

Every attack scenario checks, beside the five invariants of every scenario:
canary-converged, memory-bounded, daemon-logs-clean, no-election-storm and
nodes-ready; and one or two of its own (poison-refused,
big-service-converged, task-logs-bounded, kept-serving,
names-refused-or-harmless, dns-answers).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chaos.invariants import Verdict

MiB = 1024 * 1024
RSS_BOUND = 400 * MiB            # a daemon's resident memory, at any sample
MAX_TERM_CHANGES = 2             # Raft terms that may start during an attack that kills nobody
LOG_SLACK = 1 * MiB              # beyond max-size: one write may cross it before the next rotation
PROBE_DEADLINE = 5.0             # seconds a canary `node ls` may take while the API is flooded
BAD_LOG_MARKS = ("Traceback", "Nursery stack corrupted")
MAX_SENTENCE = 600               # characters of a refusal that still reads as one sentence

CANARY, MEMORY, LOGS_CLEAN, NO_STORM, NODES_READY = (
    "canary-converged", "memory-bounded", "daemon-logs-clean", "no-election-storm", "nodes-ready")
POISON_REFUSED, BIG_CONVERGED, TASK_LOGS, KEPT_SERVING, NAMES_HARMLESS, DNS_ANSWERS = (
    "poison-refused", "big-service-converged", "task-logs-bounded", "kept-serving", "names-refused-or-harmless",
    "dns-answers")


# -- memory --------------------------------------------------------------------------------------


def vm_rss(status_text: str) -> int | None:
    """Resident bytes from the text of /proc/PID/status (None if it has no VmRSS line: a zombie)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            number, unit = line.split()[1:3]
            return int(number) * {"kB": 1024, "mB": MiB}.get(unit, 1)
    return None


def memory_bounded(peaks: Mapping[str, Mapping[str, Any]], bound: int = RSS_BOUND) -> Verdict:
    """peaks: host -> {"peak": bytes, "at": seconds, "samples": n}."""
    if not peaks or not any(p.get("samples") for p in peaks.values()):
        return Verdict(MEMORY, False, "no daemon's memory could be sampled", {"peaks": dict(peaks)})
    details = {"bound_mib": bound // MiB,
               "peak_mib": {h: round(p["peak"] / MiB, 1) for h, p in sorted(peaks.items()) if p.get("samples")}}
    over = sorted((h, p) for h, p in peaks.items() if p.get("peak", 0) > bound)
    if over:
        host, p = over[0]
        return Verdict(MEMORY, False, f"the daemon of {host} held {p['peak'] / MiB:.0f} MiB resident at "
                                      f"{p['at']:.1f} s, over the bound of {bound // MiB} MiB", details)
    host, top = max(details["peak_mib"].items(), key=lambda kv: kv[1])
    return Verdict(MEMORY, True, f"peak {top:.0f} MiB resident ({host}), under {bound // MiB} MiB", details)


# -- daemon logs --------------------------------------------------------------------------------------


def log_problems(text: str) -> list[str]:
    """Each crash mark of a daemon log (a traceback, a corrupted nursery) as one line: the log
    line before it (what the daemon was doing), the innermost frame and the exception."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not any(mark in line for mark in BAD_LOG_MARKS):
            continue
        if "Traceback" not in line:
            out.append(line.strip()[:400])
            continue
        end = i + 1   # a traceback runs on indented lines and ends with the exception's line
        while end < len(lines) and lines[end][:1].isspace():
            end += 1
        frames = [ln.strip() for ln in lines[i + 1:end] if ln.strip().startswith("File ")]
        parts = [lines[i - 1].strip()[:200] if i else "", line.strip(), *frames[-1:],
                 lines[end].strip()[:300] if end < len(lines) else ""]
        out.append(" | ".join(p for p in parts if p))
    return out


def daemon_logs_clean(logs: Mapping[str, str]) -> Verdict:
    """logs: host -> what its daemon logged since the attack began."""
    found = {h: log_problems(text) for h, text in sorted(logs.items())}
    found = {h: p for h, p in found.items() if p}
    if found:
        host, problems = next(iter(found.items()))
        return Verdict(LOGS_CLEAN, False, f"the log of {host}'s daemon has {len(problems)} crash mark(s); the first: "
                                          f"{problems[0]}", {"problems": found})
    size = sum(len(t) for t in logs.values())
    return Verdict(LOGS_CLEAN, True, f"no Traceback or corrupted nursery in {len(logs)} daemon logs "
                                     f"({size} bytes written during the attack)")


# -- Raft -----------------------------------------------------------------------------------------


def terms_between(observations: Iterable[Any], since: float, until: float) -> list[int]:
    """The Raft terms any manager reported from `since` to `until` (with the last one before `since`)."""
    obs = sorted(observations, key=lambda o: o.at)
    before = [o.term for o in obs if o.at < since]
    inside = {o.term for o in obs if since <= o.at <= until}
    start = {max(before)} if before else set()
    return sorted(start | inside)


def no_election_storm(observations: Iterable[Any], since: float, until: float,
                      limit: int = MAX_TERM_CHANGES) -> Verdict:
    observations = list(observations)
    terms = terms_between(observations, since, until)
    changes = max(0, len(terms) - 1)
    first_seen: dict[int, float] = {}
    for o in sorted(observations, key=lambda o: o.at):
        if o.term in terms and since <= o.at <= until:
            first_seen.setdefault(o.term, round(o.at, 2))
    details = {"terms": terms, "term_changes": changes, "limit": limit,
               "first_seen": {str(t): at for t, at in sorted(first_seen.items())}}
    if not terms:
        return Verdict(NO_STORM, False, "no manager reported its Raft term during the attack", details)
    if changes > limit:
        return Verdict(NO_STORM, False, f"{changes} new Raft terms during the attack (terms {terms[0]}-{terms[-1]}), "
                                        f"more than {limit}: an election storm", details)
    return Verdict(NO_STORM, True, f"{changes} term change(s) during the attack (term {terms[-1]})", details)


# -- nodes and the canary ---------------------------------------------------------------------------


def nodes_ready(samples: Sequence[Mapping[str, Any]]) -> Verdict:
    """samples: {"at": seconds, "nodes": hostname -> status} polled during the attack."""
    if not samples:
        return Verdict(NODES_READY, False, "the nodes could not be listed during the attack")
    for s in samples:
        bad = sorted((h, st) for h, st in s["nodes"].items() if st != "ready")
        if bad:
            return Verdict(NODES_READY, False, f"at {s['at']:.1f} s node {bad[0][0]} was {bad[0][1]}",
                           {"sample": dict(s), "samples": len(samples)})
    return Verdict(NODES_READY, True, f"every node ready in all {len(samples)} samples", {"samples": len(samples)})


def canary_converged(outcome: Mapping[str, Any], bound: float) -> Verdict:
    """outcome: {"service", "steps": [{"replicas", "seconds" (None: not within bound), "running", "error"}]}."""
    steps = outcome.get("steps") or []
    if not steps:
        return Verdict(CANARY, False, f"the canary was not created: {outcome.get('error') or 'no step ran'}",
                       dict(outcome))
    for step in steps:
        if step.get("seconds") is None:
            why = step.get("error") or f"{step.get('running', 0)} of {step['replicas']} running"
            return Verdict(CANARY, False, f"the canary {outcome.get('service')} did not reach {step['replicas']} "
                                          f"running replicas within {bound:g} s: {why}", dict(outcome))
    took = ", ".join(f"{s['replicas']} in {s['seconds']:.1f} s" for s in steps)
    return Verdict(CANARY, True, f"canary {outcome.get('service')} reached {took}", dict(outcome))


# -- poison-worker --------------------------------------------------------------------------------


def poison_refused(outcome: Mapping[str, Any]) -> Verdict:
    """outcome: {"sent": kind -> n, "refused": kind -> n (answered bad_request), "other": kind -> [answers]}."""
    sent, refused, other = outcome.get("sent", {}), outcome.get("refused", {}), outcome.get("other", {})
    total = sum(sent.values())
    details = {"sent": total, "refused": sum(refused.values()), "kinds": len(sent), "other": dict(other)}
    if not total:
        return Verdict(POISON_REFUSED, False, f"no poison was sent: {outcome.get('error') or 'no call made'}",
                       details)
    for kind in sorted(sent):
        if refused.get(kind, 0) != sent[kind]:
            answers = other.get(kind) or ["no answer recorded"]
            return Verdict(POISON_REFUSED, False, f"{kind}: {sent[kind] - refused.get(kind, 0)} of {sent[kind]} "
                                                  f"not refused as bad_request; the first answer: {answers[0]}",
                           details)
    return Verdict(POISON_REFUSED, True, f"all {total} malformed calls ({len(sent)} kinds) refused as bad_request",
                   details)


# -- big-service ------------------------------------------------------------------------------------


def big_service_converged(outcome: Mapping[str, Any], bound: float) -> Verdict:
    """outcome: {"steps": [{"replicas", "assigned_seconds", "running_seconds", "assigned", "running", "error"}],
    "removed_seconds", "containers_left", "load_peak"}; a step of 0 replicas converges when none runs."""
    steps = outcome.get("steps") or []
    details = dict(outcome)
    if not steps:
        return Verdict(BIG_CONVERGED, False, f"the big service was not created: {outcome.get('error')}", details)
    for s in steps:
        if s.get("error"):
            return Verdict(BIG_CONVERGED, False, f"scaling to {s['replicas']} failed: {s['error']}", details)
        if s.get("assigned_seconds") is None:
            return Verdict(BIG_CONVERGED, False, f"not every one of {s['replicas']} tasks was assigned within "
                                                 f"{bound:g} s ({s.get('assigned', 0)} were)", details)
        if s["replicas"] == 0 and s.get("running_seconds") is None:
            return Verdict(BIG_CONVERGED, False, f"scaled to 0, {s.get('running', 0)} tasks still ran after "
                                                 f"{bound:g} s", details)
    if outcome.get("removed_seconds") is None:
        return Verdict(BIG_CONVERGED, False, f"{outcome.get('containers_left', '?')} containers of the removed "
                                             f"service were still there {bound:g} s after service rm", details)
    first = steps[0]
    ran = (f"all running in {first['running_seconds']:.1f} s" if first.get("running_seconds") is not None
           else f"{first.get('running', 0)} running after {bound:g} s")
    return Verdict(BIG_CONVERGED, True, f"{first['replicas']} tasks assigned in {first['assigned_seconds']:.1f} s, "
                                        f"{ran}; scaled to 0 and removed (containers gone in "
                                        f"{outcome['removed_seconds']:.1f} s); load average peak "
                                        f"{outcome.get('load_peak', 0):.1f}", details)


# -- log-flood --------------------------------------------------------------------------------------


def task_logs_bounded(outcome: Mapping[str, Any]) -> Verdict:
    """outcome: {"samples": [{"at", "files": name -> bytes}], "max_size", "max_file",
    "follow": {"bytes", "running_at_end", "stderr"}}: no file beyond max-size (plus one write),
    no more than max-file files, and the follower kept receiving."""
    max_size, max_file = outcome["max_size"], outcome["max_file"]
    samples = outcome.get("samples") or []
    peak_total = max((sum(s["files"].values()) for s in samples), default=0)
    written = outcome.get("written", peak_total)
    details = {"peak_total_mib": round(peak_total / MiB, 1), "written_mib": round(written / MiB, 1),
               "samples": len(samples), "follow": outcome.get("follow", {}), "max_size": max_size,
               "max_file": max_file}
    if not samples:
        return Verdict(TASK_LOGS, False, f"the flooding task's log files were never seen: {outcome.get('error')}",
                       details)
    for s in samples:
        big = sorted((n, b) for n, b in s["files"].items() if b > max_size + LOG_SLACK)
        if big:
            return Verdict(TASK_LOGS, False, f"at {s['at']:.1f} s {big[0][0]} held {big[0][1] / MiB:.1f} MiB, over "
                                             f"max-size {max_size / MiB:g} MiB: no rotation", details)
        if len(s["files"]) > max_file:
            return Verdict(TASK_LOGS, False, f"at {s['at']:.1f} s the task had {len(s['files'])} log files, more "
                                             f"than max-file {max_file}", details)
    follow = outcome.get("follow") or {}
    if not follow.get("bytes"):
        return Verdict(TASK_LOGS, False, f"`service logs -f` received nothing: {follow.get('stderr') or '?'}",
                       details)
    if not follow.get("running_at_end"):
        return Verdict(TASK_LOGS, False, f"`service logs -f` stopped during the flood: {follow.get('stderr') or '?'}",
                       details)
    return Verdict(TASK_LOGS, True, f"log files peaked at {peak_total / MiB:.1f} MiB in total (bound "
                                    f"{max_size * max_file / MiB:g} MiB); `logs -f` received "
                                    f"{follow['bytes'] / MiB:.1f} MiB", details)


# -- frame-flood ------------------------------------------------------------------------------------


def kept_serving(probes: Sequence[Mapping[str, Any]], deadline: float = PROBE_DEADLINE) -> Verdict:
    """probes: {"at", "via", "ok", "seconds", "error"} made while the flood ran."""
    if not probes:
        return Verdict(KEPT_SERVING, False, "no probe ran during the attack")
    slowest = max(probes, key=lambda p: p.get("seconds") or 0)
    details = {"probes": len(probes), "slowest": dict(slowest)}
    for p in probes:
        if not p.get("ok"):
            return Verdict(KEPT_SERVING, False, f"{p['via']} at {p['at']:.1f} s failed: {p.get('error')}", details)
        if p["seconds"] > deadline:
            return Verdict(KEPT_SERVING, False, f"{p['via']} at {p['at']:.1f} s took {p['seconds']:.1f} s "
                                                f"(more than {deadline:g} s)", details)
    return Verdict(KEPT_SERVING, True, f"{len(probes)} probes answered, the slowest in {slowest['seconds']:.2f} s "
                                       f"({slowest['via']})", details)


# -- bad-names ----------------------------------------------------------------------------------------


def one_sentence(message: str) -> bool:
    """A refusal a user can read: one line, no traceback, not a page long. click's usage
    lines ("Usage: ...", "Try '... --help' for help.") may come before its one "Error:" line."""
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    if len(errors) == 1 and all(ln in errors or ln.startswith(("Usage:", "Try ")) for ln in lines):
        lines = errors
    return (len(lines) == 1 and "Traceback" not in message and len(lines[0]) <= MAX_SENTENCE
            and not lines[0].startswith("{"))


def attempt_problem(a: Mapping[str, Any]) -> str:
    """Why one attempt was neither refused properly nor harmless ("" if it was fine).

    a: {"what", "kind", "refused", "message", "exit" (CLI only), "code" (API only),
        "listed", "removed"} (the last two only when it was accepted)."""
    if a.get("refused"):
        if "exit" in a and a["exit"] == 0:
            return "refused but the command exited 0"
        if "code" in a and a["code"] not in ("bad_request", "conflict", "not_found"):
            return f"refused with code {a['code']!r} (not bad_request): {a.get('message', '')[:200]}"
        if not one_sentence(a.get("message", "")):
            return f"refused without one readable sentence: {a.get('message', '')[:300]!r}"
        return ""
    if not a.get("listed"):
        return "accepted but not listed afterwards"
    if not a.get("removed"):
        return f"accepted but could not be removed: {a.get('remove_error', '')[:200]}"
    return ""


def names_harmless(attempts: Sequence[Mapping[str, Any]]) -> Verdict:
    if not attempts:
        return Verdict(NAMES_HARMLESS, False, "no odd name was tried")
    accepted = [f"{a['what']} {a['kind']}" for a in attempts if not a.get("refused")]
    details = {"attempts": len(attempts), "accepted": accepted}
    for a in attempts:
        problem = attempt_problem(a)
        if problem:
            return Verdict(NAMES_HARMLESS, False, f"{a['what']} named {a['kind']} ({a.get('name', '')[:40]!r}): "
                                                  f"{problem}", dict(details, attempt=dict(a)))
    return Verdict(NAMES_HARMLESS, True, f"{len(attempts) - len(accepted)} of {len(attempts)} attempts refused in "
                                         f"one sentence, {len(accepted)} accepted and removed cleanly", details)


def dns_answers(probes: Sequence[Mapping[str, Any]]) -> Verdict:
    """probes: {"at", "ok", "answer", "error"}: the canary's name resolved from inside one of its tasks."""
    if not probes:
        return Verdict(DNS_ANSWERS, False, "the canary's name was never resolved")
    for p in probes:
        if not p.get("ok"):
            return Verdict(DNS_ANSWERS, False, f"at {p['at']:.1f} s the canary's name did not resolve: "
                                               f"{p.get('error')}", {"probes": list(probes)})
    return Verdict(DNS_ANSWERS, True, f"{len(probes)} lookups answered ({probes[-1].get('answer')})",
                   {"probes": len(probes)})


# -- one attack scenario's verdicts ------------------------------------------------------------------------

SPECIFIC = {"poison-worker": lambda a, bound: [poison_refused(a)],
            "big-service": lambda a, bound: [big_service_converged(a, a.get("bound", bound))],
            "log-flood": lambda a, bound: [task_logs_bounded(a)],
            "frame-flood": lambda a, bound: [kept_serving(a.get("probes", []))],
            "bad-names": lambda a, bound: [names_harmless(a.get("attempts", [])), dns_answers(a.get("dns", []))]}


def attack_verdicts(scenario: str, outcome: Mapping[str, Any], observations: Iterable[Any],
                    node_samples: Sequence[Mapping[str, Any]], memory: Mapping[str, Mapping[str, Any]],
                    logs: Mapping[str, str], canary_bound: float, rss_bound: int = RSS_BOUND) -> list[Verdict]:
    """The common attack invariants, then the scenario's own, from what the run recorded.

    outcome: {"attack", "canary", "since", "until"} as chaos.attacks.execute returns it."""
    since, until = outcome["since"], outcome["until"]
    during = [s for s in node_samples if since <= s["at"] <= until]
    return [canary_converged(outcome["canary"], canary_bound), memory_bounded(memory, rss_bound),
            daemon_logs_clean(logs), no_election_storm(observations, since, until), nodes_ready(during),
            *SPECIFIC[scenario](outcome["attack"], canary_bound)]
