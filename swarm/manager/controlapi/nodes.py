"""The control API a manager answers: `swarm node ...`, `join-token`, `info`.

Each handler validates its input, decides with `swarm.api.model`, and writes
through `Manager` (compare-and-set transactions in Raft). Any manager answers
any command: reads come from its local copy, writes are committed through
Raft whoever the leader is.
"""
from __future__ import annotations

from typing import Any

import trio

from raft.store import Op
from swarm.api import filters, model
from swarm.ca import keyring, pki
from swarm.manager.membership import Manager, utcnow
from swarm.api.errors import ApiError

READ_METHODS = ("info", "node.ls", "node.inspect")
WRITE_METHODS = ("node.update", "node.promote", "node.demote", "node.rm", "join_token", "cluster.update",
                 "unlock_key")
HAND_OVER_TIME = 20.0  # seconds a manager leaving (or demoting itself) retries its hand-over
MANAGER_LEAVING = "You are attempting to leave the swarm on a node that is participating as a manager."


def leave_refusal(managers: int, reachable: int) -> str:
    """Why a manager may not simply leave (Docker's answer to `leave` without --force).

    `managers` counts the managers of the swarm, `reachable` those this one
    can reach, itself included."""
    if managers <= 1:
        return (f"{MANAGER_LEAVING} Removing the last manager erases all current state of the swarm; "
                "use --force to ignore this message.")
    if not model.removal_keeps_quorum(managers, reachable, True):
        return (f"{MANAGER_LEAVING} Removing this node leaves {reachable - 1} managers out of {managers}; "
                "without a Raft quorum your swarm will be inaccessible. Use --force to suppress this message.")
    return (f"{MANAGER_LEAVING} The safe way to remove a manager is to demote it first "
            "(swarm node demote), or use --force to leave anyway.")


def _refs(params: dict) -> list[str]:
    refs = params.get("refs")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r for r in refs):
        raise ApiError("bad_request", "give at least one node (ID, ID prefix or hostname)")
    return refs


class ControlAPI:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    def _view(self) -> tuple[str | None, set[str]]:
        return self.m.leader_id(), self.m.reachable()

    async def handle(self, method: str, params: dict) -> Any:
        handler = {
            "info": self.info, "node.ls": self.node_ls, "node.inspect": self.node_inspect,
            "node.update": self.node_update, "node.promote": self.node_promote,
            "node.demote": self.node_demote, "node.rm": self.node_rm, "join_token": self.join_token,
            "cluster.update": self.cluster_update, "unlock_key": self.unlock_key,
        }.get(method)
        if handler is None:
            raise ApiError("unknown_method", f"unknown control method {method}")
        return await handler(params)

    async def info(self, params: dict) -> dict:
        nodes = self.m.nodes()
        status = await self.m.raft.status()
        return {
            "cluster_id": self.m.cluster()["id"],
            "leader": status["leader"],
            "managers": sum(1 for n in nodes.values() if n["role"] == "manager"),
            "nodes": len(nodes),
            "manager_addrs": self.m.manager_addrs(),
            "raft": {"term": status["term"], "commit_index": status["commit_index"],
                     "applied_index": status["applied_index"], "members": status["members"]
                     if "members" in status else self.m.raft.members(), "journal": status["journal"],
                     # for an operator (and the chaos suite's report) looking at a member that lags
                     "role": status["role"], "log_length": status["log_length"],
                     "peers": {p["name"]: {"connected": p["connected"], "match_index": p["match_index"],
                                           "next_index": p["next_index"]} for p in status["peers"]}},
            **self._settings_view(),
        }

    def _settings_view(self) -> dict:
        """The cluster settings as `info` shows them (heartbeat_period: the name nodes report too)."""
        settings = model.cluster_settings(self.m.cluster())
        settings["heartbeat_period"] = settings.pop("heartbeat")
        settings["cert_expiry_period"] = settings.pop("cert_expiry")
        return settings

    async def cluster_update(self, params: dict) -> dict:
        """`swarm update`: change the settings given, compare-and-set on the cluster record.
        Nodes take a new heartbeat period from their next heartbeat's answer; a new
        certificate expiry applies to the certificates issued from now on."""
        try:
            changes = model.settings_update(params)
        except model.BadSetting as exc:
            raise ApiError("bad_request", str(exc)) from None
        if changes:
            fresh_key = keyring.new_unlock_key()

            def change(cluster: dict) -> dict | None:
                new = dict(cluster, **changes)
                # Autolock on: the managers wrap their data key with the unlock key (a new one
                # unless one is set); off: the key is dropped and they keep their data key in the clear.
                new["unlock_key"] = (cluster.get("unlock_key") or fresh_key) if new.get("autolock") else ""
                return None if new == cluster else new
            await self.m.modify_cluster(change)
        return self._settings_view()

    async def unlock_key(self, params: dict) -> dict:
        """`swarm unlock-key [--rotate]`: the cluster's unlock key (a new one with rotate).
        Every running manager rewraps its data key with the new key (swarm/daemon/keys.py)."""
        if params.get("rotate"):
            fresh_key = keyring.new_unlock_key()
            await self.m.modify_cluster(lambda cluster: dict(cluster, unlock_key=fresh_key)
                                        if cluster.get("autolock") else None)
        key = self.m.cluster().get("unlock_key") or ""
        if not key:
            raise ApiError("bad_request", "no unlock key is set: autolock is off (swarm update --autolock=true)")
        return {"unlock_key": key}

    async def node_ls(self, params: dict) -> list[dict]:
        wanted = filters.from_params(params, filters.NODE_FILTERS)
        leader, reachable = self._view()
        # Every node here has been accepted (SwarmKit's pending membership does not exist);
        # we have no engine labels, so `label` reads the node labels as `node.label` does.
        rows = [model.row(n, leader, reachable) for n in self.m.nodes().values()
                if filters.matches(wanted, filters.NODE_FILTERS, {
                    "id": n["id"], "name": n["hostname"], "label": n.get("labels") or {},
                    "node.label": n.get("labels") or {}, "role": n["role"], "membership": "accepted"})]
        return sorted(rows, key=lambda r: (r["hostname"], r["id"]))

    async def node_inspect(self, params: dict) -> list[dict]:
        leader, reachable = self._view()
        out = []
        for ref in _refs(params):
            node = self.m.find(ref)
            out.append(dict(model.inspect_view(node, leader, reachable), version=self.m.node_version(node["id"])))
        return out

    async def node_update(self, params: dict) -> dict:
        target = self.m.find(str(params.get("ref", "")))
        label_add = params.get("label_add") or {}
        label_rm = params.get("label_rm") or []
        if not isinstance(label_add, dict) or not isinstance(label_rm, list):
            raise ApiError("bad_request", "label_add must be a map and label_rm a list")
        availability = params.get("availability")
        version = params.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise ApiError("bad_request", "version must be a record version (an integer from node.inspect)")

        def change(node: dict) -> dict:
            try:
                return model.updated(node, utcnow(), availability=availability,
                                     label_add={str(k): str(v) for k, v in label_add.items()},
                                     label_rm=[str(k) for k in label_rm])
            except ValueError as exc:
                raise ApiError("bad_request", str(exc)) from None

        node, new_version = await self.m.modify_node_at(target["id"], change, version)
        leader, reachable = self._view()
        return dict(model.inspect_view(node, leader, reachable), version=new_version)

    async def node_promote(self, params: dict) -> list[dict]:
        out = []
        for ref in _refs(params):
            node = self.m.find(ref)
            if node["role"] == "manager":
                out.append({"id": node["id"], "hostname": node["hostname"],
                            "message": f"Node {node['hostname']} is already a manager."})
                continue
            await self.m.modify_node(node["id"], lambda n: dict(n, role="manager",
                                                               updated_at=model.timestamp(utcnow())))
            out.append({"id": node["id"], "hostname": node["hostname"],
                        "message": f"Node {node['hostname']} promoted to a manager in the swarm."})
        return out

    async def node_demote(self, params: dict) -> list[dict]:
        out = []
        for ref in _refs(params):
            node = self.m.find(ref)
            if node["role"] != "manager":
                if any(m.startswith(node["id"] + "@") for m in self.m.raft.members()):
                    # An earlier demotion rewrote the record but did not finish
                    # the Raft removal: finish it, so a retry completes the job.
                    await self.m.remove_raft_member(node["id"])
                out.append({"id": node["id"], "hostname": node["hostname"],
                            "message": f"Node {node['hostname']} is already a worker."})
                continue
            managers = [n for n in self.m.nodes().values() if n["role"] == "manager"]
            reachable = self.m.reachable()
            if len(managers) == 1:
                raise ApiError("conflict", "cannot demote the last manager of the swarm")
            if not model.removal_keeps_quorum(len(managers), len(reachable & {n["id"] for n in managers}),
                                              node["id"] in reachable):
                raise ApiError("conflict", f"demoting {node['hostname']} would lose the Raft quorum "
                                           "(not enough reachable managers would remain)")
            if node["id"] == self.m.node_id:
                # A member cannot remove itself from Raft: the leader does it (see Manager.hand_over).
                await self.m.hand_over(trio.current_time() + HAND_OVER_TIME)
            else:
                await self.m.modify_node(node["id"], lambda n: dict(n, role="worker", raft_addr="",
                                                                   updated_at=model.timestamp(utcnow())))
                try:
                    await self.m.remove_raft_member(node["id"])
                except ApiError:
                    if any(m.startswith(node["id"] + "@") for m in self.m.raft.members()):
                        # Still a Raft member: put the record back, the node stays a manager.
                        await self.m.modify_node(node["id"], lambda n: dict(
                            n, role="manager", raft_addr=node["raft_addr"], updated_at=model.timestamp(utcnow())))
                    raise
            out.append({"id": node["id"], "hostname": node["hostname"],
                        "message": f"Manager {node['hostname']} demoted in the swarm."})
        return out

    async def node_rm(self, params: dict) -> list[str]:
        force = bool(params.get("force"))
        removed = []
        for ref in _refs(params):
            node = self.m.find(ref)
            if node["role"] == "manager":
                raise ApiError("conflict", f"node {node['hostname']} is a manager: demote it before removing it")
            if node["status"] != "down" and not force:
                raise ApiError("conflict", f"node {node['hostname']} is not down and can't be removed "
                                           "(use --force to remove it anyway)")
            rec = self.m.raft.get(model.NODE, node["id"])
            ops = [Op.delete(model.NODE, node["id"], expect=rec.version)]
            # Every certificate this node ever held is refused from now on.
            for serial in {node.get("cert_serial", ""), *node.get("old_serials", [])} - {""}:
                if self.m.raft.get(model.REVOKED, serial) is None:
                    ops.append(Op.create(model.REVOKED, serial,
                                         model.encode({"node_id": node["id"], "at": model.timestamp(utcnow())})))
            await self.m.commit(ops)
            removed.append(node["id"])
        return removed

    async def join_token(self, params: dict) -> dict:
        role = params.get("role")
        if role not in model.ROLES:
            raise ApiError("bad_request", "the token role is worker or manager")
        if params.get("rotate"):
            def rotate(cluster: dict) -> dict:
                tokens = dict(cluster["tokens"])
                tokens[role] = pki.new_join_token(cluster["ca_cert_pem"]).secret
                return dict(cluster, tokens=tokens)
            await self.m.modify_cluster(rotate)
        cluster = self.m.cluster()
        token = pki.JoinToken(pki.ca_digest(cluster["ca_cert_pem"]), cluster["tokens"][role])
        me = self.m.nodes().get(self.m.node_id, {})
        return {"token": str(token), "addr": me.get("addr") or (self.m.manager_addrs() or [""])[0]}
