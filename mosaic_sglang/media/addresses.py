"""Which network addresses a media URL may reach: pure functions, no connection is made.

A host is refused when any address it resolves to is not globally routable (loopback, RFC 1918 private,
carrier-grade NAT, link-local — which holds the cloud metadata endpoint 169.254.169.254 — unique-local
IPv6, multicast, reserved, unspecified), or when it is a well-known metadata host name. The operator opts
a host in by listing it in SGLang's ``--allowed-media-domains`` (then it may be private: they said so).
The rule runs on the first URL and again on every redirect (`integration/media_guard.py` hooks SGLang's
per-hop check).

Residual risk, documented: the check resolves the name and the download resolves it again, so a DNS
answer that changes between the two (rebinding) is not caught; list hosts explicitly where that matters.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterable, Optional, Sequence
from urllib.parse import urlsplit

__all__ = ["address_refusal", "host_refusal", "url_refusal", "METADATA_HOSTS", "Resolver"]

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
"""Cloud metadata services reachable by name (their addresses are link-local and refused anyway)."""

Resolver = Callable[[str], Sequence[str]]
"""``hostname -> [address, ...]``; tests pass a dict lookup, serving uses `resolve_host`."""


def address_refusal(address: str) -> Optional[str]:
    """Why ``address`` (an IPv4/IPv6 literal) may not be fetched, or None if it is a public address.

    Example:
        >>> address_refusal("169.254.169.254"), address_refusal("8.8.8.8")
        ('link-local (cloud metadata) address 169.254.169.254', None)
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"loopback address {ip}"
    if ip.is_link_local:
        return f"link-local (cloud metadata) address {ip}"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return f"reserved address {ip}"
    if ip.is_private or not ip.is_global:
        return f"private address {ip}"
    return None


def resolve_host(hostname: str) -> list[str]:
    """Every address ``hostname`` resolves to (A and AAAA), as strings."""
    infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


def _normalize(hostname: str) -> str:
    host = hostname.strip().rstrip(".").lower()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_refusal(hostname: str, *, allowed_hosts: Iterable[str] = (),
                 resolve: Resolver = resolve_host) -> Optional[str]:
    """Why a URL on ``hostname`` may not be fetched, or None.

    Args:
        hostname: the URL's host (a name or an IP literal).
        allowed_hosts: hosts the operator listed; they are allowed whatever they resolve to.
        resolve: name → addresses (only called for names, never for literals).
    """
    host = _normalize(hostname)
    if host in {_normalize(h) for h in allowed_hosts}:
        return None
    if host in METADATA_HOSTS:
        return f"metadata host {host!r}"
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = list(resolve(host))
        except OSError:
            return f"host {host!r} could not be resolved"
        if not addresses:
            return f"host {host!r} could not be resolved"
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None:
            return f"host {host!r} resolves to a {reason}" if address != host else reason
    return None


def url_refusal(url: str, *, allowed_hosts: Iterable[str] = (), resolve: Resolver = resolve_host) -> Optional[str]:
    """`host_refusal` for an http(s) URL (any other scheme, or no host, is refused here too)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http(s)"
    if not parts.hostname:
        return "URL without a host"
    return host_refusal(parts.hostname, allowed_hosts=allowed_hosts, resolve=resolve)
