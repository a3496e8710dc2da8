"""Where a namespace administrator's webhook may connect: globally routable addresses, plus
the networks ``events.webhooks.allowed_networks`` lists.

Checked twice:

* when the webhook is created (:func:`check_url`): the URL's host, a literal address or each
  address its name resolves to now -- an early, friendly 400;
* on **every connection a delivery opens** (:func:`guarded_connector`): the connector's socket
  factory sees the very address the socket is about to connect to, after DNS, so a name that
  resolved to a public address at creation and to ``127.0.0.1`` now (DNS rebinding), an
  IPv4-mapped IPv6 loopback, or a literal in any spelling is refused there.  The delivery
  fails like an unreachable receiver (retried, then dead-lettered, with the reason).

Redirects are never followed by deliveries (``allow_redirects=False``), so a receiver cannot
bounce a delivery to an internal address either.  Administrators' webhooks are not checked:
administrators are trusted with the registry's network position (docs/events.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import aiohttp
from yarl import URL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Seconds the creation-time check waits for DNS (the connect-time check is what holds).
RESOLVE_TIMEOUT = 3.0


class DestinationRefused(OSError):
    """A webhook delivery to an address its rules do not allow."""


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def address_allowed(raw: str, allowed: tuple[Network, ...]) -> bool:
    """Globally routable (not loopback, link-local, private, shared, reserved, multicast or
    unspecified), or inside one of ``allowed``."""
    try:
        addr: Address = ipaddress.ip_address(raw.split("%", 1)[0])  # (an IPv6 zone id)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in net for net in allowed):
        return True
    return addr.is_global and not addr.is_multicast


def guarded_connector(allowed: tuple[Network, ...], **kwargs: Any) -> aiohttp.TCPConnector:
    """A connector whose every socket is refused unless it connects to an allowed address."""

    def socket_factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        if not address_allowed(str(sockaddr[0]), allowed):
            raise DestinationRefused(f"webhook destination {sockaddr[0]} is not allowed (not a public address)")
        return socket.socket(family=family, type=type_, proto=proto)

    return aiohttp.TCPConnector(socket_factory=socket_factory, **kwargs)


async def check_url(url: str, allowed: tuple[Network, ...]) -> str | None:
    """Why ``url`` may not be a namespace administrator's webhook, or None.  A name that does
    not resolve now passes (the check at connect time still holds)."""
    try:
        host = URL(url).host
    except (ValueError, TypeError):
        return "invalid URL"
    if not host:
        return "the URL has no host"
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if literal:
        candidates = [host]
    else:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError, UnicodeError):
            return None
        candidates = [str(i[4][0]) for i in infos]
    for raw in candidates:
        if not address_allowed(raw, allowed):
            return f"destination {raw} is not a public address (loopback, link-local, private...; see events.webhooks.allowed_networks)"
    return None
