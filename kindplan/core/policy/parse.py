"""Read networking.k8s.io/v1 NetworkPolicy objects (dicts, as the API gives them) into the model.

Only a document that is no list of objects, or a policy without metadata.name/namespace, is bad
input (the caller raises it). Anything else the policy says that kindplan cannot understand (an
unknown operator, a port out of range, an except outside its cidr...) is a warning naming where
and what, and the policy fails closed: it keeps its isolation with no rule (model.py's
`problem`). A podSelector that cannot be read selects every pod of the policy's namespace, and
unreadable policyTypes isolate both ways: a policy exists to restrict, so the doubt restricts.
"""

from __future__ import annotations

import re
from ipaddress import ip_network
from typing import Any

from kindplan.core.addresses import IPNetwork
from kindplan.core.policyvalues import (
    EGRESS,
    INGRESS,
    PROTOCOLS,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    Requirement,
)
from kindplan.errors import Problem

_OPERATORS = {"In": True, "NotIn": True, "Exists": False, "DoesNotExist": False}  # needs values
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")
# metadata: a namespace is a DNS label, a policy's name a DNS subdomain, as the API checks them.
# Bad input, not a policy to fail closed: they name its rules in nft's comments, plan and trace.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


class NotUnderstood(ValueError):
    """Something in a policy kindplan cannot read: `where` below the policy, and what."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(what)
        self.where = where
        self.what = what


def policy_key(raw: Any, at: str) -> tuple[str, str] | Problem:
    """The policy's (namespace, name), or the Problem that makes the document bad input."""
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    if not isinstance(raw, dict):
        return Problem(at, "a NetworkPolicy is an object")
    for field, pattern, kind in (
        ("namespace", _DNS_LABEL, "a namespace name (a DNS label)"),
        ("name", _DNS_SUBDOMAIN, "a NetworkPolicy name (a DNS subdomain)"),
    ):
        value = meta.get(field) if isinstance(meta, dict) else None
        if not isinstance(value, str) or not value:
            return Problem(f"{at}.metadata.{field}", f"a NetworkPolicy needs metadata.{field}")
        if not pattern.fullmatch(value):
            return Problem(f"{at}.metadata.{field}", f"{value[:80]!r} is not {kind}")
    assert isinstance(meta, dict)
    return (meta["namespace"], meta["name"])


def parse_policy(raw: dict[str, Any], at: str) -> tuple[NetworkPolicy, Problem | None]:
    """The policy, and the warning that says why it fails closed (None: fully understood)."""
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    selector = LabelSelector()  # the safest reading, until read
    types: tuple[str, ...] = (INGRESS, EGRESS)
    try:
        spec = raw.get("spec", {})
        if not isinstance(spec, dict):
            raise NotUnderstood("spec", "is not an object")
        _known(spec, ("podSelector", "policyTypes", "ingress", "egress"), "spec", "of a spec")
        selector = parse_selector(spec.get("podSelector", {}), "spec.podSelector")
        types = _policy_types(spec)
        ingress = _rules(spec, "ingress", "from") if INGRESS in types else ()
        egress = _rules(spec, "egress", "to") if EGRESS in types else ()
    except NotUnderstood as e:
        problem = Problem(f"{at}.{e.where}", f"{e.what}; policy {namespace}/{name} fails closed")
        return NetworkPolicy(namespace, name, selector, types, problem=problem.what), problem
    return NetworkPolicy(namespace, name, selector, types, ingress, egress), None


def _policy_types(spec: dict[str, Any]) -> tuple[str, ...]:
    raw = spec.get("policyTypes")
    if raw is None or raw == []:
        # The API's default: Ingress always, Egress when the spec has egress rules.
        egress = spec.get("egress")
        return (INGRESS, EGRESS) if isinstance(egress, list) and egress else (INGRESS,)
    if not isinstance(raw, list):
        raise NotUnderstood("spec.policyTypes", "is not a list")
    if len(raw) > 2:  # as the API: more than two is refused, not read as both
        raise NotUnderstood("spec.policyTypes", "names more than two policy types")
    for i, value in enumerate(raw):
        if value not in (INGRESS, EGRESS):
            raise NotUnderstood(f"spec.policyTypes[{i}]", f"{value!r} is not Ingress or Egress")
    return tuple(t for t in (INGRESS, EGRESS) if t in raw)


def _rules(spec: dict[str, Any], field: str, peers_field: str) -> tuple[PolicyRule, ...]:
    raw = spec.get(field)
    if raw is None:
        return ()
    at = f"spec.{field}"
    items = _list(raw, at)
    rules = []
    for i, item in enumerate(items):
        where = f"{at}[{i}]"
        if not isinstance(item, dict):
            raise NotUnderstood(where, "a rule is an object")
        # A field the rule does not have (a typo of `from`, a `to` in an ingress rule) would
        # otherwise leave an absent list: everyone.
        _known(item, (peers_field, "ports"), where, f"of an {field} rule")
        peers = _list(item.get(peers_field), f"{where}.{peers_field}")
        ports = _list(item.get("ports"), f"{where}.ports")
        rules.append(
            PolicyRule(
                tuple(_peer(p, f"{where}.{peers_field}[{j}]") for j, p in enumerate(peers)),
                tuple(_port(p, f"{where}.ports[{j}]") for j, p in enumerate(ports)),
            )
        )
    return tuple(rules)


def _known(raw: dict[str, Any], fields: tuple[str, ...], at: str, of: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - set(fields))
    if unknown:
        raise NotUnderstood(f"{at}.{unknown[0]}", f"is not a field {of}")


def _list(raw: Any, at: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise NotUnderstood(at, "is not a list")
    return raw


def _peer(raw: Any, at: str) -> PolicyPeer:
    if not isinstance(raw, dict):
        raise NotUnderstood(at, "a peer is an object")
    _known(raw, ("podSelector", "namespaceSelector", "ipBlock"), at, "of a peer")
    if "ipBlock" in raw:
        if len(raw) > 1:
            raise NotUnderstood(at, "an ipBlock peer takes no selector")
        return PolicyPeer(ip_block=_ip_block(raw["ipBlock"], f"{at}.ipBlock"))
    if not raw:
        raise NotUnderstood(at, "a peer names a podSelector, a namespaceSelector or an ipBlock")
    pods = raw.get("podSelector")
    namespaces = raw.get("namespaceSelector")
    return PolicyPeer(
        pod_selector=None if pods is None else parse_selector(pods, f"{at}.podSelector"),
        namespace_selector=(
            None if namespaces is None else parse_selector(namespaces, f"{at}.namespaceSelector")
        ),
    )


def _ip_block(raw: Any, at: str) -> IPBlock:
    if not isinstance(raw, dict) or not isinstance(raw.get("cidr"), str):
        raise NotUnderstood(at, "an ipBlock needs a cidr")
    _known(raw, ("cidr", "except"), at, "of an ipBlock")
    cidr = _network(raw["cidr"], f"{at}.cidr")
    excepts = []
    for i, text in enumerate(_list(raw.get("except"), f"{at}.except")):
        where = f"{at}.except[{i}]"
        net = _network(text, where)
        if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:  # type: ignore[arg-type]
            raise NotUnderstood(where, f"{net} does not lie strictly inside {cidr}")
        excepts.append(net)
    return IPBlock(
        cidr, tuple(sorted(set(excepts), key=lambda n: (int(n.network_address), n.prefixlen)))
    )


def _network(text: Any, at: str) -> IPNetwork:
    # The API accepts a CIDR with host bits set (Go's net.ParseCIDR); the network is meant.
    try:
        if not isinstance(text, str) or "/" not in text:
            raise ValueError(text)
        net = ip_network(text, strict=False)
    except ValueError:
        raise NotUnderstood(at, f"{str(text)[:80]!r} is not a CIDR") from None
    if net.version == 6 and net.network_address.ipv4_mapped is not None:
        # ::ffff:a.b.c.d/n: the API's strict validation refuses it, and it would match no
        # IPv4 packet here, where Go's reading may.
        raise NotUnderstood(at, f"{text!r} is an IPv4-mapped IPv6 CIDR")
    return net


def _port(raw: Any, at: str) -> PolicyPort:
    if not isinstance(raw, dict):
        raise NotUnderstood(at, "a port is an object")
    _known(raw, ("protocol", "port", "endPort"), at, "of a port")
    protocol = raw.get("protocol", "TCP")
    if protocol not in PROTOCOLS:
        raise NotUnderstood(f"{at}.protocol", f"{protocol!r} is not TCP, UDP or SCTP")
    port = raw.get("port")
    end = raw.get("endPort")
    if isinstance(port, str):  # IntOrString: a string is a name, never a number
        if not _PORT_NAME.fullmatch(port) or not any(c.isalpha() for c in port) or "--" in port:
            raise NotUnderstood(f"{at}.port", f"{port!r} is not a port name")
        if end is not None:
            raise NotUnderstood(f"{at}.endPort", "an endPort needs a numeric port")
        return PolicyPort(protocol, port)
    if port is None:
        if end is not None:
            raise NotUnderstood(f"{at}.endPort", "an endPort needs a port")
        return PolicyPort(protocol)
    number = _port_number(port, f"{at}.port")
    if end is None:
        return PolicyPort(protocol, number)
    last = _port_number(end, f"{at}.endPort")
    if last < number:
        raise NotUnderstood(f"{at}.endPort", f"{last} is below the port {number}")
    return PolicyPort(protocol, number, last)


def _port_number(raw: Any, at: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise NotUnderstood(at, f"{raw!r} is not a port")
    if not 1 <= int(raw) <= 65535:
        raise NotUnderstood(at, f"{raw} is not a port (1 to 65535)")
    return int(raw)


def parse_selector(raw: Any, at: str) -> LabelSelector:
    """A metav1.LabelSelector, validated as the API validates one; NotUnderstood if not."""
    if raw is None:
        return LabelSelector()
    if not isinstance(raw, dict):
        raise NotUnderstood(at, "a label selector is an object")
    _known(raw, ("matchLabels", "matchExpressions"), at, "of a label selector")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise NotUnderstood(f"{at}.matchLabels", "is not a map")
    for key, value in labels.items():
        _label_key(key, f"{at}.matchLabels")
        _label_value(value, f"{at}.matchLabels.{key}")
    expressions = _list(raw.get("matchExpressions"), f"{at}.matchExpressions")
    requirements = tuple(
        _requirement(e, f"{at}.matchExpressions[{i}]") for i, e in enumerate(expressions)
    )
    return LabelSelector(tuple(sorted(labels.items())), requirements)


def _requirement(raw: Any, at: str) -> Requirement:
    if not isinstance(raw, dict):
        raise NotUnderstood(at, "a match expression is an object")
    key, operator, values = raw.get("key"), raw.get("operator"), raw.get("values") or []
    _label_key(key, f"{at}.key")
    if not isinstance(operator, str) or operator not in _OPERATORS:
        raise NotUnderstood(
            f"{at}.operator", f"{operator!r} is not In, NotIn, Exists, DoesNotExist"
        )
    if not isinstance(values, list):
        raise NotUnderstood(f"{at}.values", "is not a list")
    if _OPERATORS[operator] and not values:
        raise NotUnderstood(f"{at}.values", f"{operator} needs at least one value")
    if not _OPERATORS[operator] and values:
        raise NotUnderstood(f"{at}.values", f"{operator} takes no values")
    for i, value in enumerate(values):
        _label_value(value, f"{at}.values[{i}]")
    return Requirement(str(key), operator, tuple(sorted(set(values))))


def _label_key(key: Any, at: str) -> None:
    """A qualified name: an optional DNS subdomain prefix and a slash, then a name of 1-63."""
    prefix, _, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
    if (
        not isinstance(key, str)
        or not _NAME.fullmatch(name)
        or (prefix and (len(prefix) > 253 or not _PREFIX.fullmatch(prefix)))
        or key.startswith("/")
    ):
        raise NotUnderstood(at, f"{key!r} is not a label key")


def _label_value(value: Any, at: str) -> None:
    if not isinstance(value, str) or (value and not _NAME.fullmatch(value)):
        raise NotUnderstood(at, f"{value!r} is not a label value")
