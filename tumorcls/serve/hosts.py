"""Which Host headers and Origins the server answers, against DNS rebinding and cross-site requests.

DNS rebinding: a page on evil.example makes its name resolve to this server's address, then reads the answers as
same-origin; its requests carry ``Host: evil.example``, so a name the server was not told to serve is refused. An
IP-literal Host cannot be rebound, so a server bound to every address (0.0.0.0, ::) accepts its own addresses by
literal; names other than localhost are added with ``--allowed-host`` (``*.example.org`` covers subdomains).

Cross-site requests: a browser sends ``Origin`` with every cross-origin POST, including the multipart forms another
site may submit without asking; a request that changes something (any method but GET, HEAD, OPTIONS) or opens a
websocket is refused unless its Origin is this server itself or one named with ``--cors-origin``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from tumorcls.serve.config import LOOPBACK_NAMES, WILDCARD_HOSTS, ServeConfig

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(host_header: str) -> str:
    """'Example.org:7860' -> 'example.org', '[::1]:7860' -> '::1'; '' for a missing or malformed header."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    name, _, port = value.partition(":")
    return name if (not port or port.isdigit()) and ":" not in port else ""


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The Host names one server answers: localhost, the address it is bound to, and those it was given."""

    def __init__(self, config: ServeConfig) -> None:
        bound = config.host.strip("[]").lower()
        self.any_ip = bound in WILDCARD_HOSTS
        self.names = frozenset({*LOOPBACK_NAMES, *([] if self.any_ip else [bound])})
        self.patterns = tuple(h.strip().lower() for h in config.allowed_hosts if h.strip())
        self.cors_origins = frozenset(o.rstrip("/").lower() for o in config.cors_origins)

    def allows_host(self, host_header: str) -> bool:
        name = host_name(host_header)
        if not name:
            return False
        if name in self.names or (self.any_ip and _is_ip(name)):
            return True
        return any(p == "*" or p == name or (p.startswith("*.") and name.endswith(p[1:])) for p in self.patterns)

    def allows_origin(self, origin: str | None, host_header: str) -> bool:
        """An Origin of this server's own pages (the same host and port as the request's Host), or a CORS one;
        requests without an Origin come from programs, not from another site's page, and pass."""
        if origin is None:
            return True
        origin = origin.strip().lower().rstrip("/")
        if origin in self.cors_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc == host_header.strip().lower()
