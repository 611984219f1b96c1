"""Labels and port names checked as the Kubernetes API checks them (apimachinery's validation):
a snapshot may only hold what a cluster could, so that a selector matches here exactly what it
would match there.

Pure. Each check returns why a value is refused, or None.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# A qualified name's name part, and a label value (which may also be empty): 63 characters at
# most, alphanumerics at both ends, '-', '_' and '.' between.
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_NAME_MAX = 63
# A key's prefix: a DNS subdomain (RFC 1123), 253 characters at most.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUBDOMAIN_MAX = 253
# A port name (IANA_SVC_NAME): 15 characters at most, lowercase alphanumerics and '-', with
# at least one letter, no '-' at either end and no two in a row.
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_PORT_NAME_MAX = 15


@lru_cache(maxsize=1 << 16)
def label_key_problem(key: str) -> str | None:
    """Why `key` is no label key ([prefix/]name), or None.

    >>> label_key_problem("app.kubernetes.io/name"), label_key_problem("a/b/c")
    (None, "label key 'a/b/c': at most one '/'")
    """
    prefix, slash, name = key.rpartition("/")
    if "/" in prefix:
        return f"label key {key!r}: at most one '/'"
    if slash and not prefix:
        return f"label key {key!r}: its prefix before '/' is empty"
    if slash and (len(prefix) > _SUBDOMAIN_MAX or not _SUBDOMAIN.fullmatch(prefix)):
        return f"label key {key!r}: its prefix must be a DNS subdomain (lowercase, 253 at most)"
    if len(name) > _NAME_MAX or not _NAME.fullmatch(name):
        return (
            f"label key {key!r}: its name must be 63 characters at most, alphanumeric at both "
            "ends, with '-', '_', '.' between"
        )
    return None


def label_value_problem(value: Any) -> str | None:
    """Why `value` is no label value (a string, maybe empty), or None."""
    if not isinstance(value, str):
        return f"label value {value!r} is not a string"
    return _value_problem(value)


# Keys and values repeat across 150,000 pods; bounded, since a loop runs for months.
@lru_cache(maxsize=1 << 16)
def _value_problem(value: str) -> str | None:
    if value and (len(value) > _NAME_MAX or not _NAME.fullmatch(value)):
        return (
            f"label value {value!r}: 63 characters at most, alphanumeric at both ends, "
            "with '-', '_', '.' between"
        )
    return None


@lru_cache(maxsize=1 << 12)
def port_name_problem(name: str) -> str | None:
    """Why `name` is no container port name (IANA_SVC_NAME), or None.

    >>> port_name_problem("serve-80-tcp"), port_name_problem("80")
    (None, "port name '80' needs at least one letter")
    """
    if len(name) > _PORT_NAME_MAX or not _PORT_NAME.fullmatch(name):
        return (
            f"port name {name!r}: 15 characters at most, lowercase alphanumerics and '-', "
            "alphanumeric at both ends"
        )
    if "--" in name:
        return f"port name {name!r} has '--'"
    if not any(c.isalpha() for c in name):
        return f"port name {name!r} needs at least one letter"
    return None
