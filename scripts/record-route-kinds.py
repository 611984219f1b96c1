"""Record the main table's rtnetlink dump of every route kind into tests/unit/data (needs root).

    sudo python3 scripts/record-route-kinds.py

Builds a throw-away namespace, adds one route of each kind kindplan may meet at a destination
it cares about, dumps both families with kindplan's own socket and writes the messages as hex,
so that the parser tests (against pyroute2's decoder) need no root.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kindplan.node import netlink  # noqa: E402
from kindplan.node.netns import enter_netns  # noqa: E402

OUT = ROOT / "tests" / "unit" / "data" / "netlink-route-kinds.json"
SETUP = [
    "link add eth0 type veth peer name eth0p",
    "addr add 172.18.0.12/24 dev eth0",
    "addr add fc00::12/64 dev eth0 nodad",
    "link set eth0p up",
    "link set eth0 up",
    "route add 10.244.1.0/24 via 172.18.0.11 proto 75",  # gateway
    "route add 10.244.2.8 dev eth0 scope host",  # dev-only
    "route add fd00:10:244:1::/64 via fc00::11 proto 75 metric 1024",  # IPv6
    "route add blackhole 10.244.3.0/24",
    "route add unreachable 10.244.4.0/24",
    "route add prohibit 10.244.5.0/24",
    "route add throw 10.244.6.0/24",
    "route add blackhole fd00:10:244:3::/64",
    "route add 10.244.7.0/24 nexthop via 172.18.0.10 weight 1 nexthop via 172.18.0.11 weight 2",
    "route add fd00:10:244:7::/64 nexthop via fc00::10 nexthop via fc00::11",
    "route add 10.244.1.0/24 tos 0x10 via 172.18.0.10",  # TOS: another key than the TOS-0 one
    "route add 10.244.8.0/24 via 172.18.0.11 metric 100 mtu 1400 advmss 1360",  # other metrics
    "route add fd00:10:244:9::/64 via fc00::11 expires 600",  # expiring IPv6 (as RA-learned)
    "nexthop add id 10 via 172.18.0.11 dev eth0",
    "route add 10.244.10.0/24 nhid 10",  # a nexthop object
    "route add 10.244.11.0/24 via inet6 fc00::11 dev eth0",  # RTA_VIA
]


def main() -> int:
    ns = f"kpr-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for command in SETUP:
            subprocess.run(["ip", "-n", ns, *command.split()], check=True)
        with enter_netns(ns):
            nl = netlink.Netlink()
            messages = []
            for family in (socket.AF_INET, socket.AF_INET6):
                body = netlink._RTMSG.pack(family, 0, 0, 0, 254, 0, 0, 0, 0)
                body += netlink._attr(netlink.RTA_TABLE, struct.pack("=I", 254))
                messages += [m.hex() for _, m in nl._dump(netlink.RTM_GETROUTE, body)]
            nl.close()
        listing = subprocess.run(
            ["ip", "-n", ns, "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    doc = {
        "comment": f"main-table dump of both families, kernel {os.uname().release}, "
        "recorded by scripts/record-route-kinds.py after `ip` ran `setup`",
        "setup": SETUP,
        "ip_route_show": listing.splitlines(),
        "routes": messages,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(messages)} messages to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
