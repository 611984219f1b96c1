"""The only code that runs iptables: save, restore, and which backend (legacy or nft) a node uses.

What the payloads say and what a save means is the iptables dialect's (core/masq/iptables.py):
kindplan never flushes or edits a chain it does not own, and this module only runs the tools.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kindplan.core.masq.iptables import parse_nat
from kindplan.core.masq.value import MasqObserved
from kindplan.errors import RuntimeFailure
from kindplan.node.netlink import Netlink, open_socket
from kindplan.node.netlink_codec import HEADER, attrs

if TYPE_CHECKING:
    from kindplan.node.nftables import Nftables
    from kindplan.node.ports import IptablesPort

LOCK_WAIT_SECONDS = 5  # --wait for the xtables lock, as kube-proxy does
_TOOLS = {4: "iptables", 6: "ip6tables"}


@dataclass(frozen=True)
class Iptables:
    """Runs iptables-save/-restore of one backend in the current network namespace."""

    backend: str  # "nft", "legacy", or "" for the system's default iptables
    present: bool = True  # False: the node has no iptables tools at all (nftables only)
    # The same namespace through nft (None: no nft), carried here so that every caller that
    # reaches iptables reaches the other masquerade backend too.
    nft: Nftables | None = field(default=None, compare=False)

    @property
    def nftables(self) -> Nftables | None:
        return self.nft

    def _tool(self, version: int, verb: str) -> str:
        base = _TOOLS[version]
        return f"{base}-{self.backend}-{verb}" if self.backend else f"{base}-{verb}"

    def save_nat(self, version: int) -> str:
        return _run([self._tool(version, "save"), "-t", "nat"], None)

    def restore(self, version: int, payload: str) -> None:
        _run(
            [self._tool(version, "restore"), "--noflush", "--wait", str(LOCK_WAIT_SECONDS)], payload
        )

    def nat_families(self) -> frozenset[int]:
        # Asked of the kernel, not of iptables-save: a save is some 5 ms of a watch round.
        if self.backend == "legacy":
            return frozenset(v for v in (4, 6) if _legacy_nat(v))
        if self.backend == "nft":
            return _nft_nat()
        return frozenset((4, 6))

    def drop_empty_nat(self, version: int) -> bool:
        # iptables-legacy's tables are the kernel's own (a module's), never anyone's to drop.
        from kindplan.node.nattable import drop_empty_nat  # a rollback's only: not at start

        return self.backend == "nft" and drop_empty_nat(version)

    def others(self) -> tuple[str, ...]:
        """The other variant, if this node has its tools ("": the system's own, no variants)."""
        if not self.backend:
            return ()
        return tuple(
            b for b in ("legacy", "nft") if b != self.backend and shutil.which(f"iptables-{b}-save")
        )

    def for_backend(self, backend: str) -> Iptables:
        return self if backend == self.backend else Iptables(backend, nft=self.nft)


def read_masq(iptables: IptablesPort) -> tuple[MasqObserved, ...]:
    """kindplan's chain and jumps, both families, in the backend in use and in the other one;
    then what nftables holds (kindplan's tables, kindnet's), through nft if the node has it.

    Both hook netfilter at once: a chain left in the backend a node switched away from still
    masquerades (or fails to), and a family the cluster lost keeps its chain until removed.
    """
    found: list[MasqObserved] = []
    if not iptables.present:  # an nftables-only host: no iptables to hold a chain
        return _nft_masq(iptables)
    for tool in (iptables, *map(iptables.for_backend, iptables.others())):
        # A family without a nat table in a backend has no chain there: no save run.
        has_nat = tool.nat_families()
        for version in (4, 6):
            if version in has_nat:
                found.append(parse_nat(version, tool.save_nat(version), tool.backend))
            else:
                found.append(MasqObserved(version, None, variant=tool.backend))
    return (*found, *_nft_masq(iptables))


def _nft_masq(iptables: IptablesPort) -> tuple[MasqObserved, ...]:
    """What the node's nftables holds of kindplan's masquerade (and kindnet's), if it has nft."""
    nft = iptables.nftables
    return () if nft is None else nft.read_masq()


def iptables_present() -> bool:
    """Does the node have iptables tools of any kind?"""
    return any(shutil.which(f"iptables{variant}-save") for variant in ("", "-nft", "-legacy"))


def _legacy_nat(version: int) -> bool:
    """Does the legacy nat table of this family exist in the thread's network namespace? (no
    iptables-legacy-save run: that one loads the table, a module for each family)"""
    names = "ip_tables_names" if version == 4 else "ip6_tables_names"
    try:
        return "nat" in Path(f"/proc/thread-self/net/{names}").read_text().split()
    except OSError:
        return False


# nf_tables over netlink (linux/netfilter/nfnetlink.h, nf_tables.h): a dump of the tables
_NETLINK_NETFILTER, _GETTABLE = 12, 10 << 8 | 1  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE
_NFGENMSG = struct.Struct("=BBH")  # struct nfgenmsg: family, version, res_id (big-endian)
_NFTA_TABLE_NAME = 1
_NFPROTO = {2: 4, 10: 6}  # NFPROTO_IPV4, NFPROTO_IPV6
_BOTH = frozenset((4, 6))


def _nft_nat() -> frozenset[int]:
    """The families with an nf_tables table "nat" (iptables-nft's) in the thread's network
    namespace, asked over netlink; both, to be safe, if the kernel cannot be asked."""
    try:
        sock = open_socket(_NETLINK_NETFILTER)
    except OSError:
        return _BOTH
    with sock:
        try:
            tables = Netlink(sock, timeout=5).dump(
                _GETTABLE, _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
            )
        except OSError:
            return _BOTH
    return _nat_families(tables)


def _nat_families(tables: list[tuple[int, bytes]]) -> frozenset[int]:
    """The families of the tables named "nat" among the answers of an NFT_MSG_GETTABLE dump
    (both if one is too short to say)."""
    found: set[int] = set()
    for _, message in tables:
        if len(message) < HEADER.size + _NFGENMSG.size:
            return _BOTH
        at = HEADER.size + _NFGENMSG.size
        names = (p for kind, p in attrs(message, at) if kind == _NFTA_TABLE_NAME)
        if next(names, b"").rstrip(b"\0") == b"nat":
            found.add(_NFPROTO.get(message[HEADER.size], 0))
    return frozenset(found)


def detect_backend() -> str:
    """legacy or nft: where the node's existing rules live (as kube-proxy's iptables-wrapper does).

    Rules in legacy tables mean something (kubelet, kube-proxy, docker) uses legacy: follow it.
    Otherwise nft, the default of current distributions. A missing variant is never chosen.
    """
    have = {b for b in ("legacy", "nft") if shutil.which(f"iptables-{b}-save")}
    if not have:
        return ""
    if have == {"legacy"}:
        return "legacy"
    if "legacy" in have and _rule_count("iptables-legacy-save") > _rule_count("iptables-nft-save"):
        return "legacy"
    return "nft"


def _rule_count(tool: str) -> int:
    try:
        saved = _run([tool], None)
    except RuntimeFailure:
        return 0
    return sum(1 for line in saved.splitlines() if line.startswith("-A "))


def _run(cmd: list[str], stdin: str | None) -> str:
    try:
        # A process group of its own: a Ctrl-C meant for the reconcile loop (which finishes its
        # round) must not kill an iptables-restore half way.
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=False, process_group=0
        )
    except OSError as e:
        raise RuntimeFailure(f"{cmd[0]}: cannot run: {e.strerror}") from e
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()
        raise RuntimeFailure(
            f"{' '.join(cmd[:2])} exited {proc.returncode}: {detail[-1] if detail else ''}"
        )
    return proc.stdout
