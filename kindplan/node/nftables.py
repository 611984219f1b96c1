"""The only code that runs `nft`: a transaction on stdin (`nft -f -`), a table listed as JSON
(`nft -j list table`, the masquerade's) or as text (`nft list table`, the NetworkPolicy table's:
core/policytable.py says why), and what changed since kindplan last looked, asked over netlink.

What the payloads say and what a listing means is the nftables dialect's (core/masq/nftables.py);
this module runs the tool and lists only the tables that dialect reads: kindplan's own and the
one it may take over (kindnet's). Never `list ruleset`: other components' tables are theirs.

A converged watch round spawns no process: every committed nf_tables transaction (nft's, an
iptables-nft restore, kube-proxy's) moves the ruleset's generation, which NFT_MSG_GETGEN answers
in one netlink round trip. What was read is kept with the generation it was read at and read
again only once the generation moved (read first, then listed: a commit in between moves it
past what is kept, so the next round lists again). The policy table, which can take seconds to
list, is also kept across other components' commits (kube-proxy's nftables mode commits every
sync): nftevents.py hears every commit and says whether one named kindplan's table.
"""

from __future__ import annotations

import errno
import shutil
import socket
import struct
import subprocess

from kindplan.core.masq.nftables import KINDNET, parse_table, shape
from kindplan.core.masq.value import MasqObserved
from kindplan.core.policytable import ABSENT, PolicyRead, parse_listing
from kindplan.core.policytable import FAMILY as POLICY_FAMILY
from kindplan.core.policytable import NAME as POLICY_NAME
from kindplan.errors import RuntimeFailure
from kindplan.node.netlink import Netlink, open_socket
from kindplan.node.netlink_codec import (
    F_REQUEST,
    HEADER,
    NLMSG_DONE,
    NLMSG_ERROR,
    NetlinkError,
    attrs,
    error,
    messages,
    request,
)
from kindplan.node.nftevents import TableEvents

TIMEOUT_SECONDS = 10  # for one nft process: a transaction of a few lines takes milliseconds
# The NetworkPolicy table can hold 100,000s of elements: nft takes some 2.6 s to list 100,000
# (bench/netpol.py) and writes about 1.5 MB a second; its processes get that much longer.
POLICY_LIST_SECONDS = 120
BYTES_PER_SECOND = 200_000  # a transaction's allowance: TIMEOUT_SECONDS + a second per this
# nf_tables over netlink (linux/netfilter/nfnetlink.h, nf_tables.h)
_NETLINK_NETFILTER, _SUBSYS = 12, 10 << 8  # NFNL_SUBSYS_NFTABLES
_GETTABLE, _GETGEN, _NEWGEN = _SUBSYS | 1, _SUBSYS | 16, _SUBSYS | 15
_NFGENMSG = struct.Struct("=BBH")  # struct nfgenmsg: family, version, res_id
_NFTA_TABLE_NAME, _NFTA_GEN_ID = 1, 1
_NFPROTO = {1: "inet", 2: "ip", 10: "ip6"}
_BE32 = struct.Struct(">I")
# What is read: (version, variant) of each table's value, kindplan's first.
_READ = ((4, ""), (6, ""), (4, KINDNET), (6, KINDNET))


def nft_present() -> bool:
    """Does this node have `nft`?"""
    return shutil.which("nft") is not None


class Nftables:
    """Runs nft in the current network namespace; keeps what it read with its generation."""

    def __init__(self) -> None:
        self._kept: tuple[int, tuple[MasqObserved, ...]] | None = None
        self._kept_policy: tuple[int, PolicyRead] | None = None
        self._events: TableEvents | None = None  # made at the first read of the policy table
        self.listings = 0  # `nft list` processes run (tests, bench: a converged round's 0)
        self.transactions = 0  # `nft -f -` processes run

    def run(self, payload: str) -> None:
        """`nft -f -`: all of `payload` in one transaction, or RuntimeFailure and nothing."""
        self._kept = self._kept_policy = None
        self.transactions += 1
        _run(["nft", "-f", "-"], payload, TIMEOUT_SECONDS + len(payload) // BYTES_PER_SECOND)

    def read_policy(self) -> PolicyRead:
        """kindplan's NetworkPolicy table (policytable.py), read from `nft list table`'s text
        once it may have changed; a table of another family or name is never listed.

        Kept while the generation holds; and, once it moved, while nothing named this table in
        the commits heard since (nftevents.py: another component's commits, kube-proxy's every
        sync, cost no listing) and the current generation's commit was heard whole."""
        if self._events is None:  # listening first: what is listed after it is heard of
            self._events = TableEvents(POLICY_FAMILY, POLICY_NAME)
        touched = self._events.touched()
        generation = ruleset_generation()
        kept = self._kept_policy
        if kept is not None and generation is not None:
            if kept[0] == generation and not touched:
                return kept[1]
            if not touched and self._events.heard == generation:
                read = kept[1] if kept[1].table is None else kept[1]._replace(generation=generation)
                self._kept_policy = (generation, read)
                return read
        where = (POLICY_FAMILY, POLICY_NAME)
        read = ABSENT
        if where in tables():
            read = parse_listing(self._list(*where, json=False, timeout=POLICY_LIST_SECONDS))
            read = read._replace(generation=generation)  # said only of a table that is there
        self._kept_policy = None if generation is None else (generation, read)
        return read

    def close(self) -> None:
        """The event socket closed (the handles dropped: a later read lists again)."""
        if self._events is not None:
            self._events.close()
            self._events = None
        self._kept_policy = None

    def policy_generation(self) -> PolicyRead:
        """The generation alone, standing for the policy table as read at it (a converged
        record's digest: no nft process; none when there is no table, as read_policy's); the
        table read as read_policy reads it when the kernel cannot be asked."""
        generation = ruleset_generation()  # first: a commit after it moves it past the record's
        if generation is None:
            return self.read_policy()
        if (POLICY_FAMILY, POLICY_NAME) not in tables():
            return ABSENT  # as read_policy says of no table: no generation, nothing listed
        return ABSENT._replace(generation=generation)

    def read_masq(self) -> tuple[MasqObserved, ...]:
        """kindplan's tables and kindnet's, as values (both families each; absent: None)."""
        generation = ruleset_generation()
        if self._kept is not None and generation is not None and self._kept[0] == generation:
            return self._kept[1]
        present = tables()
        listed: dict[tuple[str, str], str | None] = {}
        found = []
        for version, variant in _READ:
            where = shape(version, variant)
            key = (where.family, where.table)
            if key not in listed:
                listed[key] = self._list(*key) if key in present else None
            found.append(parse_table(version, listed[key], variant))
        result = tuple(found)
        if generation is not None:
            self._kept = (generation, result)
        return result

    def _list(
        self, family: str, name: str, *, json: bool = True, timeout: float | None = None
    ) -> str | None:
        self.listings += 1
        cmd = ["nft", *(["-j"] if json else []), "list", "table", family, name]
        try:
            return _run(cmd, None, timeout)
        except RuntimeFailure as e:
            if "No such file or directory" in str(e):  # deleted since the table dump
                return None
            raise


def ruleset_generation() -> int | None:
    """The ruleset's generation (NFT_MSG_GETGEN); None if the kernel cannot be asked."""
    try:
        sock = open_socket(_NETLINK_NETFILTER)
    except OSError:
        return None
    with sock:
        sock.settimeout(5)
        try:
            sock.send(request(_GETGEN, F_REQUEST, 1, _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)))
            data = sock.recv(1 << 16)
        except OSError:
            return None
    try:
        return parse_generation(data)
    except NetlinkError:
        return None


def parse_generation(data: bytes) -> int:
    """NFTA_GEN_ID of the NFT_MSG_NEWGEN answer in `data`; NetlinkError if there is none."""
    for offset, length, kind, flags, _ in messages(data):
        if kind in (NLMSG_ERROR, NLMSG_DONE):
            failure = error(data, offset, length, kind, flags)
            raise failure if failure is not None else NetlinkError(errno.ENOMSG, "no generation")
        if kind == _NEWGEN:
            message = data[offset : offset + length]
            for attr_kind, payload in attrs(message, HEADER.size + _NFGENMSG.size):
                if attr_kind == _NFTA_GEN_ID and len(payload) == 4:
                    return int(_BE32.unpack(payload)[0])
    raise NetlinkError(errno.ENOMSG, "no generation in the answer")


def tables() -> frozenset[tuple[str, str]]:
    """(family, name) of every nf_tables table in the namespace, over netlink (no process)."""
    try:
        sock = open_socket(_NETLINK_NETFILTER)
    except OSError as e:
        raise RuntimeFailure(f"nf_tables: cannot open a netlink socket: {e.strerror}") from e
    with sock:
        try:
            dumped = Netlink(sock, timeout=5).dump(
                _GETTABLE, _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
            )
        except OSError as e:
            raise RuntimeFailure(f"nf_tables: cannot list the tables: {e.strerror or e}") from e
    return parse_tables(dumped)


def parse_tables(dumped: list[tuple[int, bytes]]) -> frozenset[tuple[str, str]]:
    """(family, name) of the tables in the answers of an NFT_MSG_GETTABLE dump."""
    found = set()
    at = HEADER.size + _NFGENMSG.size
    for _, message in dumped:
        if len(message) < at:
            continue
        family = _NFPROTO.get(message[HEADER.size], "")
        for kind, payload in attrs(message, at):
            if kind == _NFTA_TABLE_NAME:
                found.add((family, payload.rstrip(b"\0").decode("utf-8", "replace")))
    return frozenset(found)


def _run(cmd: list[str], stdin: str | None, timeout: float | None = None) -> str:
    timeout = TIMEOUT_SECONDS if timeout is None else timeout
    try:
        # A process group of its own, as iptables-restore's: a Ctrl-C meant for the loop must
        # not kill nft half way (a transaction is atomic, but its caller's record is not).
        proc = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            process_group=0,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeFailure(f"{' '.join(cmd[:2])}: no answer in {timeout} s") from e
    except OSError as e:
        raise RuntimeFailure(f"{cmd[0]}: cannot run: {e.strerror}") from e
    if proc.returncode != 0:
        raise RuntimeFailure(f"{' '.join(cmd[:2])} exited {proc.returncode}: {_error(proc.stderr)}")
    return proc.stdout


def _error(stderr: str) -> str:
    """nft's first error as one line: `/dev/stdin:2:26-32: Error: ...` -> `line 2: Error: ...`
    (nft goes on with the offending line and a caret line under it, which say no more)."""
    lines = stderr.strip().splitlines()
    for line in lines:
        where, found, what = line.partition("Error:")
        if found:
            parts = where.strip(": ").split(":")
            at = f"line {parts[1]}: " if len(parts) > 1 and parts[1].isdigit() else ""
            return f"{at}Error:{what}"
    return lines[-1] if lines else ""
