"""An NftTable as text: the whole table as one `nft -f -` transaction (render's policy.nft), laid
out as `nft list table` prints it, elements in address order.

The transaction declares the table, deletes it and declares it again with its content: `nft -f`
applies all of it or nothing, so the table is replaced atomically whether it existed or not, and
no other table is touched.
"""

from __future__ import annotations

from ipaddress import ip_network

from kindplan.core.nfttable import NftSet, NftTable
from kindplan.core.policytable import MARKER


def render_table(table: NftTable) -> str:
    """One `nft -f -` transaction that replaces `table` with exactly this content."""
    head = f"{table.family} {table.name}"
    return f"table {head}\ndelete table {head}\n{render_listing(table)}"


def render_listing(table: NftTable) -> str:
    """The table's declaration, in `nft list table`'s layout (elements on one line), with the
    marker that makes it kindplan's: a table loaded from render's file is the one an apply
    writes, which the next apply finds converged rather than someone else's."""
    blocks = [_set_block(s) for s in table.sets]
    for chain in table.chains:
        lines = [f"\tchain {chain.name} {{"]
        if chain.base:
            lines.append(f"\t\t{chain.base}")
        lines.extend(f"\t\t{rule}" for rule in chain.rules)
        lines.append("\t}")
        blocks.append("\n".join(lines))
    body = "\n\n".join(blocks)
    return f'table {table.family} {table.name} {{\n\tcomment "{MARKER}"\n{body}\n}}\n'


def _set_block(s: NftSet) -> str:
    lines = [f"\tset {s.name} {{", f"\t\ttype {s.type}"]
    if s.flags:
        lines.append(f"\t\tflags {','.join(s.flags)}")
    if s.comment:
        lines.append(f'\t\tcomment "{s.comment}"')
    if s.elements:
        lines.append(f"\t\telements = {{ {', '.join(sorted(s.elements, key=element_order))} }}")
    lines.append("\t}")
    return "\n".join(lines)


def element_order(text: str) -> tuple[tuple[int, int, int, str], ...]:
    """Sort key of an element: addresses and prefixes numerically, ports as numbers."""
    key = []
    for part in text.split(" . "):
        if part.isdigit():
            key.append((1, int(part), 0, ""))
        elif ":" in part or part[:1].isdigit():
            net = ip_network(part, strict=False)
            key.append((0, int(net.network_address), net.prefixlen, ""))
        else:
            key.append((2, 0, 0, part))
    return tuple(key)
