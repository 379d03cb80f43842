"""Undo pysyncobj's replacement of socket.inet_ntop: import this before pysyncobj.

pysyncobj's win_inet_pton.py replaces socket.inet_ntop on EVERY platform
with a Windows-only ctypes version that raises (the `os.name == 'nt'`
guard covers only inet_pton). Anything else in the process that formats
an address (pyroute2's netlink decoding among them) then breaks. Importing
it here, first, and putting the C implementation back fixes the process.
(pyroute2 binds `socket.inet_ntop` when it is imported, and the overlay loads
it on a node's first netlink call, so in a daemon always after Raft's engine: it gets the
C one only because this module ran first.)
Every module of raft/ that imports pysyncobj imports this one first (not
raft/__init__.py: `raft.framing` and `raft.cipher` alone must not load
pysyncobj, which the CLI would pay for).
"""
import _socket
import socket as _socket_module

import pysyncobj.win_inet_pton  # noqa: F401

_socket_module.inet_ntop = _socket.inet_ntop
