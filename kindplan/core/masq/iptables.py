"""The iptables dialect of masquerade: chain KIND-MASQ-AGENT in the nat table, as kindnetd writes
it. Pure: node/iptables.py runs the tools.

POSTROUTING jumps to the chain for traffic whose destination is not LOCAL; inside, one RETURN per
exempt destination, then MASQUERADE. Rules are read strictly: a line is a rule of the value only
if rendering that rule gives the very same line (kindnetd's comments and all), so a chain reads
as the value kindplan wants exactly when `iptables-save` shows what kindplan would write. The
jump is iptables' hook: POSTROUTING is shared with everyone, so its copies and their positions
are kept (a rollback puts copies back where they were), and the payloads add or delete exactly
kindplan's jump. A payload declares the chain, which makes `iptables-restore --noflush` create
or flush that chain alone, so the chain is replaced in one atomic commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kindplan.core.addresses import format_net, parse_cidr
from kindplan.core.masq.dialects import MasqWords
from kindplan.core.masq.value import EXEMPT, MASQUERADE, MasqObserved, MasqRule, Masquerade

if TYPE_CHECKING:
    from kindplan.core.masq.dialects import MasqDialect, MasqRemove, MasqWrite

MASQ_CHAIN = "KIND-MASQ-AGENT"
# The comments kindnet's masq agent uses, so a node taken over from kindnetd reads the same.
RETURN_COMMENT = "kind-masq-agent: local traffic is not subject to MASQUERADE"
MASQ_COMMENT = "kind-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"
JUMP_COMMENT = (
    "kind-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
    "to our custom KIND-MASQ-AGENT chain"
)
RULES_FILES = {4: "iptables.rules", 6: "ip6tables.rules"}
VARIANTS = frozenset({"", "legacy", "nft"})  # "": the system's own iptables, no variants

_RETURN_HEAD = f"-A {MASQ_CHAIN} -d "
_RETURN_TAIL = f' -m comment --comment "{RETURN_COMMENT}" -j RETURN'
_MASQUERADE = f'-A {MASQ_CHAIN} -m comment --comment "{MASQ_COMMENT}" -j MASQUERADE'


def rule_text(rule: MasqRule) -> str:
    """One rule of the chain exactly as iptables-save prints it."""
    if rule.action == EXEMPT and rule.dst is not None:
        return f"{_RETURN_HEAD}{format_net(rule.dst)}{_RETURN_TAIL}"
    if rule.action == MASQUERADE and rule.dst is None:
        return _MASQUERADE
    # Never made by kindplan (a value it reads always has one of the two shapes above).
    where = f" -d {format_net(rule.dst)}" if rule.dst is not None else ""
    target = "RETURN" if rule.action == EXEMPT else "MASQUERADE"
    return f"-A {MASQ_CHAIN}{where} -j {target}"


def rule_lines(masq: Masquerade) -> tuple[str, ...]:
    """The chain's rules, in order, exactly as iptables-save prints them."""
    return tuple(map(rule_text, masq.rules))


def jump_rule() -> str:
    """The POSTROUTING rule that sends traffic to non-local destinations through the chain."""
    return (
        f'-A POSTROUTING -m addrtype ! --dst-type LOCAL -m comment --comment "{JUMP_COMMENT}" '
        f"-j {MASQ_CHAIN}"
    )


def read_rules(
    version: int, lines: list[str] | tuple[str, ...]
) -> tuple[Masquerade, tuple[str, ...]]:
    """The chain's rules as a value, and the lines that are no rule of one (in their order)."""
    rules: list[MasqRule] = []
    unread: list[str] = []
    for line in lines:
        rule = _read_rule(version, line)
        if rule is None:
            unread.append(line)
        else:
            rules.append(rule)
    return Masquerade(version, tuple(rules)), tuple(unread)


def _read_rule(version: int, line: str) -> MasqRule | None:
    if line == _MASQUERADE:
        return MasqRule(MASQUERADE)
    if not (line.startswith(_RETURN_HEAD) and line.endswith(_RETURN_TAIL)):
        return None
    try:
        net = parse_cidr(line[len(_RETURN_HEAD) : -len(_RETURN_TAIL)])
    except ValueError:
        return None
    rule = MasqRule(EXEMPT, net)
    return rule if net.version == version and rule_text(rule) == line else None


def parse_nat(version: int, saved: str, variant: str = "nft") -> MasqObserved:
    """KIND-MASQ-AGENT as a value and kindplan's jumps, from `iptables-save -t nat`."""
    in_nat, exists, lines, jumps_at, position = False, False, [], [], 0
    jump = jump_rule()
    for line in saved.splitlines():
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat:
            continue
        elif line.startswith(f":{MASQ_CHAIN} "):
            exists = True
        elif line.startswith(f"-A {MASQ_CHAIN} "):
            lines.append(line)
        elif line.startswith("-A POSTROUTING "):
            position += 1
            if line == jump:
                jumps_at.append(position)
    if not exists:
        return MasqObserved(version, None, len(jumps_at), tuple(jumps_at), variant=variant)
    masq, unread = read_rules(version, lines)
    return MasqObserved(version, masq, len(jumps_at), tuple(jumps_at), unread, variant=variant)


def restore_payload(masq: Masquerade) -> str:
    """The chain and its jump as one iptables-restore --noflush payload for a node without them
    (`kindplan render`, and the lab's kindnetd)."""
    lines = ["*nat", f":{MASQ_CHAIN} - [0:0]", *rule_lines(masq), jump_rule(), "COMMIT"]
    return "\n".join(lines) + "\n"


def fix_payload(
    masq: Masquerade | None, jumps: int, want_jumps: int = 1, want_at: tuple[int, ...] = ()
) -> str:
    """The --noflush payload that rewrites the chain (if `masq`) and leaves `want_jumps` jumps,
    at the positions `want_at` if given (a rollback puts jumps back where they were)."""
    lines = ["*nat"]
    if masq is not None:
        lines += [f":{MASQ_CHAIN} - [0:0]", *rule_lines(masq)]  # declaring it flushes it only
    if want_at and jumps != want_jumps:
        # -D with a rule spec deletes the first identical rule, whichever copy should stay: take
        # them all out, then insert each at its place in ascending order, which rebuilds the
        # order they had among the other rules (never deleted by number: those may have moved).
        lines += [_delete(jump_rule())] * jumps
        insert = jump_rule().replace("-A POSTROUTING ", "-I POSTROUTING {} ", 1)
        lines += [insert.format(at) for at in sorted(want_at)]
        lines += [jump_rule()] * max(want_jumps - len(want_at), 0)
    else:
        lines += [jump_rule()] * max(want_jumps - jumps, 0)
        lines += [_delete(jump_rule())] * max(jumps - want_jumps, 0)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def remove_payload(jumps: int) -> str:
    """Delete the chain and its jumps in one commit: declared (so flushed), unreferenced, -X."""
    lines = ["*nat", f":{MASQ_CHAIN} - [0:0]", *[_delete(jump_rule())] * jumps, f"-X {MASQ_CHAIN}"]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def _delete(rule: str) -> str:
    return rule.replace("-A ", "-D ", 1)


def _tables(version: int, variant: str | None = None) -> str:
    table = "ip6tables" if version == 6 else "iptables"
    return f"{table}-{variant}" if variant else table


class _Iptables:
    name = "iptables"
    variants = VARIANTS
    words = MasqWords(
        holder=f"{MASQ_CHAIN} chain",
        hook=f"POSTROUTING jump to {MASQ_CHAIN}",
        path="POSTROUTING (destination not LOCAL)",
        rules=MASQ_CHAIN,
    )

    def read(self, version: int, saved: str, variant: str) -> MasqObserved:
        return parse_nat(version, saved, variant)

    def rule_text(self, rule: MasqRule) -> str:
        return rule_text(rule)

    def held(self, masq: Masquerade) -> Masquerade:
        return masq  # a chain holds its rules as written

    def render_file(self, node: str, masq: Masquerade) -> tuple[str, str]:
        header = (
            f"# kindplan: SNAT of node {node}; iptables-restore --noflush FILE. The last "
            "rule is the POSTROUTING jump,\n# which kindplan apply adds only where it is missing.\n"
        )
        return RULES_FILES[masq.version], header + restore_payload(masq)

    def write_payload(self, change: MasqWrite) -> str:
        return fix_payload(change.masq, change.hooks, change.want_hooks, change.want_at)

    def remove_payload(self, change: MasqRemove) -> str:
        return remove_payload(change.hooks)

    def describe_write(self, change: MasqWrite) -> str:
        parts = []
        if change.masq is not None:
            parts.append(f"chain {MASQ_CHAIN}" + (" (new)" if change.old is None else ""))
        if change.hooks != change.want_hooks:
            parts.append(f"POSTROUTING jump ({change.hooks} present, {change.want_hooks} wanted)")
        return f"{_tables(change.version)} nat: {', '.join(parts)}"

    def describe_remove(self, change: MasqRemove) -> str:
        table = _tables(change.version, change.variant)
        return f"{table} nat: chain {MASQ_CHAIN} and {change.hooks} jump(s)"


DIALECT: MasqDialect = _Iptables()
