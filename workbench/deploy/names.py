"""Values shared across the deploy layer: the colours, deployment names, hosts and ports.

Each check raises :class:`~workbench.errors.DeployValueError` with one sentence.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from typing import TYPE_CHECKING

from workbench.errors import DeployValueError

if TYPE_CHECKING:
    from workbench._types import Color

COLORS: tuple[Color, Color] = ("blue", "green")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*$")
_DOTTED = re.compile(r"^[0-9.]+$")


def check_deployment_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name (DNS-label-like)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DeployValueError(
            f"invalid deployment name {name!r}: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return name


def check_color(color: str) -> Color:
    if color not in COLORS:
        raise DeployValueError(f"color must be one of {', '.join(COLORS)}, not {color!r}")
    return "blue" if color == "blue" else "green"


def check_port(port: int, what: str = "port") -> int:
    """Return ``port`` if it is a TCP port number (1..65535)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise DeployValueError(f"{what} must be an integer in 1..65535, not {port!r}")
    return port


def check_host(host: str, what: str = "host") -> str:
    """Return ``host`` normalised if it is an IP address or a host name."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    # all digits and dots but not an address (999.1.1.1) is a typo, not a host name
    if not isinstance(host, str) or _DOTTED.match(host) or not _HOSTNAME.match(host):
        raise DeployValueError(f"invalid {what} {host!r}: use an IP address or a host name")
    return host
