"""A lab node as classic kindnetd leaves it, for the take-over scenario (`lab up --kindnetd`).

What kindnetd does (measured against kind's own kindnetd), done here with the plain tools:
one route per peer PodCIDR via its InternalIP with the netlink default protocol (boot), the
KIND-MASQ-AGENT chain with the same rules as kindplan's, the conflist with the same meaning in
kindnetd's own layout (tabs, mtu after ipam). And what it leaves behind because it never deletes
a route: a departed node's route, and a peer's route from before its PodCIDR changed. A lab whose
snapshot asks for nftables (`lab up --kindnetd --masq-backend nftables`) stands for kindnet >=
1.5 instead, which masquerades from its own `table inet kindnet-ipmasq` and has no iptables chain.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kindplan.core.masq.value import Masquerade
from kindplan.core.model import CniConfig, Snapshot
from kindplan.errors import RuntimeFailure
from kindplan.lab.topology import V6_PREFIX, Lab, LabNode, ip, sysctl

# Where kindnetd's leftovers point: PodCIDRs no node has today, on the nodes' own link.
DEPARTED = {4: ("10.244.200.0/24", "172.18.0.250"), 6: ("fd00:10:244:c8::/64", f"{V6_PREFIX}fa")}
OLD_PODCIDR = {4: "10.244.{i}.0/23", 6: "fd00:10:244:{i:x}::/63"}  # a peer's, before it shrank


def leftovers(lab: Lab, node: LabNode) -> list[tuple[str, str]]:
    """(dst, gateway) of the stale routes kindnetd left on `node`."""
    families = (4, 6) if lab.dual_stack else (4,)
    stale = [DEPARTED[v] for v in families]
    peer = next((p for p in lab.nodes if p.name != node.name and p.index % 2 == 0), None)
    if peer is not None:  # an even index: its /23 (/63) starts where its /24 (/64) does
        stale += [
            (OLD_PODCIDR[v].format(i=peer.index), peer.ips[k]) for k, v in enumerate(families)
        ]
    return stale


def as_kindnetd_left_it(lab: Lab, node: LabNode, snapshot: Snapshot, conf_path: Path) -> None:
    """Make `node` what a kindnetd that ran through node changes leaves: see the module doc."""
    from kindplan.core.compiler import compile_desired
    from kindplan.core.masq.iptables import restore_payload
    from kindplan.core.model import HostFacts

    desired = compile_desired(snapshot, node.name, HostFacts())
    for sysctl_ in desired.sysctls:
        sysctl(node.ns, sysctl_.name, sysctl_.value)
    for route in desired.routes:  # no pods yet: these are the peer routes
        ip("-n", node.ns, "route", "add", str(route.dst), "via", str(route.gateway), "dev", "eth0")
    for dst, gateway in leftovers(lab, node):
        ip("-n", node.ns, "route", "add", dst, "via", gateway, "dev", "eth0")
    if snapshot.cluster.masq_backend == "nftables":
        _kindnet_table(node, desired.masq)
        masqs: tuple[Masquerade, ...] = ()
    else:
        masqs = desired.masq
    for masq in masqs:  # classic kindnetd writes iptables
        tool = "ip6tables-restore" if masq.version == 6 else "iptables-restore"
        payload = restore_payload(masq)
        proc = subprocess.run(
            ["ip", "netns", "exec", node.ns, tool, "--noflush"],
            input=payload,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeFailure(f"{tool} in {node.ns}: {proc.stderr.strip()}")
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(kindnetd_conflist(desired.cni))


def _kindnet_table(node: LabNode, masqs: tuple[Masquerade, ...]) -> None:
    """kindnet >= 1.5's table inet kindnet-ipmasq, each family's set holding its exemptions."""
    from kindplan.core.masq.nftables import kindnet_payload

    for masq in masqs:
        proc = subprocess.run(
            ["ip", "netns", "exec", node.ns, "nft", "-f", "-"],
            input=kindnet_payload(masq),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeFailure(f"nft in {node.ns}: {proc.stderr.strip()}")


def kindnetd_conflist(cni: CniConfig) -> str:
    """The conflist's meaning in kindnetd's layout: tab-indented, the mtu after the ipam."""
    routes = [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    versions = {net.version for net in cni.subnets}
    ptp = {
        "type": "ptp",
        "ipMasq": False,
        "ipam": {
            "type": "host-local",
            "dataDir": cni.settings.ipam_data_dir,
            "routes": [r for r, v in zip(routes, (4, 6), strict=True) if v in versions],
            "ranges": [[{"subnet": str(net)}] for net in cni.subnets],
        },
        "mtu": cni.mtu,
    }
    doc = {
        "cniVersion": cni.settings.cni_version,
        "name": cni.settings.network_name,
        "plugins": [ptp, {"type": "portmap", "capabilities": {"portMappings": True}}],
    }
    return "\n" + json.dumps(doc, indent="\t") + "\n"
