"""The socket logic of netlink.Netlink (dumps, acknowledgements, batches) against canned byte
streams: interrupted dumps, errors in NLMSG_DONE, malformed messages, ENOBUFS, a silent socket.
No root: a fake socket replays what a kernel would send."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from ipaddress import ip_address, ip_network

import pytest

from kindplan.core.routes import Route
from kindplan.node import netlink
from kindplan.node import netlink_codec as codec
from kindplan.node import netlink_links as linkmsg
from kindplan.node import netlink_routes as routemsg
from kindplan.node.kernel import Kernel, KernelError

STOCK_GRANTED = 425_984  # SO_RCVBUF read back on a node with net.core.rmem_max 212992


class FakeSocket:
    """Replays `script` (bytes to receive, or an exception to raise) one recv at a time; once
    it is empty, a blocking recv times out and a non-blocking one finds nothing."""

    def __init__(self, script: list[bytes | OSError], rcvbuf: int = STOCK_GRANTED) -> None:
        self.script = list(script)
        self.rcvbuf = rcvbuf
        self.sent: list[bytes] = []
        self.timeout: float | None = None

    def send(self, data: bytes, /) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int, /) -> bytes:
        if not self.script:
            raise BlockingIOError(errno.EAGAIN, "empty") if self.timeout == 0 else TimeoutError()
        item = self.script.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def settimeout(self, timeout: float | None, /) -> None:
        self.timeout = timeout

    def getsockopt(self, level: int, option: int, /) -> int:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVBUF)
        return self.rcvbuf

    def close(self) -> None:
        pass


def message(kind: int, seq: int, body: bytes = b"", flags: int = 0) -> bytes:
    return codec.HEADER.pack(codec.HEADER.size + len(body), kind, flags, seq, 0) + body


def link(seq: int, index: int, name: str, flags: int = codec.F_MULTI) -> bytes:
    body = linkmsg._IFINFO.pack(socket.AF_UNSPEC, 1, index, linkmsg.IFF_UP, 0)
    body += codec.attr(linkmsg.IFLA_IFNAME, name.encode() + b"\0")
    body += codec.attr(linkmsg.IFLA_MTU, struct.pack("=I", 1500))
    return message(linkmsg.RTM_NEWLINK, seq, body, flags)


def done(seq: int, error: int = 0, text: str = "") -> bytes:
    body = struct.pack("=i", -error)
    flags = codec.F_MULTI
    if text:
        body += codec.attr(codec.NLMSGERR_ATTR_MSG, text.encode() + b"\0")
        flags |= codec.F_ACK_TLVS
    return message(codec.NLMSG_DONE, seq, body, flags)


def ack(seq: int, error: int = 0, text: str = "") -> bytes:
    """An acknowledgement as the kernel sends it with NETLINK_CAP_ACK and NETLINK_EXT_ACK."""
    body = struct.pack("=i", -error) + codec.HEADER.pack(60, routemsg.RTM_NEWROUTE, 0, seq, 0)
    flags = codec.F_CAPPED
    if text:
        body += codec.attr(codec.NLMSGERR_ATTR_MSG, text.encode() + b"\0")
        flags |= codec.F_ACK_TLVS
    return message(codec.NLMSG_ERROR, seq, body, flags)


def names(nl: netlink.Netlink) -> list[str]:
    return [link[1] for link in nl.links()]


def test_an_interrupted_dump_is_done_again() -> None:
    sock = FakeSocket(
        [
            link(1, 1, "lo") + link(1, 2, "eth0", codec.F_MULTI | codec.F_DUMP_INTR),
            done(1),
            link(2, 1, "lo") + link(2, 2, "eth0") + link(2, 3, "veth1") + done(2),
        ]
    )
    assert names(netlink.Netlink(sock)) == ["lo", "eth0", "veth1"]
    assert len(sock.sent) == 2


def test_a_dump_that_lost_messages_to_enobufs_is_done_again() -> None:
    enobufs = OSError(errno.ENOBUFS, "No buffer space available")
    sock = FakeSocket([link(1, 1, "lo"), enobufs, done(1), link(2, 1, "lo") + link(2, 2, "eth0")])
    sock.script.append(done(2))
    assert names(netlink.Netlink(sock)) == ["lo", "eth0"]
    assert len(sock.sent) == 2


def test_a_dump_interrupted_every_time_fails_after_a_bounded_number_of_attempts() -> None:
    script: list[bytes | OSError] = [
        link(seq, 1, "lo", codec.F_MULTI | codec.F_DUMP_INTR) + done(seq)
        for seq in range(1, netlink.DUMP_ATTEMPTS + 1)
    ]
    sock = FakeSocket(script)
    with pytest.raises(KernelError) as caught:
        Kernel(netlink.Netlink(sock)).read_links()
    assert caught.value.errno == errno.EINTR
    assert "interrupted by concurrent changes" in str(caught.value)
    assert len(sock.sent) == netlink.DUMP_ATTEMPTS


def test_an_error_in_nlmsg_done_fails_the_dump_with_the_kernels_text() -> None:
    sock = FakeSocket([link(1, 1, "lo") + done(1, errno.EMSGSIZE, "dump too large")])
    with pytest.raises(KernelError) as caught:
        Kernel(netlink.Netlink(sock)).read_links()
    assert caught.value.errno == errno.EMSGSIZE
    assert str(caught.value) == ("netlink dump of links failed: Message too long (dump too large)")


def test_answers_of_another_request_are_not_part_of_the_dump() -> None:
    sock = FakeSocket([link(7, 9, "stale") + done(7) + link(1, 1, "lo"), done(1)])
    assert names(netlink.Netlink(sock)) == ["lo"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x10\x00\x00", id="shorter than a header"),
        pytest.param(codec.HEADER.pack(0, linkmsg.RTM_NEWLINK, 2, 1, 0), id="length 0"),
        pytest.param(codec.HEADER.pack(12, linkmsg.RTM_NEWLINK, 2, 1, 0), id="length < header"),
        pytest.param(link(1, 1, "lo")[:-4], id="longer than what was read"),
        pytest.param(link(1, 1, "lo") + b"\x01\x02", id="trailing bytes"),
    ],
)
def test_a_malformed_message_is_an_error_not_a_loop(data: bytes) -> None:
    with pytest.raises(KernelError) as caught:
        Kernel(netlink.Netlink(FakeSocket([data, done(1)]))).read_links()
    assert caught.value.errno == errno.EBADMSG
    assert "malformed netlink answer" in str(caught.value)


def test_a_socket_that_does_not_answer_fails_in_bounded_time() -> None:
    """A real socket that never answers (one end of a pair): ETIMEDOUT, in a clear line."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        kernel = Kernel(netlink.Netlink(ours, timeout=0.2))
        with pytest.raises(KernelError) as caught:
            kernel.read_links()
        assert caught.value.errno == errno.ETIMEDOUT
        assert str(caught.value) == (
            "netlink dump of links failed: Connection timed out "
            "(the kernel did not answer in 0.2 s)"
        )
    finally:
        ours.close()
        theirs.close()


def writes(count: int) -> list[routemsg.RouteWrite]:
    return [
        routemsg.RouteWrite(
            "add", Route(ip_network(f"10.{i // 256}.{i % 256}.0/24"), "eth0", None), 2
        )
        for i in range(count)
    ]


def sent_seqs(sock: FakeSocket) -> Iterator[list[int]]:
    """The sequence numbers of the requests in each send."""
    for data in sock.sent:
        seqs, offset = [], 0
        while offset < len(data):
            length, _, _, seq, _ = codec.HEADER.unpack_from(data, offset)
            seqs.append(seq)
            offset += length
        yield seqs


def test_batches_are_sized_to_the_granted_receive_buffer() -> None:
    """Each batch ends with its barrier (the one request asking for an acknowledgement): with
    every write done, the barriers' acks are all the kernel sends."""
    count = 500
    per_batch = STOCK_GRANTED // netlink.ACK_COST
    barriers = [209, 418, 503]  # after writes 1-208, 210-417, 419-502
    sock = FakeSocket([ack(seq) for seq in barriers])
    nl = netlink.Netlink(sock)
    assert nl.batch == per_batch  # 208: the answers of a batch take at most half the buffer
    assert nl.write_routes(writes(count)) == [None] * count
    assert [len(s) for s in sent_seqs(sock)] == [209, 209, 85]
    assert [s[-1] for s in sent_seqs(sock)] == barriers
    big = netlink.Netlink(FakeSocket([], rcvbuf=8 << 20))
    assert big.batch == netlink.BATCH_MAX


def test_only_the_barrier_asks_for_an_acknowledgement() -> None:
    sock = FakeSocket([ack(4)])
    assert netlink.Netlink(sock).write_routes(writes(3)) == [None] * 3
    [sent] = sock.sent
    requests = list(codec.messages(sent))
    assert [(kind, bool(flags & codec.F_ACK)) for _, _, kind, flags, _ in requests] == [
        *[(routemsg.RTM_NEWROUTE, False)] * 3,
        (codec.NLMSG_NOOP, True),
    ]


def test_answers_are_matched_by_sequence_number() -> None:
    """Refusals out of order, a stale answer to an earlier request, an ack a kernel may send
    all the same: each lands on its own write; a write without an answer is done once the
    barrier's ack came."""
    refused = ack(2, errno.ENETUNREACH, "Nexthop has invalid gateway")
    sock = FakeSocket([ack(3) + ack(99) + refused, ack(0, errno.EEXIST) + ack(4)])
    results = netlink.Netlink(sock).write_routes(writes(3))
    assert results[0] is None and results[2] is None
    error = results[1]
    assert error is not None and error.errno == errno.ENETUNREACH
    assert str(error) == "Network is unreachable (Nexthop has invalid gateway)"
    assert not error.maybe_applied


def test_an_error_before_the_barrier_in_another_recv_is_still_counted() -> None:
    """The refusal and the barrier's ack come in separate reads: the write is still refused."""
    sock = FakeSocket([ack(1, errno.EEXIST), ack(2, errno.ENETUNREACH), ack(3)])
    results = netlink.Netlink(sock).write_routes(writes(2))
    assert [r.errno if r else None for r in results] == [errno.EEXIST, errno.ENETUNREACH]


def test_enobufs_drains_and_marks_every_unanswered_write() -> None:
    """The kernel dropped answers (buffer full): the refusal read before stays, the answers
    queued are drained, and every other write of the batch is "maybe applied" (a dropped answer
    may have been its refusal), even though the barrier's ack came; later batches go out
    smaller, nothing is raised."""
    enobufs = OSError(errno.ENOBUFS, "No buffer space available")
    refused = ack(2, errno.ENETUNREACH)
    sock = FakeSocket([refused, enobufs, ack(4, errno.EEXIST) + ack(6)])
    nl = netlink.Netlink(sock)
    nl.batch = 5
    results = nl.write_routes(writes(5))
    codes = [(r.errno, r.maybe_applied) if r else None for r in results]
    unanswered = (errno.ENOBUFS, True)
    assert codes == [
        unanswered,
        (errno.ENETUNREACH, False),
        unanswered,
        (errno.EEXIST, False),
        unanswered,
    ]
    assert nl.batch == 2


def test_a_socket_failure_mid_batch_says_what_was_sent() -> None:
    """The first batch's barrier answered, then silence: the second batch's writes may have
    happened (no answer says they were refused), the third was never sent."""
    sock = FakeSocket([ack(2)])
    nl = netlink.Netlink(sock, timeout=0.1)
    nl.batch = 1
    results = nl.write_routes(writes(3))
    assert results[0] is None
    second, third = results[1], results[2]
    assert second is not None and second.maybe_applied and second.errno == errno.ETIMEDOUT
    assert third is not None and not third.maybe_applied and "not sent" in str(third)
    assert len(sock.sent) == 2


def test_kernel_write_results_are_kernel_errors_with_errno() -> None:
    sock = FakeSocket([ack(1, errno.ENETUNREACH, "Nexthop has invalid gateway") + ack(2)])
    kernel = Kernel(netlink.Netlink(sock))
    kernel._index = {"eth0": 2}
    route = Route(ip_network("10.244.1.0/24"), "eth0", ip_address("203.0.113.1"))
    [error] = kernel.write_routes([("add", route)])
    assert isinstance(error, KernelError) and error.errno == errno.ENETUNREACH
    assert str(error) == "Network is unreachable (Nexthop has invalid gateway)"
