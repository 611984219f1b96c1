"""The fakes of tests/fakes.py hold to the real ports where kindplan relies on them: the same
assertions run against a fake and against the real Kernel and Iptables in a namespace of their own
(root), for the operations the engine, apply and observe use."""

from __future__ import annotations

import errno
import fcntl
from collections.abc import Callable, Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from fakes import FakeIptables, FakeKernel, FakeNode, Netfilter
from shell import sh

from kindplan.core.masq.iptables import (
    fix_payload,
    jump_rule,
    parse_nat,
    remove_payload,
    restore_payload,
)
from kindplan.core.masq.value import Masquerade, wanted
from kindplan.core.model import Address, Link
from kindplan.core.nexthops import Nexthop
from kindplan.core.routes import Route, RouteSpecial
from kindplan.errors import RuntimeFailure
from kindplan.node import iptables as iptables_module
from kindplan.node.iptables import Iptables, read_masq
from kindplan.node.kernel import Kernel, KernelError
from kindplan.node.locking import LOCK_DIR, apply_lock
from kindplan.node.netns import enter_netns
from kindplan.node.opener import open_node
from kindplan.node.ports import IptablesPort, KernelPort, NodeHandles, NodeOpener

UPLINK_V4, UPLINK_V6 = "172.18.0.12/16", "2001:db8:18::12/64"
POD_VETH = "vetha1079faf"
REAL = pytest.param("real", marks=pytest.mark.root)


def _real_node(make_netns: Callable[[], str]) -> str:
    """A namespace with an on-link uplink (both families) and one pod's host veth, all up."""
    ns = make_netns()
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    sh("ip", "-n", ns, "addr", "add", UPLINK_V4, "dev", "eth0")
    sh("ip", "-n", ns, "addr", "add", UPLINK_V6, "dev", "eth0", "nodad")
    sh("ip", "-n", ns, "link", "add", POD_VETH, "type", "veth", "peer", "name", "pvetha")
    for link in ("eth0", "eth0p", POD_VETH, "pvetha"):
        sh("ip", "-n", ns, "link", "set", link, "up")
    return ns


def _fake_kernel() -> FakeKernel:
    uplink = ((ip_address("172.18.0.12"), 16), (ip_address("2001:db8:18::12"), 64))
    return FakeKernel(
        links=(
            Link("lo", 1, 65536, True, ()),
            Link("eth0", 2, 1500, True, uplink, "veth"),
            Link(POD_VETH, 3, 1500, True, (), "veth"),
        ),
        sysctls={"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"},
    )


@pytest.fixture(params=["fake", REAL])
def kernel(request: pytest.FixtureRequest, make_netns: Callable[[], str]) -> Iterator[KernelPort]:
    if request.param == "fake":
        yield _fake_kernel()
        return
    with enter_netns(_real_node(make_netns)):
        real = Kernel()
        try:
            yield real
        finally:
            real.close()


@pytest.fixture(
    params=[
        "fake nft",
        "fake legacy",
        pytest.param("real nft", marks=pytest.mark.root),
        pytest.param("real legacy", marks=pytest.mark.root),
    ]
)
def iptables(
    request: pytest.FixtureRequest, make_netns: Callable[[], str]
) -> Iterator[IptablesPort]:
    kind, backend = request.param.split()
    if kind == "fake":
        yield FakeIptables(backend)
        return
    with enter_netns(make_netns()):
        yield Iptables(backend)


def route(dst: str, ifname: str = "eth0", gateway: str | None = None, **fields: object) -> Route:
    gw = ip_address(gateway) if gateway else None
    return Route(ip_network(dst), ifname, gw, **fields)  # type: ignore[arg-type]


def ours(kernel: KernelPort) -> set[tuple[object, ...]]:
    """kindplan's routes (protocol 75) as the engine compares them: all but the peer label."""
    kernel.read_links()
    return {r[:7] for r in kernel.read_routes() if r.proto == 75}


def errnos(results: list[KernelError | None]) -> list[int | None]:
    return [None if e is None else e.errno for e in results]


PEER = route("10.244.1.0/24", gateway="172.18.0.11", peer="k8s-guide-worker")
PEER6 = route("fd00:10:244:1::/64", gateway="2001:db8:18::11", metric=1024)
POD = route("10.244.2.8/32", POD_VETH, scope="host")


def test_route_writes_are_answered_one_by_one_as_the_kernel_does(kernel: KernelPort) -> None:
    kernel.read_links()
    off_link = route("10.244.9.0/24", gateway="192.0.2.1")
    no_device = route("10.244.2.9/32", "vethgone", scope="host")
    writes = [("add", PEER), ("add", off_link), ("add", POD), ("add", no_device), ("add", PEER6)]
    results = kernel.write_routes(writes)
    assert errnos(results) == [None, errno.ENETUNREACH, None, errno.ENODEV, None]
    assert all(isinstance(e, KernelError) and not e.maybe_applied for e in results if e)
    assert ours(kernel) == {PEER[:7], POD[:7], PEER6[:7]}
    assert errnos(kernel.write_routes([("add", PEER)])) == [errno.EEXIST]


def test_replace_and_delete_touch_only_routes_of_the_protocol_named(kernel: KernelPort) -> None:
    kernel.read_links()
    foreign = route("10.244.3.0/24", gateway="172.18.0.13", proto=4)  # someone's static route
    assert errnos(kernel.write_routes([("add", PEER), ("add", foreign)])) == [None, None]
    moved = PEER._replace(gateway=ip_address("172.18.0.21"))
    gone = route("10.244.7.0/24", gateway="172.18.0.17")
    writes = [("replace", moved), ("del", foreign._replace(proto=75)), ("del", gone)]
    assert errnos(kernel.write_routes(writes)) == [None, None, None]
    assert ours(kernel) == {moved[:7]}
    assert foreign[:7] in [r[:7] for r in kernel.read_routes()], "not ours: left alone"
    assert errnos(kernel.write_routes([("del", moved)])) == [None]
    assert ours(kernel) == set()


def test_the_route_digest_follows_the_table(kernel: KernelPort) -> None:
    kernel.read_links()
    before = kernel.route_digest()
    assert kernel.route_digest() == before
    kernel.write_routes([("add", PEER)])
    after = kernel.route_digest()
    assert after != before
    kernel.write_routes([("del", PEER)])
    assert kernel.route_digest() == before


def test_the_digest_of_the_last_reading_is_the_route_digest(kernel: KernelPort) -> None:
    """The converged record hashes the verification's reading (dumped_digest); the next apply
    compares it with route_digest: on a node with or without nexthop objects they agree."""
    kernel.read_links()
    routes = kernel.read_routes()
    assert kernel.dumped_digest(routes) == kernel.route_digest()
    one = Nexthop(7, 4, ip_address("172.18.0.11"), "eth0", 75)
    assert errnos(kernel.write_routes([("add", one)])) == [None]
    routes = kernel.read_routes()
    assert kernel.dumped_digest(routes) == kernel.route_digest()
    kernel.write_routes([("del", one)])


def test_nexthop_objects_and_the_routes_through_them(kernel: KernelPort) -> None:
    kernel.read_links()
    gateway = ip_address("172.18.0.11")
    one = Nexthop(7, 4, gateway, "eth0", 75)
    through = PEER._replace(special=RouteSpecial(nh_id=7))
    before = kernel.route_digest()
    # the route before its object: refused; the object, then the route: both made
    assert errnos(kernel.write_routes([("add", through)])) == [errno.EINVAL]
    assert errnos(kernel.write_routes([("add", one), ("add", through)])) == [None, None]
    assert kernel.read_nexthops() == (one,)
    assert ours(kernel) == {through[:7]}  # its gateway and device: the object's
    (seen,) = [r for r in kernel.read_routes() if r.proto == 75]
    assert seen.nh_id == 7
    assert kernel.route_digest() != before
    gone = Nexthop(8, 4, gateway, "vethgone", 75)
    assert errnos(kernel.write_routes([("add", gone), ("add", one)])) == [
        errno.ENODEV,
        errno.EEXIST,
    ]
    moved = one._replace(gateway=ip_address("172.18.0.13"))
    assert errnos(kernel.write_routes([("replace", moved)])) == [None]
    assert {r.gateway for r in kernel.read_routes() if r.proto == 75} == {moved.gateway}
    # deleting the object takes the route through it; a second delete finds nothing to do
    assert errnos(kernel.write_routes([("del", one), ("del", one)])) == [None, None]
    assert kernel.read_nexthops() == () and ours(kernel) == set()
    assert kernel.route_digest() == before


def v4_addresses(kernel: KernelPort, name: str) -> list[tuple[object, int]]:
    """The IPv4 addresses of a link (the real one has an IPv6 link-local address of its own)."""
    (link,) = [link for link in kernel.read_links() if link.name == name]
    return [a for a in link.addresses if a[0].version == 4]


def test_addresses_on_a_pod_veth(kernel: KernelPort) -> None:
    kernel.read_links()
    gateway = Address(POD_VETH, ip_address("10.244.2.1"))
    kernel.add_address(gateway)
    assert v4_addresses(kernel, POD_VETH) == [(ip_address("10.244.2.1"), 32)]
    with pytest.raises(KernelError) as again:
        kernel.add_address(gateway)
    assert again.value.errno == errno.EEXIST
    with pytest.raises(KernelError) as missing:
        kernel.add_address(Address("vethgone", ip_address("10.244.2.1")))
    assert missing.value.errno == errno.ENODEV
    kernel.del_address(gateway)
    assert v4_addresses(kernel, POD_VETH) == []
    with pytest.raises(KernelError) as absent:
        kernel.del_address(gateway)
    assert absent.value.errno == errno.EADDRNOTAVAIL


def test_sysctls_are_read_and_written(kernel: KernelPort) -> None:
    names = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
    for value in ("1", "0"):
        for name in names:
            kernel.set_sysctl(name, value)
        assert [s.value for s in kernel.read_sysctls(names)] == [value, value]
    with pytest.raises(RuntimeFailure):
        kernel.read_sysctls(("net.ipv4.no_such_knob",))
    with pytest.raises(KernelError):
        kernel.set_sysctl("net.ipv4.no_such_knob", "1")


CHAIN = wanted(4, (ip_network("10.244.0.0/16"),))
WIDER = wanted(4, (ip_network("10.244.0.0/16"), ip_network("192.0.2.0/24")))


def nat(iptables: IptablesPort) -> tuple[Masquerade | None, tuple[int, ...]]:
    observed = parse_nat(4, iptables.save_nat(4), iptables.backend)
    assert observed.unread == ()
    return observed.masq, observed.hooks_at


def test_the_chain_is_written_fixed_and_removed_in_one_commit_each(iptables: IptablesPort) -> None:
    iptables.restore(4, restore_payload(CHAIN))
    assert 4 in iptables.nat_families()
    assert nat(iptables) == (CHAIN, (1,))
    iptables.restore(4, fix_payload(WIDER, jumps=1))
    assert nat(iptables) == (WIDER, (1,))
    # a foreign rule, then duplicate jumps around it: the fix keeps the one asked for, in place
    foreign = "-A POSTROUTING -s 198.51.100.0/24 -j MASQUERADE"
    iptables.restore(4, f"*nat\n{foreign}\n{jump_rule()}\nCOMMIT\n")
    assert nat(iptables)[1] == (1, 3)
    iptables.restore(4, fix_payload(None, jumps=2, want_jumps=1, want_at=(2,)))
    assert nat(iptables) == (WIDER, (2,))
    iptables.restore(4, remove_payload(jumps=1))
    assert nat(iptables) == (None, ())
    assert foreign in iptables.save_nat(4).splitlines()


def test_a_payload_iptables_refuses_changes_nothing(iptables: IptablesPort) -> None:
    iptables.restore(4, restore_payload(CHAIN))
    before = nat(iptables)
    in_use = "*nat\n:KIND-MASQ-AGENT - [0:0]\n-X KIND-MASQ-AGENT\nCOMMIT\n"  # still jumped to
    no_such_rule = fix_payload(WIDER, jumps=2, want_jumps=0)
    for payload in (in_use, no_such_rule):
        with pytest.raises(RuntimeFailure, match="exited"):
            iptables.restore(4, payload)
        assert nat(iptables) == before


def test_read_masq_sees_every_backend_and_family(iptables: IptablesPort) -> None:
    iptables.restore(4, restore_payload(CHAIN))
    other = "legacy" if iptables.backend == "nft" else "nft"
    assert other in iptables.others()
    assert iptables.for_backend(other).backend == other
    assert iptables.for_backend(iptables.backend).backend == iptables.backend
    found = {(m.variant, m.version): m for m in read_masq(iptables)}
    assert set(found) >= {(iptables.backend, 4), (iptables.backend, 6), (other, 4), (other, 6)}
    assert found[(iptables.backend, 4)].masq == CHAIN
    assert found[(iptables.backend, 6)].masq is None
    assert found[(other, 4)].masq is None


@pytest.mark.parametrize("kind", ["fake", REAL])
def test_the_xtables_lock_held_fails_a_legacy_restore_not_an_nft_one(
    kind: str,
    make_netns: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = restore_payload(CHAIN)
    if kind == "fake":
        legacy = FakeIptables("legacy", Netfilter(lock_held=True))
        nft = legacy.for_backend("nft")
        _check_lock_held(legacy, nft, payload)
        return
    # A lock file of this test's own (iptables honours XTABLES_LOCKFILE), never the host's.
    lockfile = tmp_path / "xtables.lock"
    monkeypatch.setenv("XTABLES_LOCKFILE", str(lockfile))
    monkeypatch.setattr(iptables_module, "LOCK_WAIT_SECONDS", 1)
    with lockfile.open("w") as held, enter_netns(make_netns()):
        fcntl.flock(held, fcntl.LOCK_EX)
        _check_lock_held(Iptables("legacy"), Iptables("nft"), payload)


def _check_lock_held(legacy: IptablesPort, nft: IptablesPort, payload: str) -> None:
    with pytest.raises(
        RuntimeFailure, match=r"exited 4: Another app is currently holding the xtables lock"
    ):
        legacy.restore(4, payload)
    nft.restore(4, payload)
    assert nat(nft) == (CHAIN, (1,))


@pytest.mark.parametrize("kind", ["fake", REAL])
def test_a_node_locked_by_another_applier_is_refused_after_the_wait(
    kind: str, make_netns: Callable[[], str]
) -> None:
    ns = make_netns() if kind == "real" else "kpt-fake"
    fake = FakeNode(_fake_kernel(), FakeIptables())
    fake.lock_held = True
    opener: NodeOpener = fake if kind == "fake" else open_node
    held = None
    if kind == "real":
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        held = open(apply_lock(ns), "a")  # noqa: SIM115 (held across the checks below)
        fcntl.flock(held, fcntl.LOCK_EX)
    try:
        locked = pytest.raises(RuntimeFailure, match="another kindplan apply holds the lock on")
        with locked, opener(ns, 0.2):
            pass
        with opener(ns, None) as node:  # a read takes no lock
            assert isinstance(node, NodeHandles)
            assert any(link.name == "lo" for link in node.kernel.read_links())
    finally:
        if held is not None:
            held.close()
