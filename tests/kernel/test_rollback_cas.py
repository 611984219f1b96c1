"""Rollback is compare-and-swap for addresses and masquerades too: it removes or restores only
where the kernel still holds what the apply left there, and names what it left alone. And it
leaves no empty nat table that the apply's masquerade made."""

from __future__ import annotations

import pytest
from nodes import Node, kindplan
from shell import sh

pytestmark = pytest.mark.root

VETH = "vetha1079faf"  # pod default/nginx-a's host veth on k8s-guide-worker2; 10.244.2.1 on it


def rollback(node: Node) -> tuple[int, str, str]:
    back = kindplan("rollback", "--netns", node.ns, "--state-dir", str(node.tmp / "state"))
    return back.returncode, back.stdout, back.stderr


def test_an_address_on_a_link_that_took_the_veths_name_is_left_alone(seed_worker2: Node) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    # the pod went, another came with a veth of the same name, and its CNI gave it the address
    sh("ip", "-n", node.ns, "link", "del", VETH)
    sh("ip", "-n", node.ns, "link", "add", VETH, "type", "veth", "peer", "name", "pnew")
    sh("ip", "-n", node.ns, "addr", "add", "10.244.2.1/32", "dev", VETH)
    code, _, err = rollback(node)
    assert code == 0, err
    assert (
        f"left alone: address 10.244.2.1/32 dev {VETH}: changed since generation 1 wrote it; "
        f"to finish by hand, {VETH} is another link than the apply's; if the address should go: "
        f"ip address del 10.244.2.1/32 dev {VETH}"
    ) in err
    assert "inet 10.244.2.1/32" in sh("ip", "-n", node.ns, "addr", "show", VETH)
    # the other veth's address, on the very link the apply put it on, went
    assert "10.244.2.1/32" not in sh("ip", "-n", node.ns, "addr", "show", "veth4b2c9d10")


def test_an_address_on_the_apply_s_own_link_is_removed(seed_worker2: Node) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    code, _, err = rollback(node)
    assert code == 0 and "left alone" not in err, err
    assert "10.244.2.1" not in sh("ip", "-n", node.ns, "addr", "show", VETH)


def test_a_masquerade_chain_edited_since_the_apply_is_left_alone(seed_worker2: Node) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    sh("iptables", "-t", "nat", "-I", "KIND-MASQ-AGENT", "1", "-d", "192.0.2.0/24",
       "-j", "RETURN", ns=node.ns)  # fmt: skip
    edited = node.nat()
    code, _, err = rollback(node)
    assert code == 0, err
    assert (
        "left alone: iptables-nft nat: chain KIND-MASQ-AGENT and 1 jump(s): changed since "
        "generation 1 wrote it"
    ) in err
    assert node.nat() == edited  # the operator's rule, kindplan's chain and hook: all as they were


def test_an_untouched_masquerade_chain_is_removed_with_no_empty_nat_table(
    seed_worker2: Node,
) -> None:
    """iptables-nft made the nat table for kindplan's chain: once the chain goes, so does the
    table it brought (a table that held anything else, or was there before, stays)."""
    node = seed_worker2
    assert "table ip nat" not in sh("nft", "list", "tables", ns=node.ns)
    assert node.apply().returncode == 0
    assert "table ip nat" in sh("nft", "list", "tables", ns=node.ns)
    code, _, err = rollback(node)
    assert code == 0 and "left alone" not in err, err
    assert "KIND-MASQ-AGENT" not in node.nat()
    assert "table ip nat" not in sh("nft", "list", "tables", ns=node.ns)


def test_a_nat_table_that_was_there_before_stays(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("nft", "add", "table", "ip", "nat", ns=node.ns)
    assert node.apply().returncode == 0
    code, _, err = rollback(node)
    assert code == 0, err
    assert "KIND-MASQ-AGENT" not in node.nat()
    assert "table ip nat" in sh("nft", "list", "tables", ns=node.ns)


@pytest.mark.parametrize(
    "filled",
    [("-N", "DOCKER"), ("-A", "POSTROUTING", "-s", "172.17.0.0/16", "-j", "MASQUERADE")],
)
def test_a_nat_table_someone_filled_since_stays(
    seed_worker2: Node, filled: tuple[str, ...]
) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    sh("iptables", "-t", "nat", *filled, ns=node.ns)
    code, _, err = rollback(node)
    assert code == 0, err
    assert "KIND-MASQ-AGENT" not in node.nat()
    assert " ".join(filled[1:]) in node.nat().replace(":DOCKER - [0:0]", "DOCKER")
