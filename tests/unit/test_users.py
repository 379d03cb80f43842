"""USER[:GROUP] and --group resolved as Docker's moby/sys/user does."""
from __future__ import annotations

import pytest

from swarm.runtime.users import ExecUser, parse_group, parse_passwd, resolve_user

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment line is not an entry
app:x:1000:1000:App:/home/app:/bin/sh
broken:x:abc:1:::
2000:x:3000:3000::/home/digits:/bin/sh
nohome:x:1001:100::
"""
GROUP = """root:x:0:
staff:x:50:app,other
app:x:1000:
users:x:100:app
4000:x:4001:
"""


def test_parsing_skips_lines_without_numeric_ids() -> None:
    assert [u.name for u in parse_passwd(PASSWD)] == ["root", "app", "2000", "nohome"]
    assert parse_group(GROUP)[1].members == ("app", "other")


def test_default_is_root_with_its_home() -> None:
    assert resolve_user("", (), PASSWD, GROUP) == ExecUser(0, 0, (0,), "/root")


def test_a_name_takes_uid_gid_home_and_member_groups() -> None:
    assert resolve_user("app", (), PASSWD, GROUP) == ExecUser(1000, 1000, (1000, 50, 100), "/home/app")


def test_a_number_is_a_uid_even_when_a_name_looks_the_same() -> None:
    # "2000" is the name of the user with uid 3000; as a number it means uid 2000 (no entry).
    assert resolve_user("2000", (), PASSWD, GROUP) == ExecUser(2000, 0, (0,), "/")
    assert resolve_user("1000", (), PASSWD, GROUP) == ExecUser(1000, 1000, (1000, 50, 100), "/home/app")


def test_an_explicit_group_replaces_gid_and_drops_member_groups() -> None:
    assert resolve_user("app:staff", (), PASSWD, GROUP) == ExecUser(1000, 50, (50,), "/home/app")
    assert resolve_user("app:777", (), PASSWD, GROUP) == ExecUser(1000, 777, (777,), "/home/app")
    assert resolve_user("1234:5678", (), PASSWD, GROUP) == ExecUser(1234, 5678, (5678,), "/")


def test_supplementary_groups_by_name_or_gid() -> None:
    # nohome's primary group is 100; duplicates go, the order stays.
    assert resolve_user("1001", ["staff", "100", "999", "staff"], PASSWD, GROUP) == \
        ExecUser(1001, 100, (100, 50, 999), "/")


def test_unknown_names_are_refused_with_docker_sentence() -> None:
    with pytest.raises(ValueError, match="^unable to find user bob: no matching entries in passwd file$"):
        resolve_user("bob", (), PASSWD, GROUP)
    with pytest.raises(ValueError, match="^unable to find group wheel: no matching entries in group file$"):
        resolve_user("app:wheel", (), PASSWD, GROUP)
    with pytest.raises(ValueError, match="unable to find group wheel"):
        resolve_user("app", ["wheel"], PASSWD, GROUP)
    with pytest.raises(ValueError, match="out of range"):
        resolve_user("4294967296", (), PASSWD, GROUP)


def test_without_passwd_or_group_files_only_numbers_work() -> None:
    assert resolve_user("", (), None, None) == ExecUser(0, 0, (0,), "/")
    assert resolve_user("5:6", ["7"], None, None) == ExecUser(5, 6, (6, 7), "/")
    with pytest.raises(ValueError, match="unable to find user app"):
        resolve_user("app", (), None, None)
