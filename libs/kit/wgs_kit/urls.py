"""Outbound URLs chosen by tenants (webhooks): syntax, and refusal of non-public addresses (SSRF).

The API checks a URL when it is stored; the webhooks service checks the
addresses again each time it connects, because DNS answers can change. Both judge
the host as yarl normalises it, which is the one aiohttp connects to: yarl reads
Unicode digits (`http://①②⑦.0.0.1/`, full-width ones) as ASCII ones.
Operators of private networks (and tests) allow every address with
`WGS_WEBHOOKS_ALLOW_PRIVATE=1`.
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from yarl import URL

from wgs_kit.env import env_bool

ALLOW_PRIVATE_ENV = "WGS_WEBHOOKS_ALLOW_PRIVATE"
URL_MAX = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedUrl(ValueError):
    """The URL is malformed, not http(s), or points at an address tenants may not reach."""


@dataclass(frozen=True)
class Target:
    """Where a URL connects: its host (name or literal address, as yarl and so aiohttp read it) and port."""

    host: str
    port: int


def allow_private_from_env() -> bool:
    """The operator's `WGS_WEBHOOKS_ALLOW_PRIVATE` setting (default: refuse non-public addresses)."""
    return env_bool(ALLOW_PRIVATE_ENV, False)


def parse_url(url: str) -> Target:
    """The host and port of an absolute http(s) URL; `RefusedUrl` says what is wrong with another."""
    if len(url) > URL_MAX:
        raise RefusedUrl(f"longer than {URL_MAX} characters")
    if any(c.isspace() for c in url):
        raise RefusedUrl("contains whitespace")
    try:
        parsed = URL(url)
        port = parsed.explicit_port
    except ValueError as exc:
        raise RefusedUrl(f"not a valid URL ({exc})") from None
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise RefusedUrl("must be an http:// or https:// URL")
    if not parsed.raw_host:
        raise RefusedUrl("has no host")
    return Target(parsed.raw_host, port or DEFAULT_PORTS[scheme])


def is_public(address: IPAddress) -> bool:
    """False for private, loopback, link-local, site-local, multicast, reserved, unspecified and other
    non-global addresses (such as 100.64.0.0/10); an IPv4 address mapped into IPv6, or embedded in a
    6to4 address (2002::/16), is judged as that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:
            return False
        address = address.ipv4_mapped or address.sixtofour or address
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def public_addresses(host: str, port: int) -> list[str]:
    """Resolve `host`; every address must be public (else `RefusedUrl`). `OSError` if it does not resolve."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if not is_public(ipaddress.ip_address(address)):
            raise RefusedUrl(f"{host} resolves to {address}, which is not a public address")
    return addresses


async def check_url(url: str, *, allow_private: bool) -> None:
    """Accept `url` as a webhook target now: `RefusedUrl` if it is malformed, does not resolve,
    or (unless `allow_private`) resolves to a non-public address."""
    target = parse_url(url)
    if allow_private:
        return
    try:
        await public_addresses(target.host, target.port)
    except OSError as exc:
        raise RefusedUrl(f"{target.host} does not resolve ({exc.strerror or exc})") from None
