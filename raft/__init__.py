"""The replicated record store: pysyncobj made safe (see docs/architecture.md)."""
import _socket
import socket as _socket_module

# pysyncobj's win_inet_pton.py replaces socket.inet_ntop on EVERY platform
# with a Windows-only ctypes version that raises (the `os.name == 'nt'`
# guard covers only inet_pton). Anything else in the process that formats
# an address (pyroute2's netlink decoding among them) then breaks. Import it
# here, first, and put the C implementation back.
import pysyncobj.win_inet_pton  # noqa: E402,F401

_socket_module.inet_ntop = _socket.inet_ntop
