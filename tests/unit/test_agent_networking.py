"""The node networking's pure decisions about leftovers of an earlier run (no kernel)."""
from __future__ import annotations

from overlay.network import Found
from swarm.agent.networking import leftover_goes, prefix_for, stale_networks

NODE = "0fc8cmyh4hj3p85rqw1ulqxtc"
PREFIX = prefix_for(NODE)


def test_only_this_nodes_overlay_namespaces_outside_keep_are_stale() -> None:
    other = prefix_for("f3jpxx7vjjyib06lnn0x409xs")
    present = [f"{PREFIX}-ov-2avppml1r4", f"{PREFIX}-ov-ccdl6gjk1o", f"{PREFIX}-t-7plt5fgfwq",
               f"{PREFIX}-in-gress", f"{other}-ov-2avppml1r4", "swl-lab-h1", "ov-0123", f"x{PREFIX}-ov-1"]
    assert stale_networks(present, PREFIX, keep={f"{PREFIX}-ov-ccdl6gjk1o"}) == [f"{PREFIX}-ov-2avppml1r4"]
    assert stale_networks(present, PREFIX, keep=set(present)) == []
    assert stale_networks([], PREFIX, keep=set()) == []


def test_a_leftover_goes_once_no_sandbox_is_plugged_in_or_when_its_vni_is_needed() -> None:
    idle = Found(f"{PREFIX}-ov-a", 4097, ())
    used = Found(f"{PREFIX}-ov-b", 4097, ("v0123456789a00",))
    broken = Found(f"{PREFIX}-ov-c", None, ())       # vxlan0 never made (a crash while creating)
    assert leftover_goes(idle) and leftover_goes(idle, 4098) and leftover_goes(broken, 4097)
    # A task from before the restart still plugged in (being stopped): it stays...
    assert not leftover_goes(used) and not leftover_goes(used, 4098)
    # ...unless a network being created needs its VNI: its own network is gone then.
    assert leftover_goes(used, 4097)
    assert not leftover_goes(Found(f"{PREFIX}-ov-d", None, ("v0123456789a00",)), 4097)
