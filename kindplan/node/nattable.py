"""The nf_tables table "nat" that iptables-nft makes to hold kindplan's chain, when there was
none: a rollback that removes the chain drops the table too, only if it holds nothing but the
empty base chains iptables-nft made (PREROUTING, INPUT, OUTPUT, POSTROUTING).

The kernel decides, in one transaction: each base chain is deleted non-recursively (NLM_F_NONREC:
refused while it holds a rule), then the table (refused while it holds another chain, a set,
anything). One refusal aborts the whole: a table someone has put anything into since is never
touched, and there is no window between a look and the deletion.
"""

from __future__ import annotations

import socket
import struct

from kindplan.node.netlink import Netlink, open_socket
from kindplan.node.netlink_codec import HEADER, attr, attrs

_NETLINK_NETFILTER, _NFNL_SUBSYS_NFTABLES = 12, 10
_GETCHAIN, _DELCHAIN, _DELTABLE = (10 << 8 | m for m in (4, 5, 2))  # NFT_MSG_*
_NLM_F_NONREC = 0x100  # delete only if empty
_NFTA_TABLE_NAME, _NFTA_CHAIN_TABLE, _NFTA_CHAIN_NAME, _NFTA_CHAIN_HOOK = 1, 1, 3, 4
_NFGENMSG = struct.Struct("=BBH")  # struct nfgenmsg: family, version, res_id (big-endian)
_NFPROTO = {4: 2, 6: 10}  # NFPROTO_IPV4, NFPROTO_IPV6
_NAT = b"nat\0"
# The base chains iptables-nft makes in a nat table: nothing else is ever deleted here.
_BASE_CHAINS = {b"PREROUTING", b"INPUT", b"OUTPUT", b"POSTROUTING"}


def drop_empty_nat(version: int) -> bool:
    """Drop the nf_tables nat table of IPv`version` in the thread's network namespace if it
    holds nothing but empty base chains: whether it went (False: it held anything else, or
    was gone, or the kernel could not be asked; it is left as it is)."""
    try:
        sock = open_socket(_NETLINK_NETFILTER)
    except OSError:
        return False
    family = _NFPROTO[version]
    header = _NFGENMSG.pack(family, 0, 0)
    with sock:
        link = Netlink(sock, timeout=5)
        try:
            dumped = link.dump(_GETCHAIN, header + attr(_NFTA_CHAIN_TABLE, _NAT))
            chains = [name for _, m in dumped if (name := _base_chain(m, family)) is not None]
            batch = _NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(_NFNL_SUBSYS_NFTABLES))
            requests = [
                (
                    _DELCHAIN,
                    _NLM_F_NONREC,
                    header + attr(_NFTA_CHAIN_TABLE, _NAT) + attr(_NFTA_CHAIN_NAME, name + b"\0"),
                )
                for name in chains
            ]
            requests.append((_DELTABLE, _NLM_F_NONREC, header + attr(_NFTA_TABLE_NAME, _NAT)))
            results = link.transaction(batch, requests, batch)
        except OSError:
            return False
    return not any(results)


def _base_chain(message: bytes, family: int) -> bytes | None:
    """The name of a base chain of iptables-nft's in the table nat of `family` (None: another)."""
    if len(message) < HEADER.size + _NFGENMSG.size or message[HEADER.size] != family:
        return None
    found = dict(attrs(message, HEADER.size + _NFGENMSG.size))
    name = found.get(_NFTA_CHAIN_NAME, b"").rstrip(b"\0")
    table = found.get(_NFTA_CHAIN_TABLE, b"").rstrip(b"\0")
    if table != b"nat" or name not in _BASE_CHAINS or _NFTA_CHAIN_HOOK not in found:
        return None
    return name
