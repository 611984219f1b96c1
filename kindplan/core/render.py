"""Renderers: a DesiredState as the files people and tools read. Pure and deterministic.

- the CNI conflist, from templates/10-kindnet.conflist.j2 (jinja2);
- the iptables-restore --noflush payload of the KIND-MASQ-AGENT chain, per family, in the exact
  form iptables-save prints it, so that what is observed can be compared with it line by line;
- the route batch for `ip -batch -`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from kindplan.core.addresses import format_ip
from kindplan.core.model import Address, DesiredState, MasqChain
from kindplan.core.routes import route_command

if TYPE_CHECKING:
    import jinja2

MASQ_CHAIN = "KIND-MASQ-AGENT"
# The comments kindnet's masq agent uses, so a node taken over from kindnetd reads the same.
RETURN_COMMENT = "kind-masq-agent: local traffic is not subject to MASQUERADE"
MASQ_COMMENT = "kind-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"
JUMP_COMMENT = (
    "kind-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
    "to our custom KIND-MASQ-AGENT chain"
)
CONFLIST_TEMPLATE = "10-kindnet.conflist.j2"
ROUTES_FILE = "routes.batch"
RULES_FILES = {4: "iptables.rules", 6: "ip6tables.rules"}


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


def masq_rules(chain: MasqChain) -> tuple[str, ...]:
    """The chain's rules, in order, exactly as iptables-save prints them."""
    returns = (
        f'-A {MASQ_CHAIN} -d {cidr} -m comment --comment "{RETURN_COMMENT}" -j RETURN'
        for cidr in chain.non_masquerade
    )
    # MASQUERADE must stay last: everything not returned above leaves with the node's address.
    return (*returns, f'-A {MASQ_CHAIN} -m comment --comment "{MASQ_COMMENT}" -j MASQUERADE')


def jump_rule() -> str:
    """The POSTROUTING rule that sends traffic to non-local destinations through the chain."""
    return (
        f'-A POSTROUTING -m addrtype ! --dst-type LOCAL -m comment --comment "{JUMP_COMMENT}" '
        f"-j {MASQ_CHAIN}"
    )


def render_masq_payload(chain: MasqChain, *, with_jump: bool) -> str:
    """An iptables-restore --noflush payload for the nat table.

    Declaring the chain makes iptables-restore --noflush create it or flush it (and only it), so
    the whole chain is replaced in one atomic commit; the jump is appended, so it is included only
    where the node does not have it yet.
    """
    lines = ["*nat", f":{MASQ_CHAIN} - [0:0]", *masq_rules(chain)]
    if with_jump:
        lines.append(jump_rule())
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def address_command(address: Address) -> str:
    return f"address replace {format_ip(address.address)}/{address.prefixlen} dev {address.ifname}"


def render_route_batch(desired: DesiredState) -> str:
    """The node's veth addresses and routes as `ip -batch` lines; addresses first."""
    lines = [f"# kindplan: routes and pod veth addresses of node {desired.node}; ip -batch FILE"]
    lines += [address_command(a) for a in desired.addresses]
    lines += [route_command(r) for r in desired.routes]
    return "\n".join(lines) + "\n"


def render_files(desired: DesiredState) -> dict[str, str]:
    """Every file `kindplan render` writes for one node, by file name, in a fixed order."""
    files = {}
    if desired.cni.subnets:  # a node without a PodCIDR yet gets no conflist (diff.py says why)
        files[desired.cni.settings.conf_file] = render_conflist(desired)
    files[ROUTES_FILE] = render_route_batch(desired)
    for chain in desired.masq:
        header = (
            f"# kindplan: SNAT of node {desired.node}; iptables-restore --noflush FILE. The last "
            "rule is the POSTROUTING jump,\n# which kindplan apply adds only where it is missing.\n"
        )
        files[RULES_FILES[chain.version]] = header + render_masq_payload(chain, with_jump=True)
    return files
