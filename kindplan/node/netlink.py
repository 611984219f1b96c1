"""A netlink socket: requests, dumps, batches of writes and their acknowledgements. Every rtnetlink
path kindplan uses (links, addresses, routes) goes through Netlink; what the messages say is in
netlink_links.py and netlink_routes.py, the wire format in netlink_codec.py.

Dumps ask the kernel to filter by table (strict checking); writes go out in batches of messages
over one socket, each with its own sequence number, so every error still maps to its route. A
write asks for no acknowledgement: the kernel answers only those it refuses (an NLMSG_ERROR
carrying the write's sequence number). Each batch ends with a barrier, a no-op request that does
ask for one: the kernel handles a send's messages in order, so once the barrier is answered every
refusal of the batch is in, and a write without one is done. That spares the kernel 10,000
acknowledgements and kindplan reading them (one recv each) at 5,000 dual-stack nodes.

Hazards this module guards against:
- The kernel queues each answer in the socket's receive buffer and drops it (the next recv
  fails with ENOBUFS) when the buffer is full: on a stock node (net.core.rmem_max 212992) the
  buffer holds 512 of them. Batches are sized to the buffer the kernel granted, as if every write
  were refused; an overrun anyway is drained, and every write of the batch that has no answer is
  reported as "no acknowledgement" (maybe applied: its refusal may be among the dropped), never
  raised. So is every write without an answer when the socket fails before the barrier's.
- A dump that a concurrent change interrupts (NLM_F_DUMP_INTR) may miss or repeat entries: it is
  done again, a bounded number of times. An error in NLMSG_DONE fails the dump.
- An acknowledgement counts only for the sequence number it carries (a stale one is ignored); a
  socket that does not answer in TIMEOUT seconds fails with ETIMEDOUT; a malformed answer is an
  error, not a loop (netlink_codec.py).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from kindplan.core.addresses import IPAddress
from kindplan.core.model import Link
from kindplan.core.nexthops import Nexthop
from kindplan.core.routes import Route
from kindplan.node.netlink_codec import (
    F_ACK,
    F_DUMP,
    F_REQUEST,
    HEADER,
    I32,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NetlinkError,
    dump_answers,
    error,
    malformed,
    messages,
    request,
)
from kindplan.node.netlink_links import (
    ADDRESS_DUMP,
    LINK_DUMP,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    LinkFields,
    address_request,
    links_with_addresses,
    parse_address,
    parse_link,
)
from kindplan.node.netlink_nexthops import (
    NEXTHOP_DUMP,
    RTM_GETNEXTHOP,
    RTM_NEWNEXTHOP,
    NexthopMemo,
    NexthopWrite,
    nexthop_digest,
    write_message,
)
from kindplan.node.netlink_routes import (
    RTM_GETROUTE,
    RouteMemo,
    RouteWrite,
    dump_request,
    route_digest,
)

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors carry only the header of the refused message, not all of it
NETLINK_EXT_ACK = 11  # errors carry the kernel's reason as text (NLMSGERR_ATTR_MSG)
NETLINK_GET_STRICT_CHK = 12  # lets the kernel filter dumps (here: by table)
SO_RCVBUFFORCE = 33  # SO_RCVBUF past net.core.rmem_max, with CAP_NET_ADMIN

RCVBUF = 1 << 22  # asked for; the kernel doubles it (its bookkeeping) and may grant less
# An acknowledgement's share of the receive buffer: 832 bytes each (512 fill 425,984 bytes,
# kernel 6.18), more for an error with its text; counted at 2,048 to keep well clear.
ACK_COST = 2048
BATCH_MAX = 1000  # messages per send when the buffer allows: few system calls
TIMEOUT = 10.0  # seconds the kernel may take to answer (10,000 acks take ~0.1 s)
DUMP_ATTEMPTS = 5  # dumps interrupted by a concurrent change in a row before giving up
_FAMILIES = (socket.AF_INET, socket.AF_INET6)

_T = TypeVar("_T")


class Socket(Protocol):
    """What Netlink needs of its socket (a test passes a fake that replays recorded bytes)."""

    def send(self, data: bytes, /) -> int: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def getsockopt(self, level: int, option: int, /) -> int: ...
    def close(self) -> None: ...


def open_socket(protocol: int = NETLINK_ROUTE) -> socket.socket:
    """A netlink socket of `protocol` (rtnetlink unless told) with a receive buffer as large as
    the kernel grants, extended acks and strict checking."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
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


NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11  # the bounds of an nfnetlink batch


class Netlink:
    """One netlink socket in the current network namespace (rtnetlink unless opened otherwise)."""

    def __init__(self, sock: Socket | None = None, timeout: float = TIMEOUT) -> None:
        self._sock: Socket = sock if sock is not None else open_socket()
        self._timeout = timeout
        self._sock.settimeout(timeout)
        # The answers of one batch (at worst every write refused) must all fit the receive buffer
        # the kernel granted.
        granted = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.batch = max(1, min(BATCH_MAX, granted // ACK_COST))
        self._seq = 0
        self._routes = RouteMemo()
        self._nexthops = NexthopMemo()
        self._dumped: list[tuple[int, bytes]] = []  # the answers of the last routes()

    def close(self) -> None:
        self._sock.close()

    def _message(self, kind: int, flags: int, body: bytes) -> tuple[int, bytes]:
        self._seq += 1
        return self._seq, request(kind, flags, self._seq, body)

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

    def dump(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
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
        seq, message = self._message(kind, F_REQUEST | F_DUMP, body)
        self._sock.send(message)
        answers: list[tuple[int, bytes]] = []
        interrupted = False
        while True:
            try:
                data = self._recv()
            except NetlinkError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                interrupted = True  # something was dropped: the dump may lack it
                continue
            done, cut = dump_answers(data, seq, answers)
            interrupted = interrupted or cut
            if done:
                return None if interrupted else answers

    def links(self) -> list[LinkFields]:
        """(index, name, mtu, up, kind) of every link; kind "veth", "bridge"..., "" for none."""
        dumped = self.dump(RTM_GETLINK, LINK_DUMP)
        return [parse_link(message) for kind, message in dumped if kind == RTM_NEWLINK]

    def addresses(self) -> list[tuple[int, IPAddress, int]]:
        """(link index, address, prefix length) of every address."""
        dumped = self.dump(RTM_GETADDR, ADDRESS_DUMP)
        found = [parse_address(message) for kind, message in dumped if kind == RTM_NEWADDR]
        return [address for address in found if address is not None]

    def read_links(self) -> tuple[Link, ...]:
        addresses = self.addresses()
        return links_with_addresses(self.links(), addresses)

    def _route_dumps(self, table: int) -> list[tuple[int, bytes]]:
        """The answers of the route dumps of `table`, IPv4 then IPv6."""
        v4, v6 = (self.dump(RTM_GETROUTE, dump_request(family, table)) for family in _FAMILIES)
        return v4 + v6

    def routes(
        self, table: int, names: dict[int, str]
    ) -> tuple[list[Route], list[tuple[int, bytes]]]:
        """Unicast routes of `table`, both families (the kernel filters by table), and the
        dump's answers they were parsed from (route_digest makes the same digest of them)."""
        self._dumped = dumped = self._route_dumps(table)  # kept (not copied) for route_bodies
        return self._routes.routes(dumped, table, names), dumped

    def route_bodies(self, routes: Sequence[Route]) -> dict[Route, bytes]:
        """The body of the message of the last routes() dump that parsed to each of `routes`
        (asked only for the few foreign routes an apply replaces or deletes)."""
        return self._routes.bodies(self._dumped, set(routes))

    def route_digest(self, table: int) -> bytes:
        """A digest of the table's routes as the kernel dumps them (no parse; the converged fast
        path: equal bytes parse to equal routes for equal link names)."""
        return route_digest(self._route_dumps(table))

    def nexthops(self, names: dict[int, str]) -> list[Nexthop]:
        """Every nexthop object (NetlinkError EOPNOTSUPP or EINVAL: a kernel before 5.3)."""
        return self._nexthops.nexthops(self.dump(RTM_GETNEXTHOP, NEXTHOP_DUMP), names)

    def nexthop_digest(self) -> bytes:
        """A digest of every nexthop object as dumped (the converged fast path)."""
        answers = self.dump(RTM_GETNEXTHOP, NEXTHOP_DUMP)
        return nexthop_digest([(k, m) for k, m in answers if k == RTM_NEWNEXTHOP])

    # -- writes --------------------------------------------------------------------------------

    def write_routes(
        self, writes: Sequence[RouteWrite | NexthopWrite]
    ) -> list[NetlinkError | None]:
        """Send every write (of a route or a nexthop object), in order and in batches; the error
        of each (None: done)."""
        return self._write_all(writes, write_message)

    def write_requests(
        self, requests: Sequence[tuple[int, int, bytes]]
    ) -> list[NetlinkError | None]:
        """Send (type, flags beyond F_REQUEST, body) requests as write_routes sends its writes;
        the tunnel's writes (tunnels.py) go this way."""
        return self._write_all(requests, lambda r, seq: request(r[0], F_REQUEST | r[1], seq, r[2]))

    def _write_all(
        self, items: Sequence[_T], encode: Callable[[_T, int], bytes]
    ) -> list[NetlinkError | None]:
        """Send each item's message (`encode(item, seq)`) in order, in batches answered only
        when refused, a barrier after each (_request); the error of each (None: done)."""
        results: list[NetlinkError | None] = [None] * len(items)
        start = 0
        while start < len(items):
            chunk = items[start : start + self.batch]
            first = self._seq + 1
            self._seq += len(chunk)
            payload = b"".join([encode(item, seq) for seq, item in enumerate(chunk, first)])
            if not self._request(payload, first, results, start, len(chunk)):
                return results  # the socket failed: the rest was not sent
            start += len(chunk)
        return results

    def write_address(self, verb: str, index: int, address: IPAddress, prefixlen: int) -> None:
        """Add ("add": fails if it exists) or delete ("del") an address on link `index`."""
        kind, flags, body = address_request(verb, index, address, prefixlen)
        seq, message = self._message(kind, F_REQUEST | flags, body)
        results: list[NetlinkError | None] = [None]
        self._request(message, seq, results, 0, 1)
        if results[0] is not None:
            raise results[0]

    def transaction(
        self, begin: bytes, requests: Sequence[tuple[int, int, bytes]], end: bytes
    ) -> list[NetlinkError | None]:
        """An nfnetlink batch: `requests` ((type, flags, body) each) between the bodies of its
        begin and end messages, one transaction the kernel makes whole or not at all; the error
        of each request (one refused aborts them all)."""
        first = self._seq + 1
        self._seq += len(requests)
        payload = b"".join(
            request(kind, F_REQUEST | F_ACK | flags, seq, body)
            for seq, (kind, flags, body) in enumerate(requests, first)
        )
        payload = request(NFNL_MSG_BATCH_BEGIN, F_REQUEST, 0, begin) + payload
        payload += request(NFNL_MSG_BATCH_END, F_REQUEST, 0, end)
        results: list[NetlinkError | None] = [None] * len(requests)
        self._request(payload, first, results, 0, len(requests))
        return results

    def _request(
        self, payload: bytes, first: int, results: list[NetlinkError | None], at: int, count: int
    ) -> bool:
        """Send `count` requests (sequence numbers from `first`, none asking for an
        acknowledgement) and a barrier after them; put the error of each in `results` from `at`.
        False if the socket failed: what was not answered then may have been done, and every
        later write has an error saying it was not sent."""
        barrier, message = self._message(NLMSG_NOOP, F_REQUEST | F_ACK, b"")
        try:
            self._sock.send(payload + message)
        except OSError as e:
            _fail(results, at, e.errno or errno.EIO, f"not sent: {e.strerror or e}")
            return False
        try:
            overrun = self._answers(range(first, first + count), barrier, results, at)
        except OSError as e:
            unanswered = [i for i in range(at, at + count) if results[i] is _PENDING]
            reason = f"no acknowledgement: {e}"
            for i in unanswered:
                results[i] = NetlinkError(e.errno or errno.EIO, reason, maybe_applied=True)
            _fail(results, at + count, e.errno or errno.EIO, f"not sent: {e}")
            return False
        if overrun:  # the kernel grants less than it says, or others share the buffer
            self.batch = max(1, self.batch // 2)
        return True

    def _answers(
        self, seqs: range, barrier: int, results: list[NetlinkError | None], at: int
    ) -> bool:
        """Read the answers to the requests of sequence numbers `seqs` up to the barrier's,
        into `results` from `at`: a refusal is its error, no answer is done. True if
        the receive buffer overran: then any answer may have been dropped, so every write
        without one is marked as missing (it may or may not have happened)."""
        count = len(seqs)
        results[at : at + count] = [_PENDING] * count
        while True:
            try:
                data = self._recv()
            except NetlinkError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                for chunk in self._drain():  # everything the kernel will send is queued now
                    _read_answers(chunk, seqs, barrier, results, at)
                _unacknowledged(results, at, count)
                return True
            if _read_answers(data, seqs, barrier, results, at):
                break
        for i in range(at, at + count):
            if results[i] is _PENDING:
                results[i] = None
        return False


# Placeholders in a results list: a request sent and not yet answered, and one whose answer the
# kernel may have dropped on a full receive buffer.
_PENDING = NetlinkError(errno.EINPROGRESS, "sent, waiting for its acknowledgement")
_UNACKNOWLEDGED = NetlinkError(
    errno.ENOBUFS,
    "no acknowledgement: the socket's receive buffer overran",
    maybe_applied=True,
)


def _read_answers(
    data: bytes, seqs: range, barrier: int, results: list[NetlinkError | None], at: int
) -> bool:
    """Put the answers in `data` to requests still waiting (sequence numbers `seqs`) into
    `results` from `at`; whether the barrier's answer was among them."""
    size, code_at, pending = HEADER.size, I32.unpack_from, _PENDING
    first, count = seqs.start, len(seqs)
    passed = False
    for offset, length, kind, flags, seq in messages(data):
        if kind != NLMSG_ERROR:
            continue
        if seq == barrier:
            passed = True
            continue
        k = seq - first
        if 0 <= k < count and results[at + k] is pending:
            if length < size + 4:  # no room for the error code
                raise malformed(data, offset, length)
            ok = not code_at(data, offset + size)[0]
            results[at + k] = None if ok else error(data, offset, length, kind, flags)
    return passed


def _unacknowledged(results: list[NetlinkError | None], at: int, count: int) -> None:
    """Mark the requests still waiting as unacknowledged (maybe applied)."""
    for i in range(at, at + count):
        if results[i] is _PENDING:
            results[i] = _UNACKNOWLEDGED


def _fail(results: list[NetlinkError | None], start: int, code: int, reason: str) -> None:
    """Every result from `start` not known yet (not sent, or sent and pending): failed."""
    failure = NetlinkError(code, reason)
    for i in range(start, len(results)):
        if results[i] is None or results[i] is _PENDING:
            results[i] = failure
