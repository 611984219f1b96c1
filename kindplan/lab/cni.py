"""A small CNI runtime: runs a conflist's plugins as libcni does, and keeps libcni's result cache.

The subset of the CNI spec that libcni implements for network configuration lists:
- ADD runs the plugins in order, each getting the previous plugin's result as prevResult, and
  caches the final result;
- CHECK (CNI 0.4.0 and later) runs them in order with the cached result as prevResult;
- DEL runs them in reverse order, with the cached result as prevResult from CNI 0.4.0 on, and
  removes the cache file. It runs even without a cache file (after a failed ADD, say): plugins must
  treat a DEL of something that is not there as success.

The cache file is libcni's cniCacheV1 form, the one kindplan.node.cnicache reads a node's pods from.

Plugins run in the network namespace of the calling thread: enter the node's namespace with
kindplan.node.netns.enter_netns first (setns switches only the calling thread, and a child process
starts in the namespace of the thread that forks it).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kindplan.errors import InvalidInputError, Problem, RuntimeFailure
from kindplan.node.files import write_atomic

CACHE_KIND = "cniCacheV1"
PLUGIN_TIMEOUT = 60.0  # seconds; ptp waits for IPv6 addresses to settle, but a hung plugin must end
# libcni's rule for container IDs; names and IDs end up in a cache file name, types in a path.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class Attachment:
    """One pod interface on the network: what kubelet's container runtime passes to libcni."""

    container_id: str
    netns_path: str  # e.g. /run/netns/<pod ns>
    pod_namespace: str
    pod_name: str
    ifname: str = "eth0"
    # [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], the portMappings capability
    port_mappings: tuple[dict[str, object], ...] = ()

    def cni_args(self) -> list[list[str]]:
        """CNI_ARGS as (key, value) pairs, in the order kubelet's runtime sends them."""
        return [
            ["IgnoreUnknown", "1"],  # plugins must not fail on the K8S_* keys they do not know
            ["K8S_POD_NAMESPACE", self.pod_namespace],
            ["K8S_POD_NAME", self.pod_name],
            ["K8S_POD_INFRA_CONTAINER_ID", self.container_id],
        ]

    def capability_args(self) -> dict[str, Any]:
        return {"portMappings": [dict(m) for m in self.port_mappings]} if self.port_mappings else {}


class CniRuntime:
    """ADD, CHECK and DEL of attachments to the network one conflist file describes."""

    def __init__(
        self,
        conflist: Path,
        cache_dir: Path,
        *,
        plugin_dirs: Sequence[str] = ("/usr/lib/cni",),
        ipam_data_dir: Path | None = None,
    ) -> None:
        self.conflist_path = conflist
        self.cache_dir = cache_dir
        self.plugin_dirs = tuple(plugin_dirs)
        self.ipam_data_dir = ipam_data_dir
        self._raw, doc = _load_conflist(conflist)
        self.name: str = doc["name"]
        self.cni_version: str = doc["cniVersion"]
        self.plugins: list[dict[str, Any]] = doc["plugins"]
        self.disable_check = doc.get("disableCheck") is True

    def cache_path(self, att: Attachment) -> Path:
        return self.cache_dir / f"{self.name}-{att.container_id}-{att.ifname}"

    def add(self, att: Attachment) -> dict[str, Any]:
        """Run the chain's ADD; returns the final result and caches it.

        A failed ADD leaves whatever the plugins made so far: delete() cleans it up, as the
        container runtime does after a failed sandbox setup.
        """
        _check_attachment(att)
        caps = att.capability_args()
        result: dict[str, Any] = {}
        for plugin in self.plugins:
            result = self._exec("ADD", plugin, att, result or None, caps)
            if not result:
                raise RuntimeFailure(f"{plugin['type']} ADD: no result on stdout")
        cache: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": att.container_id,
            "config": base64.b64encode(self._raw).decode("ascii"),  # Go's encoding of []byte
            "ifName": att.ifname,
            "networkName": self.name,
            "netns": att.netns_path,
            "cniArgs": att.cni_args(),
            "result": result,
        }
        if caps:
            cache["capabilityArgs"] = caps
        write_atomic(self.cache_path(att), json.dumps(cache), mode=0o600)
        return result

    def check(self, att: Attachment) -> None:
        """Run the chain's CHECK against the cached result; RuntimeFailure if a plugin objects."""
        _check_attachment(att)
        if _version(self.cni_version) < (0, 4, 0):
            # as libcni: CHECK does not exist before 0.4.0, and the plugins refuse it too
            raise RuntimeFailure(
                f"network {self.name}: cniVersion {self.cni_version} has no CHECK (needs 0.4.0+)"
            )
        if self.disable_check:
            return
        cached = self._read_cache(att)
        if cached is None:
            raise RuntimeFailure(f"{self.cache_path(att)}: no cached result; was it added?")
        for plugin in self.plugins:
            self._exec("CHECK", plugin, att, cached["result"], _caps_of(cached))

    def delete(self, att: Attachment) -> None:
        """Run the chain's DEL in reverse order and drop the cache file; repeating is harmless."""
        _check_attachment(att)
        try:
            cached = self._read_cache(att)
        except RuntimeFailure:
            cached = None  # as libcni: a broken cache entry must not block the DEL that removes it
        # DEL undoes the ADD, so it gets the ADD's capability arguments: portmap without its
        # portMappings deletes nothing.
        caps = _caps_of(cached) if cached else att.capability_args()
        # libcni passes no prevResult on DEL before 0.4.0, where the spec did not have it
        new_enough = _version(self.cni_version) >= (0, 4, 0)
        prev = cached["result"] if cached and new_enough else None
        for plugin in reversed(self.plugins):
            self._exec("DEL", plugin, att, prev, caps)
        self.cache_path(att).unlink(missing_ok=True)

    def _read_cache(self, att: Attachment) -> dict[str, Any] | None:
        path = self.cache_path(att)
        try:
            entry = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"{path}: unreadable CNI cache entry: {e}") from e
        if not isinstance(entry, dict) or entry.get("kind") != CACHE_KIND:
            raise RuntimeFailure(f"{path}: not a {CACHE_KIND} CNI cache entry")
        if not isinstance(entry.get("result"), dict):
            raise RuntimeFailure(f"{path}: CNI cache entry without a result")
        return entry

    def _exec(
        self,
        command: str,
        plugin: dict[str, Any],
        att: Attachment,
        prev: dict[str, Any] | None,
        caps: dict[str, Any],
    ) -> dict[str, Any]:
        """Run one plugin; its JSON result ({} when it prints nothing, as DEL and CHECK do)."""
        kind = str(plugin["type"])
        conf = {**plugin, "name": self.name, "cniVersion": self.cni_version}
        if self.ipam_data_dir is not None and isinstance(conf.get("ipam"), dict):
            # host-local keeps its leases below dataDir. Each kind node has a /run of its own;
            # lab nodes share this machine's file system, so each needs a data dir of its own.
            conf["ipam"] = {**conf["ipam"], "dataDir": str(self.ipam_data_dir)}
        if prev is not None:
            conf["prevResult"] = prev
        wanted = plugin.get("capabilities") or {}
        runtime = {k: v for k, v in caps.items() if wanted.get(k) is True}
        if runtime:
            conf["runtimeConfig"] = runtime
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": att.container_id,
            "CNI_NETNS": att.netns_path,
            "CNI_IFNAME": att.ifname,
            "CNI_PATH": ":".join(self.plugin_dirs),  # where ptp finds its IPAM plugin
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.cni_args()),
            "PATH": os.environ.get("PATH", os.defpath),  # portmap runs iptables
        }
        binary = self._find(kind)
        try:
            proc = subprocess.run(
                [str(binary)],
                input=json.dumps(conf).encode(),
                capture_output=True,
                env=env,
                timeout=PLUGIN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeFailure(f"{kind} {command}: no answer in {PLUGIN_TIMEOUT:g} s") from e
        except OSError as e:
            raise RuntimeFailure(f"{kind} {command}: cannot run {binary}: {e.strerror}") from e
        if proc.returncode != 0:
            raise RuntimeFailure(f"{kind} {command}: {_plugin_error(proc)}")
        if not proc.stdout.strip():
            return {}
        try:
            out = json.loads(proc.stdout)
        except ValueError as e:
            raise RuntimeFailure(f"{kind} {command}: result is not JSON: {e}") from e
        if not isinstance(out, dict):
            raise RuntimeFailure(f"{kind} {command}: result is not a JSON object")
        return out

    def _find(self, kind: str) -> Path:
        for folder in self.plugin_dirs:
            binary = Path(folder) / kind
            if os.access(binary, os.X_OK) and binary.is_file():
                return binary
        raise RuntimeFailure(f"CNI plugin {kind!r} not found in {':'.join(self.plugin_dirs)}")


def _load_conflist(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes (the cache keeps them verbatim) and its checked JSON."""
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot read: {e.strerror}") from e
    except ValueError as e:
        raise InvalidInputError.one(str(path), f"not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidInputError.one(str(path), "not a JSON object")
    problems = []
    if not _SAFE_NAME.fullmatch(str(doc.get("name", ""))):
        problems.append(Problem(f"{path}: name", "missing or not a valid network name"))
    if not _VERSION.fullmatch(str(doc.get("cniVersion", ""))):
        problems.append(Problem(f"{path}: cniVersion", "missing or not a version like 1.0.0"))
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        problems.append(Problem(f"{path}: plugins", "missing or empty"))
    else:
        for i, plugin in enumerate(plugins):
            kind = plugin.get("type") if isinstance(plugin, dict) else None
            if not isinstance(kind, str) or not _SAFE_NAME.fullmatch(kind):
                problems.append(Problem(f"{path}: plugins[{i}].type", "missing or not a name"))
    if problems:
        raise InvalidInputError(problems)
    return raw, doc


def _check_attachment(att: Attachment) -> None:
    problems = [
        Problem(field, f"{value!r} is not a valid name")
        for field, value in (("container_id", att.container_id), ("ifname", att.ifname))
        if not _SAFE_NAME.fullmatch(value)
    ]
    if not att.netns_path:
        problems.append(Problem("netns_path", "empty"))
    if problems:
        raise InvalidInputError(problems)


def _caps_of(cached: dict[str, Any]) -> dict[str, Any]:
    caps = cached.get("capabilityArgs")
    return caps if isinstance(caps, dict) else {}


def _version(text: str) -> tuple[int, ...]:
    match = _VERSION.fullmatch(text)
    return tuple(int(g) for g in match.groups()) if match else (0, 0, 0)


def _plugin_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """A failed plugin's error: the CNI error object on stdout ({code, msg, details}), or stderr."""
    try:
        error = json.loads(proc.stdout)
    except ValueError:
        error = None
    if isinstance(error, dict) and error.get("msg"):
        return ": ".join(str(part) for part in (error["msg"], error.get("details")) if part)
    return proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
