"""Sizes as Docker writes them (64m, 1g, 512MiB): one parser for the CLI and the daemon."""
from __future__ import annotations

import re
from decimal import Decimal

_MEMORY = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp]?)(i?b?)", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def parse_memory(text: str) -> int:
    """Docker's RAMInBytes: 64m, 1g, 512MiB, 1.5GB, 100 (bytes), 100b; binary units."""
    match = _MEMORY.fullmatch(text.strip())
    if not match or (match[3].lower() == "i" or (match[3][:1].lower() == "i" and not match[2])):
        raise ValueError(f"{text!r} is not a size in bytes (use a number and a unit, like 64m, 1g or 512MiB)")
    return int(Decimal(match[1]) * _MEMORY_UNITS[match[2].lower()])
