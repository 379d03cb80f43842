"""USER[:GROUP] and supplementary groups resolved in an image's /etc/passwd and /etc/group.

How this works. Pure functions over the files' text, following moby/sys/user
(GetExecUser, GetAdditionalGroups), which Docker uses: a numeric user is a
uid even when a name looks the same, a numeric id without an entry is allowed
(uid 1234 runs with gid 0 unless a group is given), a name without an entry
is refused. A matched user takes its primary gid and home from passwd and,
when no group was given, its supplementary groups from the group file's
member lists. Docker also puts the primary gid first in the supplementary
list (moby 23+), so `id` shows it among the groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

MAX_ID = 2**31 - 1      # moby/sys/user's range of uids and gids


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]    # the primary gid first, as Docker gives them to runc
    home: str                           # "/" when the user has no passwd entry


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse_passwd(text: str) -> list[PasswdEntry]:
    """name:password:uid:gid:gecos:home:shell lines; lines whose ids are not numbers are skipped."""
    entries = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) < 4 or not parts[0]:
            continue
        uid, gid = _number(parts[2]), _number(parts[3])
        if uid is None or gid is None:
            continue
        entries.append(PasswdEntry(parts[0], uid, gid, parts[5] if len(parts) > 5 else ""))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """name:password:gid:member,member lines; lines without a numeric gid are skipped."""
    entries = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) < 3 or not parts[0]:
            continue
        gid = _number(parts[2])
        if gid is None:
            continue
        members = tuple(m for m in (parts[3].split(",") if len(parts) > 3 else ()) if m)
        entries.append(GroupEntry(parts[0], gid, members))
    return entries


def _in_range(number: int, what: str) -> int:
    if number > MAX_ID:
        raise ValueError(f"{what} {number} is out of range: uids and gids must be in range 0-{MAX_ID}")
    return number


def resolve_user(user: str, groups: Sequence[str], passwd: str | None, group: str | None) -> ExecUser:
    """Resolve `user` ("" = root; "name", "uid", "name:group", "uid:gid") and the supplementary
    `groups` (names or gids) against the text of /etc/passwd and /etc/group (None: no such file)."""
    user_arg, _, group_arg = user.partition(":")
    users = parse_passwd(passwd or "")
    group_entries = parse_group(group or "")
    uid_arg, gid_arg = _number(user_arg), _number(group_arg)

    uid, gid, home, matched_name = 0, 0, "/", ""
    if user_arg == "":
        match = next((u for u in users if u.uid == 0), None)
    elif uid_arg is not None:
        match = next((u for u in users if u.uid == uid_arg), None)
    else:
        match = next((u for u in users if u.name == user_arg), None)
    if match is not None:
        uid, gid, home, matched_name = match.uid, match.gid, match.home or "/", match.name
    elif user_arg:
        if uid_arg is None:
            raise ValueError(f"unable to find user {user_arg}: no matching entries in passwd file")
        uid = _in_range(uid_arg, "uid")

    supplementary: list[int] = []
    if group_arg:
        if gid_arg is not None:
            found = next((g for g in group_entries if g.gid == gid_arg), None)
        else:
            found = next((g for g in group_entries if g.name == group_arg), None)
        if found is not None:
            gid = found.gid
        elif gid_arg is None:
            raise ValueError(f"unable to find group {group_arg}: no matching entries in group file")
        else:
            gid = _in_range(gid_arg, "gid")
    elif matched_name:
        supplementary = [g.gid for g in group_entries if matched_name in g.members]

    for name in groups:
        found = next((g for g in group_entries if g.name == name or str(g.gid) == name), None)
        if found is not None:
            supplementary.append(found.gid)
        elif _number(name) is not None:
            supplementary.append(_in_range(int(name), "gid"))
        else:
            raise ValueError(f"unable to find group {name}: no matching entries in group file")
    return ExecUser(uid, gid, tuple(dict.fromkeys([gid, *supplementary])), home)
