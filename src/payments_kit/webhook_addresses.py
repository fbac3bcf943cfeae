"""Which addresses the platform may post webhooks to (SPEC §3d): the one
rule, applied by payment-svc at registration and by webhook-dispatcher on
the address it connects to. Plain Python (ipaddress).

Development allows loopback (http or https); production refuses it.
Everything in FORBIDDEN_NETWORKS is refused everywhere: private (RFC 1918,
fc00::/7), link-local (the metadata address 169.254.169.254 among them),
CGNAT, multicast, "this network", and the translation prefixes that smuggle
an IPv4 address (NAT64, 6to4); an IPv4-mapped IPv6 address is judged as
the IPv4 address it maps.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)
LOOPBACK_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128"))


def address_allowed(address: IPAddress, *, production: bool) -> bool:
    """Whether the platform may connect to this address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in n for n in LOOPBACK_NETWORKS):
        return not production
    return not any(address in n for n in FORBIDDEN_NETWORKS)


def is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")
