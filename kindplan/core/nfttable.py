"""A whole nftables table as a value: what kindplan wants in a table it owns, and what the node
holds in it, so that the two compare and the difference is a plan.

The structure (set declarations, chains and their rules) changes only when policies change; the
elements of the sets change when pods come and go or labels change. A diff that finds the same
structure on both sides is made of element additions and deletions only; any other difference
rewrites the table in one transaction. Rules are held as nft prints them (`nft list table`),
so that a table read back compares equal to the one written.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NftSet:
    name: str
    type: str  # as nft declares it: "ipv4_addr", "ipv4_addr . inet_proto . inet_service"
    flags: tuple[str, ...] = ()  # "interval", sorted
    elements: frozenset[str] = frozenset()  # each as nft prints it: "10.244.1.5", "10.0.0.0/8"
    comment: str = ""


@dataclass(frozen=True, slots=True)
class NftChain:
    name: str
    # A base chain's declaration as nft prints it ("type filter hook forward priority filter;
    # policy accept;"), "" for a regular chain.
    base: str
    rules: tuple[str, ...]  # in order, as nft prints them (comments included)


@dataclass(frozen=True, slots=True)
class NftTable:
    family: str  # "inet", "ip", "ip6"
    name: str
    sets: tuple[NftSet, ...]  # sorted by name
    chains: tuple[NftChain, ...]  # sorted by name

    def structure(self) -> tuple[object, ...]:
        """What changes only with the rules: everything but the sets' elements."""
        return (
            self.family,
            self.name,
            tuple((s.name, s.type, s.flags, s.comment) for s in self.sets),
            self.chains,
        )
