"""The node a command works on (Target: --node, --netns and the knobs of Options) and the defaults
of its flags, without typer: the converged check of apply (quick.py) builds them before the
command line's machinery is loaded, and options.py declares the flags that fill them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from kindplan.core.model import Options

DEFAULT_STATE_DIR = Path("/var/lib/kindplan")
LOCK_TIMEOUT_SECONDS = 30.0


def split(values: Iterable[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated values of one flag, as one tuple."""
    return tuple(part.strip() for v in values or () for part in v.split(",") if part.strip())


def netns_conf_dir(netns: str) -> str:
    """Where the conflist of network namespace `netns` lives unless --conf-dir says otherwise."""
    return f"/etc/netns/{netns}/cni/net.d"


class Target(NamedTuple):
    """The node plan and apply work on, and how: --node, --netns and the knobs of Options."""

    node: str | None
    netns: str | None
    conf_dir: str | None
    uplink: str | None
    mtu: int | None
    route_proto: int
    adopt: bool
    cni_cache_dir: str | None
    masq_backend: str | None = None
    no_masquerade: tuple[str, ...] = ()
    cross_subnet: str | None = None
    route_style: str | None = None

    def options(self) -> Options:
        """The Options these flags mean on this machine, with their defaults filled in."""
        import socket

        from kindplan.core.model import Options
        from kindplan.node.cnicache import DEFAULT_CACHE_DIR

        cni_cache_dir, conf_dir = self.cni_cache_dir, self.conf_dir
        # The host's libcni cache describes the host's pods: not a --netns target's.
        if cni_cache_dir is None and self.netns is None and DEFAULT_CACHE_DIR.is_dir():
            cni_cache_dir = str(DEFAULT_CACHE_DIR)
        if conf_dir is None and self.netns is not None:
            # Never the host's /etc/cni/net.d for a namespace: iproute2's convention, which
            # `ip netns exec NAME` shows as /etc/cni/net.d.
            conf_dir = netns_conf_dir(self.netns)
        return Options(
            self.node or socket.gethostname(),
            conf_dir,
            self.uplink,
            self.mtu,
            self.route_proto,
            self.adopt,
            cni_cache_dir,
            self.masq_backend,
            self.no_masquerade,
            self.cross_subnet,
            self.route_style,
        )
