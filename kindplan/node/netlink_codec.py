"""The netlink wire format, of any netlink family (rtnetlink for routes and links, nfnetlink for
nf_tables): a message's header, its attributes (packed and walked), the messages of a received
buffer, and the error an acknowledgement or an NLMSG_DONE carries. Bytes in, values out: no
socket here (netlink.py holds it).

Hazards this module guards against: a message shorter than its header, or longer than what was
read, is an error (EBADMSG), not a loop; an attribute shorter than its own header, or longer
than what is left of its message, ends the walk (nothing after it can be trusted).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

from kindplan.core.addresses import IPAddress

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_MIN_TYPE = 1, 2, 3, 16  # below 16: control messages
F_REQUEST, F_MULTI, F_ACK, F_DUMP_INTR, F_DUMP = 0x1, 0x2, 0x4, 0x10, 0x300
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400  # of a request that makes something
F_CAPPED, F_ACK_TLVS = 0x100, 0x200  # of an acknowledgement
NLMSGERR_ATTR_MSG = 1

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
ATTR = struct.Struct("=HH")  # struct nlattr (rtattr): len, type
U32 = struct.Struct("=I")
I32 = struct.Struct("=i")
_TYPE_MASK = 0x3FFF  # an attribute's type without NLA_F_NESTED and NLA_F_NET_BYTEORDER


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


def request(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """A whole request: the header, then `body` (the family's own header and attributes)."""
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = ATTR.size + len(payload)
    return ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def attr_spans(data: bytes, offset: int) -> Iterator[tuple[int, int, int]]:
    """(offset, length, type) of each attribute from `offset` to the end of `data`; the walk
    ends at one shorter than its header or longer than what is left."""
    end = len(data)
    while offset + ATTR.size <= end:
        length, kind = ATTR.unpack_from(data, offset)
        if not ATTR.size <= length <= end - offset:
            return
        yield offset, length, kind & _TYPE_MASK
        offset += (length + 3) & ~3


def attrs(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute from `offset` to the end of `data`."""
    for at, length, kind in attr_spans(data, offset):
        yield kind, data[at + ATTR.size : at + length]


def text(payload: bytes) -> str:
    """A string attribute (NUL-terminated)."""
    return payload.rstrip(b"\0").decode(errors="replace")


def ip_address(raw: bytes) -> IPAddress:
    """An address attribute: 4 bytes IPv4, else IPv6."""
    number = int.from_bytes(raw, "big")
    return IPv4Address(number) if len(raw) == 4 else IPv6Address(number)


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, length, type, flags, seq) of each message in a received buffer; EBADMSG for one
    whose length does not fit, or for bytes left over after the last."""
    header, size, end = HEADER.unpack_from, HEADER.size, len(data)
    offset = 0
    while offset + size <= end:
        length, kind, flags, seq, _ = header(data, offset)
        if not size <= length <= end - offset:
            raise malformed(data, offset, length)
        yield offset, length, kind, flags, seq
        offset += (length + 3) & ~3
    if offset < end:
        raise malformed(data, offset, end - offset)


def dump_answers(data: bytes, seq: int, answers: list[tuple[int, bytes]]) -> tuple[bool, bool]:
    """Append (type, whole message) of each answer in `data` to the dump request `seq` to
    `answers`: (whether its NLMSG_DONE came, whether one was marked interrupted by a concurrent
    change). An error in NLMSG_DONE (or an NLMSG_ERROR) is raised.

    The walk of messages() written out once more: this loop runs for every route of every
    watch round (10,000 at 5,000 dual-stack nodes), where a generator's step per message costs
    some 700 instructions, about 5 % of a round.
    """
    append, header, size = answers.append, HEADER.unpack_from, HEADER.size
    interrupted = False
    offset, end = 0, len(data)
    while offset + size <= end:
        length, kind, flags, got_seq, _ = header(data, offset)
        if not size <= length <= end - offset:
            raise malformed(data, offset, length)
        if got_seq == seq:
            if kind >= NLMSG_MIN_TYPE:  # not a control message
                append((kind, data[offset : offset + length]))
            elif kind in (NLMSG_DONE, NLMSG_ERROR):
                failure = error(data, offset, length, kind, flags)
                if failure is not None:
                    raise failure
                if kind == NLMSG_DONE:
                    return True, interrupted
            if flags & F_DUMP_INTR:
                interrupted = True
        offset += (length + 3) & ~3
    if offset < end:
        raise malformed(data, offset, end - offset)
    return False, interrupted


def error(data: bytes, offset: int, length: int, kind: int, flags: int) -> NetlinkError | None:
    """The error an NLMSG_ERROR or NLMSG_DONE message at `offset` carries (None: an ack, or
    the end of a dump that went well), with the kernel's text when it sent one."""
    if length < HEADER.size + 4:
        return None
    code = -I32.unpack_from(data, offset + HEADER.size)[0]
    if code <= 0:
        return None
    detail = ""
    if flags & F_ACK_TLVS:
        at = HEADER.size + 4
        if kind == NLMSG_ERROR and length >= at + HEADER.size:
            # after the error, the refused message (only its header, if capped), then the TLVs
            at += HEADER.size if flags & F_CAPPED else U32.unpack_from(data, offset + at)[0]
        for kind_, payload in attrs(data[offset : offset + length], (at + 3) & ~3):
            if kind_ == NLMSGERR_ATTR_MSG:
                detail = text(payload)
    return NetlinkError(code, detail)


def malformed(data: bytes, offset: int, length: int) -> NetlinkError:
    return NetlinkError(
        errno.EBADMSG,
        f"malformed netlink answer: a message of {length} bytes at byte {offset} of {len(data)}",
    )
