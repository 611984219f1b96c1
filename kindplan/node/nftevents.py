"""Has anyone touched one nf_tables table since we last looked? Told by the kernel's own
events, so that another component's commits cost kindplan nothing.

Every committed nf_tables transaction moves the ruleset's generation, whoever made it; on a node
where kube-proxy (nftables mode) commits every sync, a reading kept by generation alone is
thrown away all the time, and a big table is listed again (seconds). The kernel also announces
each committed object to the multicast group NFNLGRP_NFTABLES: one message per table, chain,
rule, set, element or object made or deleted, each naming its table (attribute 1 of every such
message: NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE) with its family in the nfgenmsg
header, then NFT_MSG_NEWGEN. A socket subscribed before a table is read hears of every later
change of it; the kernel keeps no per-table counter (NFTA_TABLE_USE counts chains, handles do
not move with elements), so listening is the only way to tell whose commit it was.

Which generation a reading stands for: GETGEN can answer a generation whose commit is still
sending its messages (the kernel moves it first), so "nothing named the table" is believed only
once the NEWGEN message of the current generation was heard (the kernel sends it after all of
that commit's messages): `heard` is the last one.

Honest by construction: anything not understood counts as touched. A receive buffer that
overflowed (ENOBUFS: events were lost, e.g. a huge commit), a socket that broke, or one that
could not be opened (unprivileged) all say "touched", and the caller reads the table again.
"""

from __future__ import annotations

import errno
import socket
import struct

from kindplan.node.netlink import SOL_NETLINK, open_socket
from kindplan.node.netlink_codec import HEADER, NetlinkError, attrs, messages

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
NETLINK_ADD_MEMBERSHIP = 1
_SUBSYS = 10  # NFNL_SUBSYS_NFTABLES: the high byte of the message type
_NEWGEN = _SUBSYS << 8 | 15  # NFT_MSG_NEWGEN: a commit's last message
_AT = HEADER.size + 4  # the attributes, after struct nfgenmsg
_NFPROTO = {"inet": 1, "ip": 2, "ip6": 10}
_TABLE, _GEN_ID = 1, 1  # the table's name in every object message; NFTA_GEN_ID
_BE32 = struct.Struct(">I")


class TableEvents:
    """Listens for commits naming table `family name` (from the moment it is made)."""

    def __init__(self, family: str, name: str) -> None:
        self._family = _NFPROTO[family]
        self._name = name.encode() + b"\0"
        self._sock: socket.socket | None = None
        self.heard: int | None = None  # the generation of the last commit heard whole
        self.foreign = 0  # messages of other tables' commits passed over (tests, bench)
        try:
            sock = open_socket(NETLINK_NETFILTER)
        except OSError:
            return
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        self._sock = sock

    def touched(self) -> bool:
        """Whether anything happened to the table since the last call (or since this was made):
        every event waiting is read; True also when some may have been lost or none can be
        heard."""
        sock = self._sock
        if sock is None:
            return True
        found = False
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                return found
            except OSError as e:  # ENOBUFS: events lost, read on (what follows is news too)
                if e.errno != errno.ENOBUFS:
                    self.close()
                    return True
                found, self.heard = True, None
                continue
            try:
                found = self._names_table(data) or found
            except NetlinkError:
                found = True

    def _names_table(self, data: bytes) -> bool:
        found = False
        for offset, length, kind, _, _ in messages(data):
            if kind >> 8 != _SUBSYS or length < _AT:
                continue
            message = data[offset : offset + length]
            named = dict(attrs(message, _AT)).get(_TABLE if kind != _NEWGEN else _GEN_ID, b"")
            if kind == _NEWGEN:
                self.heard = _BE32.unpack(named)[0] if len(named) == 4 else None
            elif message[HEADER.size] == self._family and named == self._name:
                found = True
            else:
                self.foreign += 1
        return found

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
