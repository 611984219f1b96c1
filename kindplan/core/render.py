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

if TYPE_CHECKING:
    import jinja2

CONFLIST_TEMPLATE = "10-kindnet.conflist.j2"
ROUTES_FILE = "routes.batch"


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
    """The node's veth addresses and routes as `ip -batch` lines; addresses first, then the
    nexthop objects before the routes through them."""
    lines = [f"# kindplan: routes and pod veth addresses of node {desired.node}; ip -batch FILE"]
    lines += [address_command(a) for a in desired.addresses]
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


def render_files(desired: DesiredState) -> dict[str, str]:
    """Every file `kindplan render` writes for one node, by file name, in a fixed order."""
    files = {}
    if desired.cni.subnets:  # a node without a PodCIDR yet gets no conflist (diff.py says why)
        files[desired.cni.settings.conf_file] = render_conflist(desired)
    files[ROUTES_FILE] = render_route_batch(desired)
    words = dialect(desired.masq_backend)
    for masq in desired.masq:
        name, content = words.render_file(desired.node, masq)
        files[name] = content
    return files
