"""Small pyroute2 helpers shared by network.py, sandbox.py and ingress.py.

Every link, address, route, FDB and neighbour change goes through pyroute2,
on a netlink socket opened inside the named namespace;
netlink errors are translated into `DatapathError` at this boundary.

pyroute2 is imported by `iproute()` when a namespace is first worked on, not
with this module (the daemon imports the overlay package at start): its
package imports all of its ~240 modules (12 MiB RSS) whatever one takes from
it, and a node whose tasks use no network never needs any of them. So
handlers name the exception class as `except netlink_error() as exc:` (the
expression is evaluated only when an exception reaches the handler).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import TYPE_CHECKING, Any, Callable, Iterator

from overlay.errors import DatapathError
from overlay import netns as ns
from overlay.netns import run_in

if TYPE_CHECKING:
    from pyroute2 import IPRoute, NetlinkError


def netlink_error() -> type[NetlinkError]:
    """pyroute2's NetlinkError class (importing pyroute2 if nothing has yet)."""
    # From the package, as every first import of pyroute2 here is: two threads importing it at
    # once then both wait on the package's import lock first (a submodule named first would take
    # its own lock before the package's, and the two could deadlock).
    from pyroute2 import NetlinkError

    return NetlinkError


@contextlib.contextmanager
def iproute(netns: str | None, what: str) -> Iterator[IPRoute]:
    """An IPRoute bound to `netns` (None: the caller's namespace); errors become DatapathError."""
    try:
        from pyroute2 import IPRoute

        # The netlink socket is made by a thread that setns()-es into `netns`
        # (it stays bound there) and handed to pyroute2 by fd: no fork of
        # this (threaded) process, unlike IPRoute(netns=NAME).
        sock = run_in(netns, socket.socket, socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
        fd = sock.detach()
        try:
            ipr = IPRoute(fileno=fd)
        except BaseException:
            os.close(fd)
            raise
    except DatapathError:
        raise
    except Exception as exc:
        raise DatapathError(f"Cannot open netlink in namespace {netns}: {exc}") from exc
    try:
        yield ipr
    except netlink_error() as exc:
        where = netns or "this namespace"
        raise DatapathError(f"Failed to {what} in {where}: {exc.args[1] if len(exc.args) > 1 else exc}") from exc
    finally:
        ipr.close()


def index_of(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def require_index(ipr: IPRoute, ifname: str) -> int:
    idx = index_of(ipr, ifname)
    if idx is None:
        raise DatapathError(f"The interface {ifname} does not exist.")
    return idx


def link_info(ipr: IPRoute, index: int) -> Any:
    return ipr.link("get", index=index)[0]


def info_data(msg: Any, attr: str) -> Any:
    """An IFLA_INFO_DATA attribute of a link message (e.g. IFLA_VXLAN_ID), or None."""
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is None:
        return None
    data = linkinfo.get_attr("IFLA_INFO_DATA")
    return None if data is None else data.get_attr(attr)


def kind_of(msg: Any) -> str | None:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    return None if linkinfo is None else linkinfo.get_attr("IFLA_INFO_KIND")


def has_address(ipr: IPRoute, index: int, address: str, prefixlen: int) -> bool:
    for msg in ipr.get_addr(index=index, family=2):
        if msg.get_attr("IFA_ADDRESS") == address and msg["prefixlen"] == prefixlen:
            return True
    return False


def ensure_address(ipr: IPRoute, index: int, address: str, prefixlen: int) -> None:
    if not has_address(ipr, index, address, prefixlen):
        try:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        except netlink_error() as exc:
            if exc.code != errno.EEXIST:  # already there: a dump we could not decode said otherwise
                raise


def delete_link(ipr: IPRoute, ifname: str) -> bool:
    """Delete a link by name; False if it was not there."""
    idx = index_of(ipr, ifname)
    if idx is None:
        return False
    try:
        ipr.link("del", index=idx)
    except netlink_error() as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


@contextlib.contextmanager
def building(netns: str, remove: Callable[[], None]) -> Iterator[None]:
    """For an idempotent create(): the namespace exists (IPv4 only, `lo` up) inside the
    block, and if the block fails on a namespace it made, `remove()` takes it all back."""
    created = not ns.ns_exists(netns)
    ns.create(netns)
    try:
        ns.set_sysctl(netns, "net.ipv6.conf.all.disable_ipv6", 1)
        ns.set_sysctl(netns, "net.ipv6.conf.default.disable_ipv6", 1)
        with iproute(netns, "bring up lo") as ipr:
            ipr.link("set", index=require_index(ipr, "lo"), state="up")
        yield
    except BaseException:
        if created:
            remove()
        raise
