"""Which addresses stay on this machine: where a listener or a credential sent in clear is no one else's to read."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``); a name or ``0.0.0.0`` is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def stays_private(url: str) -> bool:
    """Whether a key sent to ``url`` stays off the network in clear: https, or http to a loopback host."""
    return url.startswith("https://") or is_loopback(urlsplit(url).hostname or "")
