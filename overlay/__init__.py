"""The network datapath: VXLAN overlays, task sandboxes, IPAM and nftables LB.

Driven by desired state handed to it (it knows nothing of Raft):

- `ipam.Allocator` / `mac_for`: pure allocation of subnets, addresses, VIPs,
  VNIs and published ports.
- `netns`: named network namespaces and running code inside them.
- `NetworkDatapath`: per (host, network) namespace with br0 + vxlan0, and its
  static peer table (`Peer`, `set_peers`).
- `TaskSandbox` / `Attachment`: a task's namespace with one veth per network.
- `lb`: nftables rulesets for service VIPs and the ingress routing mesh.
- `IngressSandbox`: a node's ingress sandbox, host link and published ports.
"""

from overlay.errors import (
    AlreadyAllocated,
    DatapathError,
    InvalidRequest,
    NftablesUnavailable,
    OverlayError,
    PoolExhausted,
)
from overlay.ingress import IngressSandbox
from overlay.ipam import Allocator, mac_for
from overlay.lb import (
    Backend,
    PublishedPort,
    VipService,
    apply_ruleset,
    check_nftables,
    ingress_host_ruleset,
    ingress_sandbox_ruleset,
    vip_ruleset,
)
from overlay.network import NetworkDatapath, Peer, PeerPlan, plan_peers
from overlay.sandbox import Attachment, TaskSandbox

__all__ = [
    "AlreadyAllocated",
    "Allocator",
    "Attachment",
    "Backend",
    "DatapathError",
    "IngressSandbox",
    "InvalidRequest",
    "NetworkDatapath",
    "NftablesUnavailable",
    "OverlayError",
    "Peer",
    "PeerPlan",
    "PoolExhausted",
    "PublishedPort",
    "TaskSandbox",
    "VipService",
    "apply_ruleset",
    "check_nftables",
    "ingress_host_ruleset",
    "ingress_sandbox_ruleset",
    "mac_for",
    "plan_peers",
    "vip_ruleset",
]
