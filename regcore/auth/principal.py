"""Who is asking: the result of authentication, handed to the authorizer and the audit trail.

A :class:`Principal` is a user (htpasswd), a robot (``robot$NAME``), or anonymous, plus the
client address as seen after the trusted-proxy rule (:func:`client_address`). With token
authentication it also carries the token's granted ``access`` claims; handlers never look at
headers again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from regcore.auth.scopes import Access

__all__ = [
    "ANONYMOUS",
    "ROBOT_PREFIX",
    "Network",
    "Principal",
    "PrincipalKind",
    "client_address",
    "parse_networks",
]

PrincipalKind = Literal["user", "robot", "anonymous"]
ROBOT_PREFIX = "robot$"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Principal:
    """``kind`` and ``name`` (``""`` for anonymous; a robot's name without the prefix);
    ``access``: the token's granted access when the request carried a verified token (None
    for password or anonymous requests); ``own_token``: that token came from this origin's own
    token service (so the roles that produced it are known here)."""

    kind: PrincipalKind
    name: str
    address: str
    access: tuple[Access, ...] | None = None
    own_token: bool = False

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    @property
    def login(self) -> str:
        """The name as the client typed it (``robot$ci`` for robots), ``""`` if anonymous."""
        return ROBOT_PREFIX + self.name if self.kind == "robot" else self.name

    @property
    def actor(self) -> str:
        """For logs and the audit trail: ``user:alice``, ``robot:ci`` or ``anonymous``."""
        return "anonymous" if self.anonymous else f"{self.kind}:{self.name}"

    @classmethod
    def from_login(cls, login: str, address: str, **kw: object) -> Principal:
        """The principal a login name stands for (``robot$x`` → robot ``x``; empty →
        anonymous)."""
        if not login:
            return cls("anonymous", "", address, **kw)  # type: ignore[arg-type]
        if login.startswith(ROBOT_PREFIX):
            return cls("robot", login[len(ROBOT_PREFIX) :], address, **kw)  # type: ignore[arg-type]
        return cls("user", login, address, **kw)  # type: ignore[arg-type]


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses. Raises ValueError naming the bad entry."""
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return tuple(out)


def in_networks(address: str, networks: Sequence[Network]) -> bool:
    """Whether ``address`` lies in any of ``networks`` (False for a malformed address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries left of an untrusted
    hop could be forged by the client). Malformed entries end the walk at the last good one."""
    address = peer or ""
    if not trusted or not in_networks(address, trusted):
        return address
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        address = hop
        if not in_networks(hop, trusted):
            break
    return address


ANONYMOUS = Principal("anonymous", "", "")
