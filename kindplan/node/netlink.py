"""rtnetlink on a plain socket: every netlink path kindplan uses (links, addresses, routes).

Writing 5,000 routes through pyroute2 (0.9.7, IPRoute().route per route) took about 2.6 s here,
some 0.5 ms of Python per route, and dumping them about 0.4 s; here a route is one struct.pack or
unpack. Dumps ask the kernel to
filter by table (strict checking); writes go out in batches of messages over one socket, each with
its own sequence number and acknowledgement, so every error still maps to its route.

Hazards this module guards against:
- The kernel queues each acknowledgement in the socket's receive buffer and drops it (the next
  recv fails with ENOBUFS) when the buffer is full: on a stock node (net.core.rmem_max 212992)
  the buffer holds 512 of them. Batches are sized to the buffer the kernel granted; an overrun
  anyway is drained and reported per write as "no acknowledgement" (maybe applied), never raised.
- A dump that a concurrent change interrupts (NLM_F_DUMP_INTR) may miss or repeat entries: it is
  done again, a bounded number of times. An error in NLMSG_DONE fails the dump.
- A message shorter than its header, or longer than what was read, is an error, not a loop; an
  acknowledgement counts only for the sequence number it carries (a stale one is ignored); a
  socket that does not answer in TIMEOUT seconds fails with ETIMEDOUT.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import operator
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, NamedTuple, Protocol

from kindplan.core.addresses import IPAddress, IPNetwork
from kindplan.core.model import Link
from kindplan.core.routes import NextHop, Route, RouteSpecial

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors carry only the header of the refused message, not all of it
NETLINK_EXT_ACK = 11  # errors carry the kernel's reason as text (NLMSGERR_ATTR_MSG)
NETLINK_GET_STRICT_CHK = 12  # lets the kernel filter dumps (here: by table)
SO_RCVBUFFORCE = 33  # SO_RCVBUF past net.core.rmem_max, with CAP_NET_ADMIN

NLMSG_ERROR, NLMSG_DONE, NLMSG_MIN_TYPE = 2, 3, 16  # types below 16 are control messages
F_MULTI, F_DUMP_INTR, F_CAPPED, F_ACK_TLVS = 0x2, 0x10, 0x100, 0x200
NLMSGERR_ATTR_MSG = 1
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
F_REQUEST, F_ACK, F_DUMP = 0x1, 0x4, 0x300
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTA_MULTIPATH, RTA_CACHEINFO, RTA_VIA, RTA_NH_ID = 9, 12, 18, 30
IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 4, 18, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2  # on a point-to-point address IFA_ADDRESS is the peer
RTN_UNICAST = 1
# The route types of the main table that decide where traffic to a destination goes (local,
# broadcast and the like live in the local table).
RTN_KINDS = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
RTN_NUMBERS = {name: number for number, name in RTN_KINDS.items()}
IFF_UP = 0x1
SCOPES = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
SCOPE_NUMBERS = {name: number for number, name in SCOPES.items()}

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}

RCVBUF = 1 << 22  # asked for; the kernel doubles it (its bookkeeping) and may grant less
# An acknowledgement's share of the receive buffer: 832 bytes each (512 fill 425,984 bytes,
# kernel 6.18), more for an error with its text; counted at 2,048 to keep well clear.
ACK_COST = 2048
BATCH_MAX = 1000  # messages per send when the buffer allows: few system calls
TIMEOUT = 10.0  # seconds the kernel may take to answer (10,000 acks take ~0.1 s)
DUMP_ATTEMPTS = 5  # dumps interrupted by a concurrent change in a row before giving up


class RouteWrite(NamedTuple):
    """One route write (a named tuple: 10,000 of them are made per full apply, and a frozen
    dataclass costs several times more to construct)."""

    verb: str  # "add" (fails if the key exists), "replace", "del"
    route: Route
    ifindex: int  # the route's interface (0 for a delete, which matches by key)
    nexthop_indexes: tuple[int, ...] = ()  # the interface of each of the route's nexthops


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTA.size + len(payload)
    return _RTA.pack(length, kind) + payload + b"\0" * (-length % 4)


def _attrs(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    end = len(data)
    while offset + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        yield kind & 0x3FFF, data[offset + _RTA.size : offset + length]
        offset += (length + 3) & ~3


class NetlinkError(OSError):
    """The kernel refused a request (errno kept, with its reason when it gave one), or the socket
    failed. `maybe_applied`: a write that was sent but never acknowledged, which the kernel may
    or may not have carried out."""

    def __init__(self, code: int, detail: str = "", *, maybe_applied: bool = False) -> None:
        super().__init__(code, os.strerror(code))
        self.detail = detail
        self.maybe_applied = maybe_applied

    def __str__(self) -> str:
        return f"{self.strerror} ({self.detail})" if self.detail else str(self.strerror)


class Socket(Protocol):
    """What Netlink needs of its socket (a test passes a fake that replays recorded bytes)."""

    def send(self, data: bytes, /) -> int: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def getsockopt(self, level: int, option: int, /) -> int: ...
    def close(self) -> None: ...


def open_socket() -> socket.socket:
    """An rtnetlink socket with a receive buffer as large as the kernel grants, extended acks
    and strict checking."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:  # no CAP_NET_ADMIN: at most net.core.rmem_max (doubled)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        with contextlib.suppress(OSError):  # before Linux 4.12 errors come without a reason
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def _error(data: bytes, offset: int, length: int, kind: int, flags: int) -> NetlinkError | None:
    """The error an NLMSG_ERROR or NLMSG_DONE message at `offset` carries (None: an ack, or
    the end of a dump that went well), with the kernel's text when it sent one."""
    if length < _NLMSG.size + 4:
        return None
    code = -_I32.unpack_from(data, offset + _NLMSG.size)[0]
    if code <= 0:
        return None
    detail = ""
    if flags & F_ACK_TLVS:
        at = _NLMSG.size + 4
        if kind == NLMSG_ERROR and length >= at + _NLMSG.size:
            # after the error, the refused message (only its header, if capped), then the TLVs
            at += _NLMSG.size if flags & F_CAPPED else _U32.unpack_from(data, offset + at)[0]
        for attr, payload in _attrs(data[offset : offset + length], (at + 3) & ~3):
            if attr == NLMSGERR_ATTR_MSG:
                detail = payload.rstrip(b"\0").decode(errors="replace")
    return NetlinkError(code, detail)


def _malformed(data: bytes, offset: int, length: int) -> NetlinkError:
    return NetlinkError(
        errno.EBADMSG,
        f"malformed netlink answer: a message of {length} bytes at byte {offset} of {len(data)}",
    )


class Netlink:
    """One rtnetlink socket in the current network namespace."""

    def __init__(self, sock: Socket | None = None, timeout: float = TIMEOUT) -> None:
        self._sock: Socket = sock if sock is not None else open_socket()
        self._timeout = timeout
        self._sock.settimeout(timeout)
        # Acknowledgements of one batch must all fit the receive buffer the kernel granted.
        granted = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.batch = max(1, min(BATCH_MAX, granted // ACK_COST))
        self._seq = 0
        # A converged node answers every dump with the same messages: each one's Route is
        # remembered by its bytes (for the link names it was parsed with) until a dump lacks it.
        self._parsed: dict[bytes, Route | None] = {}
        self._parsed_names: dict[int, str] = {}
        self._layouts: dict[int, Layout] = {}  # of route messages, by length

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _message(self, kind: int, flags: int, body: bytes) -> tuple[int, bytes]:
        seq = self._next_seq()
        return seq, _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(1 << 20)
        except TimeoutError:
            raise NetlinkError(
                errno.ETIMEDOUT, f"the kernel did not answer in {self._timeout:g} s"
            ) from None
        except OSError as e:  # ENOBUFS: the kernel dropped a message on a full receive buffer
            code = e.errno or errno.EIO
            detail = "the receive buffer overran" if code == errno.ENOBUFS else "netlink recv"
            raise NetlinkError(code, detail) from e

    def _drain(self) -> Iterator[bytes]:
        """What is queued on the socket now, without waiting for more."""
        self._sock.settimeout(0)
        try:
            while True:
                try:
                    yield self._sock.recv(1 << 20)
                except BlockingIOError:
                    return
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
        finally:
            self._sock.settimeout(self._timeout)

    # -- dumps ---------------------------------------------------------------------------------

    def _dump(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
        """(message type, whole message) of every answer to one dump request, from a dump that
        no concurrent change interrupted."""
        for _ in range(DUMP_ATTEMPTS):
            answers = self._dump_once(kind, body)
            if answers is not None:
                return answers
        raise NetlinkError(
            errno.EINTR, f"the dump was interrupted by concurrent changes {DUMP_ATTEMPTS} times"
        )

    def _dump_once(self, kind: int, body: bytes) -> list[tuple[int, bytes]] | None:
        """The answers of one dump; None if it was interrupted (read to its end all the same,
        so that none of its messages is left for the next request)."""
        seq, request = self._message(kind, F_REQUEST | F_DUMP, body)
        self._sock.send(request)
        answers: list[tuple[int, bytes]] = []
        append, header, size = answers.append, _NLMSG.unpack_from, _NLMSG.size  # the hot loop's
        interrupted_flag = F_DUMP_INTR
        interrupted = False
        while True:
            try:
                data = self._recv()
            except NetlinkError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                interrupted = True  # something was dropped: the dump may lack it
                continue
            offset, end = 0, len(data)
            while offset + size <= end:
                length, kind_, flags, got_seq, _ = header(data, offset)
                if not size <= length <= end - offset:
                    raise _malformed(data, offset, length)
                if got_seq == seq:
                    if kind_ >= NLMSG_MIN_TYPE:  # not a control message
                        append((kind_, data[offset : offset + length]))
                    elif kind_ in (NLMSG_DONE, NLMSG_ERROR):
                        error = _error(data, offset, length, kind_, flags)
                        if error is not None:
                            raise error
                        if kind_ == NLMSG_DONE:
                            return None if interrupted else answers
                    if flags & interrupted_flag:
                        interrupted = True
                offset += (length + 3) & ~3
            if offset < end:
                raise _malformed(data, offset, end - offset)

    def links(self) -> list[tuple[int, str, int, bool, str]]:
        """(index, name, mtu, up, kind) of every link; kind "veth", "bridge"..., "" for none."""
        found = []
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for kind, message in self._dump(RTM_GETLINK, body):
            if kind != RTM_NEWLINK:
                continue
            _, _, index, flags, _ = _IFINFO.unpack_from(message, _NLMSG.size)
            attrs = dict(_attrs(message, _NLMSG.size + _IFINFO.size))
            name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
            mtu = _U32.unpack(attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
            info = dict(_attrs(attrs.get(IFLA_LINKINFO, b""), 0))
            link_kind = info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode(errors="replace")
            found.append((index, name, mtu, bool(flags & IFF_UP), link_kind))
        return found

    def addresses(self) -> list[tuple[int, IPAddress, int]]:
        """(link index, address, prefix length) of every address."""
        found: list[tuple[int, IPAddress, int]] = []
        body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for kind, message in self._dump(RTM_GETADDR, body):
            if kind != RTM_NEWADDR:
                continue
            _, prefixlen, _, _, index = _IFADDR.unpack_from(message, _NLMSG.size)
            attrs = dict(_attrs(message, _NLMSG.size + _IFADDR.size))
            raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))  # IPv6 has IFA_ADDRESS only
            if raw is not None:
                found.append((index, _address(raw), prefixlen))
        return found

    def read_links(self) -> tuple[Link, ...]:
        addresses: dict[int, list[tuple[IPAddress, int]]] = {}
        for index, address, prefixlen in self.addresses():
            addresses.setdefault(index, []).append((address, prefixlen))
        links = [
            Link(
                name,
                index,
                mtu,
                up,
                tuple(
                    sorted(addresses.get(index, []), key=lambda a: (a[0].version, int(a[0]), a[1]))
                ),
                kind,
            )
            for index, name, mtu, up, kind in self.links()
        ]
        return tuple(sorted(links, key=lambda link: link.name))

    def routes(self, table: int, names: dict[int, str]) -> list[Route]:
        """Unicast routes of `table`, both families; the kernel filters by table."""
        found = []
        if names != self._parsed_names:
            self._parsed, self._parsed_names = {}, dict(names)
        known, parsed, layouts = self._parsed, {}, self._layouts
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _RTMSG.pack(family, 0, 0, 0, table & 0xFF, 0, 0, 0, 0)
            body += _attr(RTA_TABLE, _U32.pack(table))
            for kind, message in self._dump(RTM_GETROUTE, body):
                content = route_content(message)
                if content in known:
                    route = known[content]
                else:
                    route = _parse_route(kind, message, table, names, layouts)
                parsed[content] = route
                if route is not None:
                    found.append(route)
        self._parsed = parsed
        return found

    def route_digest(self, table: int) -> bytes:
        """A digest of the table's routes as the kernel dumps them (no parse; the converged fast
        path: equal bytes parse to equal routes for equal link names)."""
        h = hashlib.sha256()
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _RTMSG.pack(family, 0, 0, 0, table & 0xFF, 0, 0, 0, 0)
            body += _attr(RTA_TABLE, _U32.pack(table))
            for _, message in self._dump(RTM_GETROUTE, body):
                h.update(route_content(message))
        return h.digest()

    # -- writes --------------------------------------------------------------------------------

    def write_routes(self, writes: Sequence[RouteWrite]) -> list[NetlinkError | None]:
        """Send every write, in order and in batches; the error of each (None: done)."""
        results: list[NetlinkError | None] = [None] * len(writes)
        start = 0
        while start < len(writes):
            chunk = writes[start : start + self.batch]
            first = self._seq + 1
            self._seq += len(chunk)
            payload = b"".join([_route_message(w, seq) for seq, w in enumerate(chunk, first)])
            if not self._request(payload, first, results, start, len(chunk)):
                return results  # the socket failed: the rest was not sent
            start += len(chunk)
        return results

    def write_address(self, verb: str, index: int, address: IPAddress, prefixlen: int) -> None:
        """Add ("add": fails if it exists) or delete ("del") an address on link `index`."""
        packed = address.packed
        kind, flags = (RTM_NEWADDR, F_CREATE | F_EXCL) if verb == "add" else (RTM_DELADDR, 0)
        family = _FAMILY[address.version]
        body = _IFADDR.pack(family, prefixlen, 0, 0, index)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)  # as ip(8) sends it
        seq, message = self._message(kind, F_REQUEST | F_ACK | flags, body)
        results: list[NetlinkError | None] = [None]
        self._request(message, seq, results, 0, 1)
        if results[0] is not None:
            raise results[0]

    def _request(
        self, payload: bytes, first: int, results: list[NetlinkError | None], at: int, count: int
    ) -> bool:
        """Send `count` requests (sequence numbers from `first`) and put the error of each in
        `results` from `at`. False if the socket failed: what was not acknowledged then, and
        every later write, has an error saying so."""
        try:
            self._sock.send(payload)
        except OSError as e:
            self._fail(results, at, e.errno or errno.EIO, f"not sent: {e.strerror or e}", False)
            return False
        try:
            overrun = self._acks(first, count, results, at)
        except OSError as e:
            unanswered = [i for i in range(at, at + count) if results[i] is _PENDING]
            reason = f"no acknowledgement: {e}"
            for i in unanswered:
                results[i] = NetlinkError(e.errno or errno.EIO, reason, maybe_applied=True)
            self._fail(results, at + count, e.errno or errno.EIO, f"not sent: {e}", False)
            return False
        if overrun:  # the kernel grants less than it says, or others share the buffer
            self.batch = max(1, self.batch // 2)
        return True

    @staticmethod
    def _fail(
        results: list[NetlinkError | None], start: int, code: int, reason: str, maybe: bool
    ) -> None:
        error = NetlinkError(code, reason, maybe_applied=maybe)
        for i in range(start, len(results)):
            if results[i] is None or results[i] is _PENDING:
                results[i] = error

    def _acks(self, first: int, count: int, results: list[NetlinkError | None], at: int) -> bool:
        """Read the acknowledgement of each of `count` requests (sequence numbers from `first`)
        into `results` from `at`. True if the receive buffer overran: the acknowledgements it
        dropped are marked as missing (the write may or may not have happened)."""
        results[at : at + count] = [_PENDING] * count
        waiting = count
        overrun = False
        header, size, code_at, pending = _NLMSG.unpack_from, _NLMSG.size, _I32.unpack_from, _PENDING
        while waiting:
            if overrun:
                chunks = list(self._drain())  # everything the kernel will send is queued now
            else:
                try:
                    chunks = [self._recv()]
                except NetlinkError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    overrun = True
                    continue
            for data in chunks:
                offset, end = 0, len(data)
                while offset + size <= end:
                    length, kind, flags, seq, _ = header(data, offset)
                    if not size <= length <= end - offset:
                        raise _malformed(data, offset, length)
                    k = seq - first
                    if kind == NLMSG_ERROR and 0 <= k < count and results[at + k] is pending:
                        if length < size + 4:  # no room for the error code
                            raise _malformed(data, offset, length)
                        ok = not code_at(data, offset + size)[0]
                        results[at + k] = None if ok else _error(data, offset, length, kind, flags)
                        waiting -= 1
                    offset += (length + 3) & ~3
                if offset < end:
                    raise _malformed(data, offset, end - offset)
            if overrun and waiting:
                for i in range(at, at + count):
                    if results[i] is _PENDING:
                        results[i] = _UNACKNOWLEDGED
                break
        return overrun


# Placeholders in a results list: a request sent and not yet acknowledged, and one whose
# acknowledgement the kernel dropped on a full receive buffer.
_PENDING = NetlinkError(errno.EINPROGRESS, "sent, waiting for its acknowledgement")
_UNACKNOWLEDGED = NetlinkError(
    errno.ENOBUFS,
    "no acknowledgement: the socket's receive buffer overran",
    maybe_applied=True,
)


def _request_struct(size: int, delete: bool, gateway: bool) -> struct.Struct:
    """A whole route request in one struct: header, rtmsg, then RTA_TABLE, RTA_DST and
    RTA_PRIORITY (and RTA_OIF, RTA_GATEWAY for a write), for addresses of `size` bytes."""
    fmt = "=IHHII" + "BBBBBBBBI" + "HHI" + f"HH{size}s" + "HHI"
    if not delete:
        fmt += "HHI" + (f"HH{size}s" if gateway else "")
    return struct.Struct(fmt)


# One pack per route instead of one per attribute: 10,000 requests are built in about half the
# time (their Python is a tenth of a full apply's writes; the kernel's work is the rest).
_REQUESTS = {
    (size, delete, gateway): _request_struct(size, delete, gateway)
    for size in (4, 16)
    for delete in (False, True)
    for gateway in (False, True)
}


def _route_message(write: RouteWrite, seq: int) -> bytes:
    """The whole netlink message for one route write, with sequence number `seq`."""
    route, verb = write.route, write.verb
    if not route.plain:
        return _general_route_message(write, seq)
    dst = route.dst.network_address.packed
    size = len(dst)
    table = route.table if route.table < 256 else 252  # RT_TABLE_COMPAT; RTA_TABLE says which
    if verb == "del":
        kind, flags = RTM_DELROUTE, F_REQUEST | F_ACK
        scope, rtype = 255, 0  # RT_SCOPE_NOWHERE and RTN_UNSPEC: match any, by key
    else:
        kind = RTM_NEWROUTE
        flags = F_REQUEST | F_ACK | F_CREATE | (F_REPLACE if verb == "replace" else F_EXCL)
        scope, rtype = SCOPE_NUMBERS[route.scope], RTN_UNICAST
    gateway = route.gateway.packed if route.gateway is not None and verb != "del" else None
    request = _REQUESTS[(size, verb == "del", gateway is not None)]
    family = socket.AF_INET if size == 4 else socket.AF_INET6
    fields = [
        *(request.size, kind, flags, seq, 0),
        *(family, route.dst.prefixlen, 0, 0, table, route.proto, scope, rtype, 0),
        *(8, RTA_TABLE, route.table, 4 + size, RTA_DST, dst, 8, RTA_PRIORITY, route.metric),
    ]
    if verb != "del":
        fields += (8, RTA_OIF, write.ifindex)
    if gateway is not None:
        fields += (4 + size, RTA_GATEWAY, gateway)
    return request.pack(*fields)


def _general_route_message(write: RouteWrite, seq: int) -> bytes:
    """The message for a route of any kind kindplan observes (a rollback restores such a route
    exactly as it was): attribute by attribute, since these are few."""
    route, verb = write.route, write.verb
    dst = route.dst.network_address.packed
    if verb == "del":
        kind, flags = RTM_DELROUTE, F_REQUEST | F_ACK
        scope, rtype = 255, 0
    else:
        kind = RTM_NEWROUTE
        flags = F_REQUEST | F_ACK | F_CREATE | (F_REPLACE if verb == "replace" else F_EXCL)
        scope, rtype = SCOPE_NUMBERS.get(route.scope, 0), RTN_NUMBERS[route.kind]
    table = route.table if route.table < 256 else 252
    body = _RTMSG.pack(
        _FAMILY[route.dst.version], route.dst.prefixlen, 0, route.tos, table, route.proto,
        scope, rtype, 0,
    )  # fmt: skip
    body += _attr(RTA_TABLE, _U32.pack(route.table)) + _attr(RTA_PRIORITY, _U32.pack(route.metric))
    if route.dst.prefixlen:
        body += _attr(RTA_DST, dst)
    if verb != "del" and route.kind == "unicast":
        if route.nh_id:
            body += _attr(RTA_NH_ID, _U32.pack(route.nh_id))
        elif route.nexthops:
            paths = b""
            for hop, index in zip(route.nexthops, write.nexthop_indexes, strict=True):
                attrs = _gateway_attr(route.dst.version, hop.gateway)
                paths += _RTNH.pack(_RTNH.size + len(attrs), 0, hop.weight - 1, index) + attrs
            body += _attr(RTA_MULTIPATH, paths)
        else:
            body += _gateway_attr(route.dst.version, route.gateway)
            if write.ifindex:
                body += _attr(RTA_OIF, _U32.pack(write.ifindex))
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body


def _gateway_attr(version: int, gateway: IPAddress | None) -> bytes:
    """RTA_GATEWAY for a gateway of the route's family, RTA_VIA for one of the other."""
    if gateway is None:
        return b""
    if gateway.version == version:
        return _attr(RTA_GATEWAY, gateway.packed)
    return _attr(RTA_VIA, struct.pack("=H", _FAMILY[gateway.version]) + gateway.packed)


def _address(raw: bytes) -> IPAddress:
    number = int.from_bytes(raw, "big")
    return IPv4Address(number) if len(raw) == 4 else IPv6Address(number)


_CACHEINFO = _RTA.pack(_RTA.size + 32, RTA_CACHEINFO)  # struct rta_cacheinfo: 8 u32


def route_content(message: bytes) -> bytes:
    """What a route message says about the route: its type and body, not the header's sequence
    number, nor the RTA_CACHEINFO of an IPv6 route, whose expiry (a route learned from router
    advertisements) counts down between two dumps of an unchanged table.

    The kernel writes RTA_CACHEINFO after every attribute _walk_route reads (rt6_fill_node), so
    its last occurrence is it or lies behind it: whatever is cut never changes a parsed Route.
    IPv4 route messages carry none (and their addresses could hold the same four bytes).
    """
    if message[_NLMSG.size] == socket.AF_INET6:
        at = message.rfind(_CACHEINFO, _NLMSG.size + _RTMSG.size)
        if at > 0:
            return message[4:6] + message[_NLMSG.size : at] + message[at + 36 :]
    return message[4:6] + message[_NLMSG.size :]


# The fields _parse_route reads: (family, dst_len, table, proto, scope, dst, gateway, oif,
# metric), addresses packed and b"" when absent, then the route type, TOS, and the payloads of
# RTA_MULTIPATH, RTA_VIA (b"" when absent) and RTA_NH_ID (0 when absent).
RouteFields = tuple[int, int, int, int, int, bytes, bytes, int, int, int, int, bytes, bytes, int]
# What follows the metric in the fields of a route that a plain Route describes.
_PLAIN = (RTN_UNICAST, 0, b"", b"", 0)
# A layout of route messages of one length: one struct for the whole message past its header
# (rtmsg, then each attribute as a u32 header and its payload), the attribute headers it was
# made from, and what picks the RouteFields out of an unpacked message.
Layout = tuple[struct.Struct, tuple[int, ...], Callable[[tuple[Any, ...]], RouteFields]]
_U32_ATTRS = (RTA_OIF, RTA_PRIORITY, RTA_TABLE, RTA_NH_ID)
_ABSENT = (b"", 0)  # appended to an unpacked message: what an absent attribute reads as


def _route_fields(message: bytes, layouts: dict[int, Layout]) -> RouteFields:
    """The RouteFields of a route message. The kernel writes the routes of a table in a few
    layouts: a message of a length seen before is taken apart by one struct.unpack (its
    attribute headers compared, so a different layout of the same length is caught), not by a
    loop over its attributes, the hot loop of every observation at 10,000 routes."""
    layout = layouts.get(len(message))
    if layout is not None:
        values = layout[0].unpack_from(message, _NLMSG.size)
        if values[9::2] == layout[1]:
            return layout[2](values + _ABSENT)
    fields, layout = _walk_route(message)
    if layout is not None:
        layouts[len(message)] = layout
    return fields


def _walk_route(message: bytes) -> tuple[RouteFields, Layout | None]:
    """RouteFields from one pass over the attributes, and the layout of such messages (None
    for one no struct describes)."""
    family, dst_len, _, tos, table, proto, scope, rtype, _ = _RTMSG.unpack_from(
        message, _NLMSG.size
    )
    found: dict[int, Any] = {}  # attribute -> its payload (a number for the u32 ones)
    fmt = ["=BBBBBBBBI"]  # the layout: rtmsg, then per attribute its header and payload
    headers: list[int] = []
    at: dict[int, int] = {}  # attribute -> the index of its payload in the unpacked message
    describable = True
    offset, end = _NLMSG.size + _RTMSG.size, len(message)
    while offset + 4 <= end:
        length, attr = _RTA.unpack_from(message, offset)
        if length < 4:
            break
        header, attr, payload = _U32.unpack_from(message, offset)[0], attr & 0x3FFF, length - 4
        as_u32 = attr in _U32_ATTRS and payload == 4
        value = message[offset + 4 : offset + length]
        if as_u32 or attr not in _U32_ATTRS:  # a u32 of another size is not read
            found[attr] = _U32.unpack(value)[0] if as_u32 else value
        at[attr] = 9 + 2 * len(headers) + 1
        headers.append(header)
        padding = min((length + 3) & ~3, end - offset) - length
        fmt.append("I" + ("I" if as_u32 else f"{payload}s") + "x" * padding)
        describable &= as_u32 or attr not in _U32_ATTRS  # else no layout for these messages
        offset += (length + 3) & ~3
    get = found.get
    fields: RouteFields = (
        *(family, dst_len, get(RTA_TABLE, table), proto, scope, get(RTA_DST, b"")),
        *(get(RTA_GATEWAY, b""), get(RTA_OIF, 0), get(RTA_PRIORITY, 0), rtype, tos),
        *(get(RTA_MULTIPATH, b""), get(RTA_VIA, b""), get(RTA_NH_ID, 0)),
    )
    compiled = struct.Struct("".join(fmt)) if describable and offset >= end else None
    if compiled is None or _NLMSG.size + compiled.size != end:
        return fields, None
    empty, zero = 9 + 2 * len(headers), 9 + 2 * len(headers) + 1  # the _ABSENT values
    pick = operator.itemgetter(
        *(0, 1, at.get(RTA_TABLE, 4), 5, 6, at.get(RTA_DST, empty), at.get(RTA_GATEWAY, empty)),
        *(at.get(RTA_OIF, zero), at.get(RTA_PRIORITY, zero), 7, 3),
        *(at.get(RTA_MULTIPATH, empty), at.get(RTA_VIA, empty), at.get(RTA_NH_ID, zero)),
    )
    return fields, (compiled, tuple(headers), pick)


def _parse_route(
    kind: int,
    message: bytes,
    table: int,
    names: dict[int, str],
    layouts: dict[int, Layout] | None = None,
) -> Route | None:
    if kind != RTM_NEWROUTE:
        return None
    fields = _route_fields(message, {} if layouts is None else layouts)  # None: learn nothing
    family, dst_len, rtm_table, proto, scope, dst, gateway, oif, metric, rtype = fields[:10]
    route_kind = RTN_KINDS.get(rtype)
    if route_kind is None or rtm_table != table:
        return None
    ifname = names.get(oif, "")
    plain = fields[9:] == _PLAIN
    number = int.from_bytes(dst, "big")  # no RTA_DST: the default route
    network: IPNetwork = (
        IPv4Network((number, dst_len))
        if family == socket.AF_INET
        else IPv6Network((number, dst_len))
    )
    route = Route(
        dst=network,
        ifname=ifname,
        gateway=_address(gateway) if gateway else None,
        scope=SCOPES.get(scope, str(scope)),
        metric=metric,
        proto=proto,
        table=rtm_table,
    )
    if plain:
        return route
    tos, multipath, via, nh_id = fields[10:]
    address = _via(via) if via else route.gateway
    hops = _nexthops(multipath, names) if multipath else ()
    if nh_id and not hops and (address or ifname):
        hops = (NextHop(address, ifname),)  # the nexthop object's path, shown with it
    if hops or route_kind != "unicast":
        # No device or gateway of its own (an IPv6 blackhole's "dev lo" is the kernel's):
        # diff.py's comparison of targets relies on it.
        ifname, address = "", None
    special = RouteSpecial(route_kind, tos, hops, nh_id)
    return route._replace(ifname=ifname, gateway=address, special=special)


_RTNH = struct.Struct("=HBBi")  # struct rtnexthop: len, flags, hops, ifindex


def _via(payload: bytes) -> IPAddress | None:
    """The address of an RTA_VIA (struct rtvia: a u16 family, then the address)."""
    return _address(payload[2:]) if len(payload) in (6, 18) else None


def _nexthops(payload: bytes, names: dict[int, str]) -> tuple[NextHop, ...]:
    """The paths of an RTA_MULTIPATH: rtnexthop structs, each followed by its attributes."""
    found = []
    offset = 0
    while offset + _RTNH.size <= len(payload):
        length, _, hops, index = _RTNH.unpack_from(payload, offset)
        if length < _RTNH.size:
            break
        gateway = None
        for attr, value in _attrs(payload[: offset + length], offset + _RTNH.size):
            if attr == RTA_GATEWAY:
                gateway = _address(value)
            elif attr == RTA_VIA:
                gateway = _via(value)
        found.append(NextHop(gateway, names.get(index, ""), hops + 1))
        offset += (length + 3) & ~3
    return tuple(found)
