"""A manager's side of membership on the node API: ca.bundle, join,
heartbeat, cert.renew, raft.join, raft.remove and control.left.

Each call goes to this node's Manager (swarm/manager/membership.py) while
the node is one; once it is no longer a manager the caller is told
"unavailable" and tries another. The caller is the node its certificate
names (the router has already checked its current role).
"""
from __future__ import annotations

from collections.abc import Callable

from swarm.ca import pki
from swarm.daemon import keys
from swarm.manager.membership import Manager
from swarm.rpc.messages import Peer, RPCError


class MembershipRPC:
    def __init__(self, manager: Callable[[], Manager | None], ca_pem: bytes,
                 data_key: Callable[[], bytes | None]) -> None:
        self._manager = manager   # this node's Manager, or None while it is not one
        self.ca_pem = ca_pem
        self._data_key = data_key  # this manager's Raft data key, given to a new manager

    def _keys_for_new_manager(self, m: Manager) -> dict:
        data_key = self._data_key()
        if data_key is None:
            raise RPCError("unavailable", "this manager has no Raft data key yet; retry")
        return keys.key_for_new_manager(m.cluster(), data_key)

    def need_manager(self) -> Manager:
        m = self._manager()
        if m is None:
            raise RPCError("unavailable", "this node is no longer a manager")
        return m

    async def ca_bundle(self, peer: Peer, params: dict) -> dict:
        return {"ca_pem": self.ca_pem}

    async def join(self, peer: Peer, params: dict) -> dict:
        m = self.need_manager()
        try:
            answer = await m.join(params)
        except KeyError as exc:
            raise RPCError("bad_request", f"join request lacks {exc}") from None
        if answer["role"] == "manager":
            answer.update(self._keys_for_new_manager(m))
        return answer

    async def heartbeat(self, peer: Peer, params: dict) -> dict:
        return await self.need_manager().heartbeat(peer.node_id, params)

    async def node_left(self, peer: Peer, params: dict) -> dict:
        m = self.need_manager()
        await m.set_status(peer.node_id, "down", "left the swarm")
        return {}

    async def cert_renew(self, peer: Peer, params: dict) -> dict:
        m = self.need_manager()
        if not isinstance(params.get("csr_pem"), bytes):
            raise RPCError("bad_request", "cert.renew needs a certificate signing request (csr_pem, PEM bytes)")
        node = m.nodes().get(peer.node_id)
        if node is None:
            raise RPCError("forbidden", "this node has been removed from the swarm")
        cert = m.issue(params["csr_pem"], peer.node_id, node["role"])
        serial = format(pki.identity_from_cert(cert).serial, "x")
        await m.modify_node(peer.node_id, lambda n: dict(
            n, cert_serial=serial, old_serials=([n["cert_serial"]] + n.get("old_serials", []))[:8]))
        return {"cert_pem": cert}

    async def raft_join(self, peer: Peer, params: dict) -> dict:
        m = self.need_manager()
        node = m.nodes().get(peer.node_id)
        if node is None or node["role"] != "manager":
            raise RPCError("forbidden", "only a node promoted to manager may join Raft")
        raft_addr = str(params["raft_addr"])
        await m.modify_node(peer.node_id, lambda n: None if n.get("raft_addr") == raft_addr
                            else dict(n, raft_addr=raft_addr))
        return {"raft_members": await m.add_raft_member(peer.node_id, raft_addr), **self._keys_for_new_manager(m)}

    async def raft_remove(self, peer: Peer, params: dict) -> dict:
        return {"raft_members": await self.need_manager().remove_raft_member(str(params["node_id"]))}
