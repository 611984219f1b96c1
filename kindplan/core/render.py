"""Renderers: a DesiredState as the files people and tools read. Pure and deterministic.

- the CNI conflist, from templates/10-kindnet.conflist.j2 (jinja2);
- the masquerade of each family in its backend's payload (core/masq: iptables-restore --noflush
  for the iptables dialect);
- the route batch for `ip -batch -`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from kindplan.core.addresses import format_ip
from kindplan.core.masq.dialects import dialect
from kindplan.core.model import Address, DesiredState
from kindplan.core.nexthops import nexthop_command
from kindplan.core.routes import Route, route_command
from kindplan.core.tunnel import fdb_command, neighbour_command, vxlan_commands

if TYPE_CHECKING:
    import jinja2

CONFLIST_TEMPLATE = "10-kindnet.conflist.j2"
ROUTES_FILE = "routes.batch"
FDB_FILE = "fdb.batch"  # the tunnel's FDB entries, for `bridge -batch` (ip(8) has no FDB command)


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    from kindplan.resources import resource_dir

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(resource_dir("templates")),
        undefined=jinja2.StrictUndefined,  # a typo in the template fails loudly, not silently empty
        keep_trailing_newline=True,
        autoescape=False,  # JSON, not HTML: every value goes through tojson in the template
    )


def render_conflist(desired: DesiredState) -> str:
    """The CNI conflist that kubelet's runtime loads for this node."""
    return _environment().get_template(CONFLIST_TEMPLATE).render(cni=desired.cni)


def address_command(address: Address) -> str:
    return f"address replace {format_ip(address.address)}/{address.prefixlen} dev {address.ifname}"


def render_route_batch(desired: DesiredState) -> str:
    """The node's veth addresses and routes as `ip -batch` lines; addresses first (with
    --cross-subnet vxlan: the tunnel's devices, then addresses, neighbour entries), then the
    nexthop objects before the routes through them."""
    lines = [f"# kindplan: routes and pod veth addresses of node {desired.node}; ip -batch FILE"]
    if desired.tunnels:
        lines[0] += f" (its tunnel devices first); then bridge -batch {FDB_FILE}"
    lines += [line for v in desired.tunnels for line in vxlan_commands(v)]
    lines += [address_command(a) for a in desired.addresses]
    lines += [neighbour_command(n) for n in desired.neighbours]
    lines += [nexthop_command(n) for n in desired.nexthops]
    lines += [_route_line(r) for r in desired.routes]
    return "\n".join(lines) + "\n"


def _route_line(route: Route) -> str:
    """A route as `ip -batch` takes it: one through a nexthop object names only the object
    (ip refuses a gateway or device beside `nhid`)."""
    if not route.nh_id:
        return route_command(route)
    metric = f" metric {route.metric}" if route.metric else ""
    return f"route replace {route.dst} nhid {route.nh_id} proto {route.proto}{metric}"


POLICY_FILE = "policy.nft"  # the NetworkPolicy table (core/policy), for nft -f


def render_files(desired: DesiredState) -> dict[str, str]:
    """Every file `kindplan render` writes for one node, by file name, in a fixed order."""
    files = {}
    if desired.cni.subnets:  # a node without a PodCIDR yet gets no conflist (diff.py says why)
        files[desired.cni.settings.conf_file] = render_conflist(desired)
    files[ROUTES_FILE] = render_route_batch(desired)
    if desired.fdb:
        header = f"# kindplan: the tunnel's FDB entries of node {desired.node}; bridge -batch FILE"
        files[FDB_FILE] = "\n".join([header, *map(fdb_command, desired.fdb)]) + "\n"
    words = dialect(desired.masq_backend)
    for masq in desired.masq:
        name, content = words.render_file(desired.node, masq)
        files[name] = content
    if desired.policy is not None:
        from kindplan.core.policy.render import render_table

        files[POLICY_FILE] = render_table(desired.policy)
    return files
