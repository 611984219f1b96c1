"""The NetworkPolicy model, under the name the other parts of #24 import it by: its values live
in core/policyvalues.py, beside core/model.py, which holds them in Pod and Snapshot (a module of
this package importing core/model.py, and core/model.py importing one of this package, would be
an import circle between siblings: the acyclic contract counts type-only imports)."""

from kindplan.core.policyvalues import (
    EGRESS,
    INGRESS,
    PROTOCOLS,
    ContainerPort,
    IPBlock,
    Labels,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    Requirement,
)

__all__ = [
    "EGRESS",
    "INGRESS",
    "PROTOCOLS",
    "ContainerPort",
    "IPBlock",
    "LabelSelector",
    "Labels",
    "Namespace",
    "NetworkPolicy",
    "PolicyPeer",
    "PolicyPort",
    "PolicyRule",
    "Requirement",
]
