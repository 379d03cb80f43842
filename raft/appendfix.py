"""Rewrite overlapping AppendEntries so a follower never deletes what it acknowledged.

Why. pysyncobj 0.3.17 (syncobj.py:991-1004) deletes every local entry after
`prevLogIdx` whenever the local log is longer, even when the entries it holds
are exactly the ones the leader is re-sending. Under pipelined load the leader
re-sends overlapping batches all the time, so followers briefly drop entries
they already acknowledged; a leader dying in that window can leave a majority
without a committed entry. Raft's rule is narrower: delete only from the first
entry that *conflicts* (same index, different term).

How. Before pysyncobj sees an AppendEntries we skip the leading entries that
the local log already holds with the same term, and move `prevLogIdx` past
them. Then:
- entries remain: pysyncobj deletes only if the next local entry conflicts,
  which is the legitimate Raft truncation;
- nothing remains and the local log ends there: the message is a plain append
  of nothing;
- nothing remains but the local log is longer: pysyncobj would delete the
  tail, so we hand it a heartbeat instead (commit index clamped to the
  verified prefix) and answer the leader ourselves with success up to the
  verified prefix, exactly what Raft would answer.

When `prevLogIdx` is held with another term, pysyncobj answers "reset, try
`prevLogIdx`": the leader backs up one entry per round trip. A leader that
was cut off keeps appending client requests it can never commit, so after
the heal its log may end in hundreds of entries of its old term, and backing
up through them one at a time took over 90 s in the chaos suite (the member
answered reads with a state that old all that time). We let pysyncobj answer
as before and then answer again with the first index we hold of the
conflicting term (Raft's fast backup, section 5.3 of the paper); the leader
takes the last answer, so it skips the whole stale term in one step. Nothing
is deleted by this: the leader then sends from there, and only a real
conflict truncates.

That hint must stick until the leader finds the match. pysyncobj's leader
pipelines: in one tick it sends everything from its next index to its last
entry, in batches, each message's prevLogIdx past the previous one's. After
our hint, the batches that followed the conflicting message in the same
burst arrive with a prevLogIdx beyond our log, and pysyncobj answers each
"reset, try your last index + 1": the leader takes that last answer, sends
the same burst again, and the member never catches up (seen in the chaos
suite: a cut-off leader, healed, stuck 50 s at its old commit index while
more than a batch of entries waited for it). So the caller keeps the hint
(`Backup`, per term) and, until an AppendEntries matches, answers every
message beyond our log with the hint again.

Pure: the local log is read through `term_at(idx)` and `last_index`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Backup:
    """The index this member told the leader of `term` to back up to, until a message matches."""
    term: int
    index: int


@dataclass(frozen=True)
class AppendPlan:
    message: dict[str, Any]            # what pysyncobj should process
    reply: dict[str, Any] | None       # an answer we send to the leader ourselves
    skipped: int                       # entries already held, not re-applied
    backup: Backup | None = None       # the hint in force after this message (keep it for the next)


def _reset_to(index: int) -> dict[str, Any]:
    return {"type": "next_node_idx", "next_node_idx": index, "reset": True, "success": False}


def plan_append(
    message: dict[str, Any],
    current_term: int,
    term_at: Callable[[int], int | None],
    last_index: int,
    backup: Backup | None = None,
) -> AppendPlan:
    """`backup`: the hint the previous plan left (AppendPlan.backup), None at first."""
    if "prevLogIdx" not in message or message["term"] < current_term:
        return AppendPlan(message, None, 0, backup)
    prev_idx = message["prevLogIdx"]
    prev_term = message["prevLogTerm"]
    if prev_idx is None:
        return AppendPlan(message, None, 0, backup)
    if backup is not None and (backup.term != message["term"] or backup.index > last_index + 1):
        backup = None                  # another leader, or our log changed under it
    held_term = term_at(prev_idx)
    if held_term is None:
        # Not held: pysyncobj answers "reset" to our last index + 1. A message of a burst that
        # followed a conflict must not undo the hint (see the module's docstring).
        if backup is not None and prev_idx > last_index:
            return AppendPlan(message, _reset_to(backup.index), 0, backup)
        return AppendPlan(message, None, 0, backup)
    if held_term != prev_term:
        # pysyncobj answers "reset, try prev_idx" and deletes nothing; back up past the whole term.
        first = prev_idx
        while first > 1 and term_at(first - 1) == held_term:
            first -= 1
        hint = Backup(message["term"], first)
        if first == prev_idx:
            return AppendPlan(message, None, 0, hint)
        return AppendPlan(message, _reset_to(first), 0, hint)
    unchanged = AppendPlan(message, None, 0)   # a match: the leader found where our logs agree
    entries = message.get("entries") or []
    for offset, entry in enumerate(entries):
        if entry[1] != prev_idx + 1 + offset:
            raise ValueError("append_entries with non-contiguous indexes")
    skipped = 0
    for entry in entries:
        if term_at(entry[1]) != entry[2]:
            break
        skipped += 1
    if skipped == 0 and (entries or last_index == prev_idx):
        return unchanged
    new_prev = prev_idx + skipped
    new_prev_term = entries[skipped - 1][2] if skipped else prev_term
    rest = entries[skipped:]
    if rest or last_index == new_prev:
        rewritten = dict(message, prevLogIdx=new_prev, prevLogTerm=new_prev_term, entries=rest)
        return AppendPlan(rewritten, None, skipped)
    heartbeat = {
        "type": "append_entries",
        "term": message["term"],
        "commit_index": min(message["commit_index"], new_prev),
    }
    reply = {"type": "next_node_idx", "next_node_idx": new_prev + 1, "reset": False, "success": True}
    return AppendPlan(heartbeat, reply, skipped)
