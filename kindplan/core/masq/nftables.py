"""The nftables dialect of masquerade: kindplan's own table per family. Pure: node/nftables.py
runs `nft`.

    table ip kindplan-masq {            (ip6 for IPv6: one table per family, one value each)
        set no-masquerade {             the exempt destinations: interval, auto-merge
            type ipv4_addr; flags interval; auto-merge; elements = { 10.244.0.0/16, ... }
        }
        chain postrouting {
            type nat hook postrouting priority srcnat + 10; policy accept;
            fib daddr type local accept         local destinations keep their source
            ip daddr @no-masquerade accept      so do the pod subnets and the exclusions
            masquerade                          the rest leaves with the node's address
        }
    }

Priority srcnat + 10 (110): after every nat postrouting chain at srcnat (100): iptables-nft's
and iptables-legacy's POSTROUTING and kube-proxy's nftables `nat-postrouting`. kindplan thereby
decides where KIND-MASQ-AGENT did, jumped to from the end of POSTROUTING: anyone's explicit SNAT
or masquerade (kube-proxy's hairpin, docker's) binds the connection first, and an `accept` here
ends this chain only. kindnet's own table sits at srcnat - 10, before them.

A payload is one `nft -f -` transaction, as knftables writes one: it declares the table (`add`
never fails on an existing one), deletes it and fills it anew. Deleting rather than flushing
resets what a flush keeps (a chain's hook and priority, a set's flags), and the commit is still
atomic: no packet sees the table half written. Nothing outside the table is named.

A table is read strictly from `nft -j list table` (libnftables' JSON, schema version 1): a rule
is one of the value only in the shape rendered here; anything else in the table (another chain,
set, rule, expression nft adds later) is a line not understood, named in the plan and replaced by
the next write, never a crash. The hook is the base chain with the local test first: hooks is
1 when the chain is hooked at nat postrouting, priority srcnat + 10, and its first rule skips
local destinations, else 0. A set merges what it holds (auto-merge), so the value kindplan wants
is held as the set holds it (`held`: merged, sorted); order among exemptions never mattered.

kindnet's `table inet kindnet-ipmasq` (variant "kindnet") is read too, in its own shape, so that
the plan can name it and `--adopt` remove it; a rollback writes it back in that shape.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from kindplan.core.addresses import IPNetwork, format_net
from kindplan.core.masq.dialects import MasqWords
from kindplan.core.masq.value import EXEMPT, MASQUERADE, MasqObserved, MasqRule, Masquerade

if TYPE_CHECKING:
    from kindplan.core.masq.dialects import MasqDialect, MasqRemove, MasqWrite

TABLE = "kindplan-masq"
SET = "no-masquerade"
CHAIN = "postrouting"
PRIORITY = 110  # srcnat + 10
FAMILIES = {4: "ip", 6: "ip6"}
KINDNET = "kindnet"  # the variant naming kindnet's table
KINDNET_TABLE = "kindnet-ipmasq"
KINDNET_PRIORITY = 90  # srcnat - 10
MAX_UNREAD = 64  # a table read back is untrusted: at most this many lines named
LOCAL_COMMENT = "kindplan: local destinations keep their source"
EXEMPT_COMMENT = "kindplan: pod subnets and exclusions keep their source"
MASQ_COMMENT = "kindplan: the rest leaves with the node's address"


class Shape(NamedTuple):
    """Where a table of one variant is and what its chain holds."""

    family: str  # the table's family: ip, ip6, inet
    table: str
    sets: dict[int, str]  # the set of exempt destinations of each family it masquerades
    priority: int
    hook_rules: tuple[str, ...]  # the rules before the exemptions, part of the hook


def shape(version: int, variant: str) -> Shape:
    """The table that holds IPv`version`'s masquerade in `variant` ("" kindplan's, "kindnet")."""
    if variant == KINDNET:
        sets = {4: "noMasqV4", 6: "noMasqV6"}
        return Shape("inet", KINDNET_TABLE, sets, KINDNET_PRIORITY, ("ct", "local"))
    return Shape(FAMILIES[version], TABLE, {version: SET}, PRIORITY, ("local",))


def held(masq: Masquerade) -> Masquerade:
    """The value as kindplan's table holds it once written: the exemptions as the set merges
    them (sorted, overlaps and neighbours joined, as prefixes), then the masquerade."""
    nets = _collapse(masq.exempt)
    return Masquerade(masq.version, (*(MasqRule(EXEMPT, n) for n in nets), MasqRule(MASQUERADE)))


def _collapse(nets: tuple[IPNetwork, ...] | list[IPNetwork]) -> list[IPNetwork]:
    return list(ipaddress.collapse_addresses(nets)) if nets else []  # type: ignore[type-var]


# -- writing -----------------------------------------------------------------------------------


def _addr_type(version: int) -> str:
    return "ipv4_addr" if version == 4 else "ipv6_addr"


def _elements(nets: list[IPNetwork]) -> str:
    return f" elements = {{ {', '.join(map(format_net, nets))} }};" if nets else ""


def table_payload(masq: Masquerade, hooks: int = 1) -> str:
    """kindplan's table holding `masq` (its exemptions, then masquerade) as one transaction:
    declared, deleted, made anew. hooks 0: the chain is there but hooks nothing."""
    family, v = FAMILIES[masq.version], masq.version
    hook = "type nat hook postrouting priority srcnat + 10; policy accept; " if hooks > 0 else ""
    lines = [
        f"add table {family} {TABLE}",
        f"delete table {family} {TABLE}",
        f"add table {family} {TABLE}",
        f"add set {family} {TABLE} {SET} {{ type {_addr_type(v)}; flags interval; auto-merge;"
        f"{_elements(_collapse(masq.exempt))} }}",
        f"add chain {family} {TABLE} {CHAIN} {{ {hook}}}",
        *_kindplan_rules(masq),
    ]
    return "\n".join(lines) + "\n"


def _kindplan_rules(masq: Masquerade) -> list[str]:
    family = FAMILIES[masq.version]
    add = f"add rule {family} {TABLE} {CHAIN}"
    lines = [f'{add} fib daddr type local accept comment "{LOCAL_COMMENT}"']
    exempting = False
    for rule in masq.rules:  # kindplan writes exemptions, then masquerade; a rollback may not
        if rule.action == EXEMPT and not exempting:
            lines.append(f'{add} {family} daddr @{SET} accept comment "{EXEMPT_COMMENT}"')
            exempting = True
        elif rule.action == MASQUERADE:
            lines.append(f'{add} masquerade comment "{MASQ_COMMENT}"')
    return lines


def remove_table(version: int, variant: str) -> str:
    """Delete the variant's table in one transaction (declared first: no error if gone)."""
    where = shape(version, variant)
    return f"add table {where.family} {where.table}\ndelete table {where.family} {where.table}\n"


def kindnet_payload(masq: Masquerade, hooks: int = 1) -> str:
    """kindnet's table as kindnet writes it, with IPv`masq.version`'s set holding `masq`'s
    exemptions and the other family's set left as it is: a rollback of --adopt restores each
    family in turn."""
    t = f"inet {KINDNET_TABLE}"
    hook = "type nat hook postrouting priority srcnat - 10; policy accept; " if hooks else ""
    name = shape(masq.version, KINDNET).sets[masq.version]
    nets = _collapse(masq.exempt)
    lines = [
        f"add table {t}",
        f"add set {t} noMasqV4 {{ type ipv4_addr; flags interval; auto-merge; }}",
        f"add set {t} noMasqV6 {{ type ipv6_addr; flags interval; auto-merge; }}",
        f"flush set {t} {name}",
        *([f"add element {t} {name} {{ {', '.join(map(format_net, nets))} }}"] if nets else []),
        f"add chain {t} {CHAIN} {{ {hook}}}",
        f"flush chain {t} {CHAIN}",
        f"add rule {t} {CHAIN} ct state established,related accept",
        f"add rule {t} {CHAIN} fib daddr type local accept",
        f"add rule {t} {CHAIN} ip daddr @noMasqV4 accept",
        f"add rule {t} {CHAIN} ip6 daddr @noMasqV6 accept",
        f"add rule {t} {CHAIN} masquerade",
    ]
    return "\n".join(lines) + "\n"


# -- reading -----------------------------------------------------------------------------------


class _Table:
    """What `nft -j list table` said of one table, sorted into what the value is read from."""

    def __init__(self) -> None:
        self.present = False
        self.sets: dict[str, list[IPNetwork] | None] = {}  # None: a set of another shape
        self.chain: dict[str, Any] | None = None
        self.rules: list[dict[str, Any]] = []
        self.unread: list[str] = []


def parse_table(version: int, listed: str | None, variant: str = "") -> MasqObserved:
    """The masquerade of IPv`version` held in `variant`'s table, from `nft -j list table`'s
    output (None: no such table)."""
    absent = MasqObserved(version, None, backend="nftables", variant=variant)
    if listed is None:
        return absent
    where = shape(version, variant)
    table = _sort(where, listed)
    if not table.present:
        return absent
    rules, hooks = _read_chain(version, where, table)
    unread = tuple(table.unread[:MAX_UNREAD])
    masq = Masquerade(version, tuple(rules))
    return MasqObserved(version, masq, hooks, (), unread, backend="nftables", variant=variant)


def _items(listed: str) -> Iterator[tuple[str, Any]]:
    try:
        doc = json.loads(listed)
    except ValueError:
        yield "?", "nft's output is not JSON"
        return
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        yield "?", "nft's output has no nftables list"
        return
    for item in items:
        if isinstance(item, dict) and len(item) == 1:
            yield next(iter(item.items()))
        else:
            yield "?", _short(item)


def _sort(where: Shape, listed: str) -> _Table:
    table = _Table()
    wanted_sets = {name: v for v, name in where.sets.items()}
    for kind, body in _items(listed):
        if kind == "metainfo":
            continue
        if not isinstance(body, dict):
            table.unread.append(f"{kind}: {_short(body)}")
        elif kind == "table":
            table.present = table.present or body.get("name") == where.table
        elif kind == "set" and body.get("name") in wanted_sets:
            table.sets[body["name"]] = _set_elements(wanted_sets[body["name"]], body)
            if table.sets[body["name"]] is None:
                table.unread.append(f"set {body['name']}: {_short(body)}")
        elif kind == "chain" and body.get("name") == CHAIN:
            table.chain = body
        elif kind == "rule" and body.get("chain") == CHAIN:
            table.rules.append(body)
        else:
            table.unread.append(f"{kind} {body.get('name', body.get('chain', '?'))}")
    return table


def _set_elements(version: int, body: dict[str, Any]) -> list[IPNetwork] | None:
    """A set's elements as networks (merged), None if it is not a set of the shape written."""
    if body.get("type") != _addr_type(version) or "interval" not in _listed(body.get("flags")):
        return None
    nets: list[IPNetwork] = []
    try:
        for elem in body.get("elem", ()):
            nets += _element(elem)
    except (ValueError, TypeError, KeyError):
        return None
    if any(n.version != version for n in nets):
        return None
    return _collapse(nets)


def _element(elem: Any) -> list[IPNetwork]:
    if isinstance(elem, dict) and "elem" in elem:  # an element with a comment or a timeout
        elem = elem["elem"]["val"]
    if isinstance(elem, str):
        return [ipaddress.ip_network(elem)]
    if "prefix" in elem:
        return [ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")]
    first, last = map(ipaddress.ip_address, elem["range"])
    return list(ipaddress.summarize_address_range(first, last))


def _read_chain(version: int, where: Shape, table: _Table) -> tuple[list[MasqRule], int]:
    """The value's rules from the chain, and the hook count; what is not understood goes to
    table.unread."""
    chain = table.chain
    if chain is None:
        return [], 0
    base = "hook" in chain
    if base and not _right_base(chain, where.priority):
        table.unread.append(f"chain {CHAIN}: {_short(_hook_of(chain))}")
    kinds = [_rule_kind(r.get("expr")) for r in table.rules]
    head = tuple(kinds[: len(where.hook_rules)])
    hooked = base and _right_base(chain, where.priority) and head == where.hook_rules
    rest = table.rules[len(where.hook_rules) :] if head == where.hook_rules else table.rules
    rules: list[MasqRule] = []
    for body in rest:
        kind = _rule_kind(body.get("expr"))
        if kind == "masquerade":
            rules.append(MasqRule(MASQUERADE))
        elif kind in (f"exempt {FAMILIES[v]} @{name}" for v, name in where.sets.items()):
            rules += _exempt(version, where, table, kind)
        else:
            table.unread.append(f"rule {body.get('handle', '?')}: {_short(body.get('expr'))}")
    return rules, int(hooked)


def _exempt(version: int, where: Shape, table: _Table, kind: str) -> list[MasqRule]:
    """The exemptions a set rule makes for IPv`version` (another family's set: none)."""
    name = where.sets.get(version)
    if kind != f"exempt {FAMILIES[version]} @{name}":
        return []  # kindnet's rule for the other family: no say over this one
    nets = table.sets.get(name or "")
    if nets is None:
        table.unread.append(f"rule: {kind} (no set {name} of the shape written)")
        return []
    return [MasqRule(EXEMPT, n) for n in nets]


def _hook_of(chain: dict[str, Any]) -> dict[str, Any]:
    return {k: chain.get(k) for k in ("type", "hook", "prio", "policy")}


def _right_base(chain: dict[str, Any], priority: int) -> bool:
    return _hook_of(chain) == {
        "type": "nat",
        "hook": "postrouting",
        "prio": priority,
        "policy": "accept",
    }


def _rule_kind(expr: Any) -> str:
    """What a rule does, in the shapes written here ("" for any other)."""
    if expr == [{"masquerade": None}]:
        return "masquerade"
    if not (isinstance(expr, list) and len(expr) == 2 and expr[1] == {"accept": None}):
        return ""
    match = expr[0].get("match") if isinstance(expr[0], dict) else None
    if not isinstance(match, dict) or match.get("op") not in ("==", "in"):
        return ""
    left, right = match.get("left"), match.get("right")
    fib = left.get("fib") if isinstance(left, dict) else None
    if (
        isinstance(fib, dict)
        and fib.get("result") == "type"
        and _listed(fib.get("flags")) == ["daddr"]
        and right == "local"
    ):
        return "local"
    if left == {"ct": {"key": "state"}} and sorted(_listed(right)) == ["established", "related"]:
        return "ct"
    payload = left.get("payload") if isinstance(left, dict) else None
    if (
        isinstance(payload, dict)
        and payload.get("field") == "daddr"
        and payload.get("protocol") in ("ip", "ip6")
        and isinstance(right, str)
        and right.startswith("@")
    ):
        return f"exempt {payload['protocol']} {right}"
    return ""


def _listed(value: Any) -> list[Any]:
    """A JSON field that holds one value or a list of them (nft prints a single flag either way,
    as versions differ), as a list."""
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _short(value: Any) -> str:
    """Something nft said, as one bounded line."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 200 else text[:197] + "..."


# -- the dialect -------------------------------------------------------------------------------


def rule_text(rule: MasqRule) -> str:
    """One rule of the value as kindplan's chain holds it (an exemption is an element of the
    set its rule matches)."""
    if rule.action == MASQUERADE and rule.dst is None:
        return "masquerade"
    if rule.dst is None:
        return "accept"
    family = FAMILIES[rule.dst.version]
    return f"{family} daddr @{SET} accept ({format_net(rule.dst)})"


def render_file(node: str, masq: Masquerade) -> tuple[str, str]:
    """`kindplan render`'s file: the table as `nft -f FILE` takes it."""
    header = (
        f"# kindplan: SNAT of node {node}; nft -f FILE replaces table "
        f"{FAMILIES[masq.version]} {TABLE} (and nothing else) in one transaction.\n"
    )
    return f"{FAMILIES[masq.version]}-{TABLE}.nft", header + table_payload(held(masq))


class _Nftables:
    name = "nftables"
    variants = frozenset({"", KINDNET})
    words = MasqWords(
        holder=f"table {TABLE}",
        hook=f"chain {CHAIN} (nat postrouting, priority srcnat + 10)",
        path=f"{TABLE} {CHAIN} (destination not local)",
        rules=f"{TABLE} {CHAIN}",
    )

    def read(self, version: int, saved: str, variant: str) -> MasqObserved:
        return parse_table(version, saved or None, variant)

    def rule_text(self, rule: MasqRule) -> str:
        return rule_text(rule)

    def held(self, masq: Masquerade) -> Masquerade:
        return held(masq)

    def render_file(self, node: str, masq: Masquerade) -> tuple[str, str]:
        return render_file(node, masq)

    def write_payload(self, change: MasqWrite) -> str:
        masq = change.masq if change.masq is not None else change.old
        if masq is None:  # never planned: a write names what it makes or what stays
            raise ValueError("an nftables write without a value")
        if change.variant == KINDNET:
            return kindnet_payload(masq, change.want_hooks)
        return table_payload(masq, change.want_hooks)

    def remove_payload(self, change: MasqRemove) -> str:
        return remove_table(change.version, change.variant or "")

    def describe_write(self, change: MasqWrite) -> str:
        where = shape(change.version, change.variant or "")
        new = " (new)" if change.old is None else ""
        hooks = ""
        if change.hooks != change.want_hooks and change.old is not None:
            hooks = f", chain {CHAIN} hooked ({change.hooks} present, {change.want_hooks} wanted)"
        return f"nftables: table {where.family} {where.table}{new}{hooks}"

    def describe_remove(self, change: MasqRemove) -> str:
        where = shape(change.version, change.variant or "")
        whose = " (kindnet's, taken over)" if change.variant == KINDNET else ""
        return f"nftables: table {where.family} {where.table}{whose}, IPv{change.version}"


DIALECT: MasqDialect = _Nftables()
