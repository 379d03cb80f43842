"""plan_peers and br0's entries towards vxlan0 (pure, no namespaces)."""

from overlay.network import Peer, plan_peers

LOCAL = "198.18.0.1"
B = "198.18.0.2"


def test_every_remote_mac_gets_a_static_bridge_entry_and_nothing_else_stays() -> None:
    # .3 was learned from another host but now runs here: its learned entry must go,
    # or br0 keeps sending it into vxlan0; .4 was learned and is remote: made static.
    learned = {"02:42:0a:00:00:03": False, "02:42:0a:00:00:04": False}
    plan = plan_peers([], {}, [Peer.at("10.0.0.4", B), Peer.at("10.0.0.3", LOCAL)], LOCAL, current_bridge=learned)
    assert plan.bridge_del == ("02:42:0a:00:00:03",)
    assert plan.bridge_add == ("02:42:0a:00:00:04",)


def test_a_programmed_bridge_is_left_alone_and_none_means_not_managed() -> None:
    fdb, neigh = [("02:42:0a:00:00:04", B)], {"10.0.0.4": "02:42:0a:00:00:04"}
    assert plan_peers(fdb, neigh, [Peer.at("10.0.0.4", B)], LOCAL, current_bridge={"02:42:0a:00:00:04": True}).empty
    assert plan_peers(fdb, neigh, [Peer.at("10.0.0.4", B)], LOCAL).empty
