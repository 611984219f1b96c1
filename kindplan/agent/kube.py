"""The Kubernetes API as a source of snapshots: the node list, kept current by watches.

Two daemon threads list and then watch the API server: the nodes (their PodCIDRs and InternalIPs
are the snapshot) and the pods on this node (only a trigger: a pod coming or going is a reason to
reconcile at once; the pods' host veths come from libcni's cache). `read()` builds a NodeList from
what the node thread holds and sends it through the same checks as a node list file
(snapshot.check_document), so the API and a file can never disagree about what is valid.

Threads are started in the constructor only, and a thread inherits the network namespace of the
thread that starts it: construct the source outside `enter_netns`, so the API server is reached
from the host's network even when the loop works on a lab namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from kindplan.core.addresses import IPNetwork
from kindplan.core.snapshot import Loaded, check_document
from kindplan.errors import Problem, SourceError, UsageError, one_line

SOURCE = "kubernetes API"
# kindplan is not on a package index: the extra is installed from a checkout (or a built wheel).
MISSING_CLIENT = (
    "--kube needs the kubernetes client: in a kindplan checkout, pip install -e '.[kube]' "
    "(the .venv of scripts/setup.sh has it)"
)
CONNECT_TIMEOUT = 10.0
LIST_TIMEOUT = 120.0  # a LIST of 5,000 nodes is tens of MB
WATCH_GRACE = 30.0  # the client waits this much longer than the server's own watch timeout
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 30.0
SETTLED_SECONDS = 5.0  # a watch that lasted this long (or brought an event) was not a failure
CLOSE_SECONDS = 2.0
GONE = 410  # the resourceVersion is older than the server's watch window: list again
_CONNECTION = re.compile(
    r"HTTPS?Connection(?:Pool)?\(host='(?P<host>[^']*)', port=(?P<port>\d+)\): "
)
_ERRNO = re.compile(r"\[Errno -?\d+\] ")


# -- pure: raw Node objects to a snapshot ------------------------------------------------------


def trim_node(obj: Any) -> Any:
    """The parts of a v1 Node that a node list is read for (nodelist.py); the rest is dropped.

    5,000 whole nodes would hold hundreds of MB (status.images alone is kilobytes per node), and
    comparing trimmed nodes tells a change that matters from a status heartbeat.
    """
    if not isinstance(obj, dict):
        return obj
    trimmed: dict[str, Any] = {}
    for part, keys in (("metadata", ("name",)), ("spec", ("podCIDR", "podCIDRs"))):
        value = obj.get(part)
        if isinstance(value, dict):
            trimmed[part] = {k: value[k] for k in keys if k in value}
    status = obj.get("status")
    if isinstance(status, dict) and "addresses" in status:
        trimmed["status"] = {"addresses": status["addresses"]}
    return trimmed


def node_name(obj: Any) -> str | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def covering_network(networks: Sequence[IPNetwork]) -> IPNetwork:
    """The smallest network that holds all of `networks` (one family, at least one).

    >>> str(covering_network([ip_network("10.244.1.0/24"), ip_network("10.244.2.0/24")]))
    '10.244.0.0/22'
    """
    bits = networks[0].max_prefixlen
    first = min(int(n.network_address) for n in networks)
    last = max(int(n.broadcast_address) for n in networks)
    host_bits = (first ^ last).bit_length()  # the addresses agree on every bit above these
    address = first >> host_bits << host_bits
    if networks[0].version == 4:
        return IPv4Network((address, bits - host_bits))
    return IPv6Network((address, bits - host_bits))


def infer_pod_subnets(nodes: Iterable[Any]) -> tuple[str, ...]:
    """Per family, the smallest network holding every node's PodCIDRs (IPv4 first).

    Unreadable PodCIDRs are left out here: the node list checks report them.
    """
    by_family: dict[int, list[IPNetwork]] = {}
    for obj in nodes:
        spec = obj.get("spec") if isinstance(obj, dict) else None
        if not isinstance(spec, dict):
            continue
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        for text in cidrs if isinstance(cidrs, list) else []:
            try:
                net = ip_network(text, strict=False)
            except (TypeError, ValueError):
                continue
            by_family.setdefault(net.version, []).append(net)
    return tuple(str(covering_network(by_family[v])) for v in sorted(by_family))


def load_nodes(nodes: Sequence[Any], pod_subnets: Sequence[str] = ()) -> Loaded:
    """Nodes from the API as a snapshot, checked exactly as a node list file is.

    Without `pod_subnets` they are inferred from the nodes, with a warning: an inferred subnet
    grows as nodes join, and the masquerade rules change with it.
    """
    doc = {"apiVersion": "v1", "kind": "NodeList", "items": list(nodes)}
    inferred = () if pod_subnets else infer_pod_subnets(nodes)
    loaded = check_document(doc, source=SOURCE, pod_subnets=tuple(pod_subnets) or inferred)
    if not inferred:
        return loaded
    warning = Problem(
        "--pod-subnet",
        f"not given; inferred {', '.join(inferred)} (the smallest cover of the nodes' PodCIDRs), "
        "which changes as nodes join: give the cluster's pod subnet(s) with --pod-subnet",
    )
    return replace(loaded, warnings=(warning, *loaded.warnings))


def describe_error(error: BaseException) -> str:
    """One line for a failure of the client or the connection (their own texts span lines)."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(error, ApiException):
        message = _status_message(error.body) or error.reason or "no reason given"
        return one_line(f"HTTP {error.status}: {' '.join(str(message).split())}")
    cause = getattr(error, "reason", None)  # urllib3's MaxRetryError wraps the real failure
    if isinstance(cause, BaseException):
        return describe_error(cause)
    args = error.args
    text = args[0] if len(args) > 1 and isinstance(args[0], str) else str(error)
    if match := _CONNECTION.match(text):  # urllib3: "HTTPConnection(host='h', port=1): ..."
        text = f"{match['host']}:{match['port']}: {text[match.end() :]}"
    text = _ERRNO.sub("", text.replace("Failed to establish a new connection", "cannot connect"))
    text = " ".join(text.split()) or type(error).__name__
    return one_line(text if len(text) <= 300 else text[:297] + "...")


def _status_message(body: Any) -> str | None:
    """The message of a Status object in an error response's body, if it holds one."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return None
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) and message else None


def http_status(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


# -- the client ----------------------------------------------------------------------------


def _import_client() -> Any:
    try:
        import kubernetes.client
        import kubernetes.config
        import kubernetes.watch
    except ImportError as e:
        raise UsageError(MISSING_CLIENT) from e
    return kubernetes


def _configuration(kubernetes: Any, kubeconfig: str | None) -> Any:
    """The client's settings: --kubeconfig, else in-cluster, else the default kubeconfig."""
    configuration = kubernetes.client.Configuration()
    in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    default = kubernetes.config.KUBE_CONFIG_DEFAULT_LOCATION  # $KUBECONFIG or ~/.kube/config
    what = "in-cluster config" if in_cluster else f"kubeconfig {kubeconfig or default}"
    hint = " (give --kubeconfig)" if kubeconfig is None and not in_cluster else ""
    if kubeconfig is not None and not os.path.isfile(kubeconfig):
        raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
    try:
        if in_cluster:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            # Never write refreshed credentials back into the user's file.
            kubernetes.config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration, persist_config=False
            )
    except Exception as e:  # the loaders raise YAML, key, type and their own errors alike
        text = " ".join(str(e).split()) or type(e).__name__
        raise UsageError(one_line(f"{what}: {text}{hint}")) from e
    # The threads retry with their own backoff; urllib3's immediate retries would only log
    # warnings to stderr. Keep-alive finds a watch that a proxy dropped without a word.
    configuration.retries = 0
    configuration.keep_alive = True
    return configuration


def _new_watch(kubernetes: Any) -> Any:
    watch = kubernetes.watch.Watch()
    # No return type: an event keeps the object as the raw JSON dict (event["raw_object"], set in
    # Watch.unmarshal_event of client 37.0.2) and is not turned into a V1Node model, which would
    # be most of the CPU at 5,000 nodes. (deserialize=False gives raw dicts too, but then its
    # ERROR branch fails on the missing "raw_object" key.)
    watch.get_return_type = lambda func: None
    return watch


class _Interrupted(Exception):
    """reload() or close() cut the request short."""


class _Backoff:
    def __init__(self) -> None:
        self.delay = FIRST_BACKOFF

    def reset(self) -> None:
        self.delay = FIRST_BACKOFF

    def step(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, MAX_BACKOFF)
        return delay


class _Stream:
    """One resource listed, then watched from the list's resourceVersion, in a daemon thread."""

    def __init__(
        self,
        what: str,
        api: Any,
        call: Callable[..., Any],
        selector: dict[str, str],
        source: KubeSource,
        *,
        on_list: Callable[[list[Any]], None],
        on_event: Callable[[str, Any], None],
    ) -> None:
        self.what = what
        self.api = api  # an ApiClient of its own: no connection is shared between the threads
        self._call = call
        self._selector = selector
        self._source = source
        self._on_list = on_list
        self._on_event = on_event
        self._watch = _new_watch(source._kubernetes)
        self._lock = threading.Lock()
        self._response: Any = None  # the request in flight, for interrupt()
        self._want_relist = False
        self._rv: str | None = None  # where the watch resumes; None: list first
        self._consistent = False  # list from etcd rather than the server's cache
        self._events = 0
        self.thread = threading.Thread(target=self._run, name=f"kube {what}", daemon=True)

    def interrupt(self, *, relist: bool = False) -> None:
        """Cut the request in flight short (the thread then stops or lists again)."""
        with self._lock:
            self._want_relist = self._want_relist or relist
            response = self._response
            conn = getattr(response, "connection", None)
            sock = getattr(conn, "sock", None)
            if sock is not None:
                # As Watch.stop does: a read blocked in another thread returns only this way.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:  # noqa: C901  # fixed on another branch
        backoff = _Backoff()
        stopping = self._source._stopping
        while not stopping.is_set():
            with self._lock:
                if self._want_relist:
                    self._want_relist, self._rv, self._consistent = False, None, True
            started, self._events = time.monotonic(), 0
            error: Exception | None = None
            try:
                if self._rv is None:
                    self._list()
                self._watch_events()
            except _Interrupted:
                continue
            except Exception as e:  # a watch thread must not die: report, wait, retry
                error = e
            finally:
                with self._lock:
                    self._response = None
            with self._lock:
                if stopping.is_set() or self._want_relist:
                    continue  # the failure was the interruption
            lasted = time.monotonic() - started
            settled = self._events > 0 or lasted >= min(
                SETTLED_SECONDS, self._source._watch_timeout
            )
            if error is not None and http_status(error) == GONE:
                self._rv, self._consistent = None, True
                self._source._say(f"{self.what}: resourceVersion expired (410 Gone); listing again")
                if not settled:
                    stopping.wait(backoff.step())
                continue
            if error is not None:
                text, delay = describe_error(error), backoff.step()
                self._source._failed(self, text)
                self._source._say(f"{self.what}: {text}; retrying in {delay:g}s")
                stopping.wait(delay)
            elif settled:
                backoff.reset()
            else:  # the server ended the watch at once: do not hammer it
                delay = backoff.step()
                self._source._say(f"{self.what}: the watch ended at once; again in {delay:g}s")
                stopping.wait(delay)

    def _request(self, **kwargs: Any) -> Any:
        """Send a list or watch request; the response stays reachable for interrupt()."""
        kwargs["_preload_content"] = False
        response = self._call(**kwargs, **self._selector)
        self._source._succeeded(self)
        with self._lock:
            if self._source._stopping.is_set() or self._want_relist:
                response.close()
                response.release_conn()
                raise _Interrupted
            self._response = response
        return response

    def _list(self) -> None:
        # resourceVersion 0: served from the API server's cache, not etcd, which matters when
        # every node of a large cluster lists at once; after a 410 or reload(), a consistent read.
        version = {} if self._consistent else {"resource_version": "0"}
        response = self._request(_request_timeout=(CONNECT_TIMEOUT, LIST_TIMEOUT), **version)
        try:
            body = response.data  # raw JSON: models for 5,000 nodes would take seconds
        finally:
            response.close()
            response.release_conn()
        doc = json.loads(body)
        metadata = doc.get("metadata") if isinstance(doc, dict) else None
        rv = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if not isinstance(rv, str) or not isinstance(doc.get("items"), list):
            raise ValueError("the list response has no items or no resourceVersion")
        self._on_list(doc["items"])
        self._rv, self._consistent = rv, False

    def _watch_events(self) -> None:
        timeout = self._source._watch_timeout
        for event in self._watch.stream(
            self._request,
            resource_version=self._rv,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,  # also keeps Watch from retrying on its own
            _request_timeout=(CONNECT_TIMEOUT, timeout + WATCH_GRACE),
        ):
            obj = event["raw_object"]
            kind = event["type"]
            if kind in {"ADDED", "MODIFIED", "DELETED"}:
                self._on_event(kind, obj)
            metadata = obj.get("metadata") if isinstance(obj, dict) else None
            rv = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
            if isinstance(rv, str) and rv:
                self._rv = rv
            self._events += 1


class KubeSource:
    """Nodes from the Kubernetes API, kept current by a watch; pod events on `node` wake it."""

    def __init__(
        self,
        node: str,
        pod_subnets: Sequence[str] = (),
        kubeconfig: str | None = None,
        *,
        log: Callable[[str], None] | None = None,
        watch_timeout: int = 300,
    ) -> None:
        self._kubernetes = _import_client()
        configuration = _configuration(self._kubernetes, kubeconfig)
        self.name = f"{SOURCE} ({configuration.host})"
        self._watch_timeout = watch_timeout
        self._stopping = threading.Event()
        self._listed_once = threading.Event()
        self._pod_subnets = tuple(pod_subnets)
        self._log = log
        self._lock = threading.Lock()
        self._nodes: dict[str, Any] = {}  # name -> trimmed raw Node
        self._listed = False
        self._error = "connecting"
        self._failing = False  # the node stream's last request failed: what we hold may be old
        self._version = 0  # counts changes of _nodes
        self._cached: tuple[int, Loaded] | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        client = self._kubernetes.client

        def stream(what: str, method: str, selector: dict[str, str], **handlers: Any) -> _Stream:
            api = client.ApiClient(configuration)
            call = getattr(client.CoreV1Api(api), method)
            return _Stream(what, api, call, selector, self, **handlers)

        self._nodes_stream = stream(
            "nodes", "list_node", {}, on_list=self._node_list, on_event=self._node_event
        )
        self._pods_stream = stream(
            f"pods on {node}",
            "list_pod_for_all_namespaces",
            {"field_selector": f"spec.nodeName={node}"},
            on_list=lambda items: self._wake(),
            on_event=lambda kind, obj: self._wake(),
        )
        for s in (self._nodes_stream, self._pods_stream):
            s.thread.start()

    # -- called from the threads ---------------------------------------------------------------

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def _failed(self, stream: _Stream, text: str) -> None:
        if stream is self._nodes_stream:
            with self._lock:
                self._error, self._failing = text, True
            self._wake()  # the loop reports it now, not at the next interval

    def _succeeded(self, stream: _Stream) -> None:
        if stream is self._nodes_stream:
            with self._lock:
                self._failing = False

    def _node_list(self, items: list[Any]) -> None:
        nodes = {}
        for obj in items:
            name = node_name(obj)
            if name is not None:
                nodes[name] = trim_node(obj)
        with self._lock:
            if nodes != self._nodes or not self._listed:
                self._nodes, self._listed = nodes, True
                self._version += 1
        self._listed_once.set()
        self._wake()  # also after an unchanged relist: the loop may be waiting for a first list

    def _node_event(self, kind: str, obj: Any) -> None:
        name = node_name(obj)
        if name is None:
            return
        with self._lock:
            if kind == "DELETED":
                changed = self._nodes.pop(name, None) is not None
            else:
                trimmed = trim_node(obj)
                changed = self._nodes.get(name) != trimmed
                self._nodes[name] = trimmed
            if changed:
                self._version += 1
        if changed:
            self._wake()

    def _wake(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                    os.write(self._wake_w, b"\0")

    def wait_listed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the first node list (so a first read need not fail)."""
        return self._listed_once.wait(timeout)

    # -- the Source protocol ---------------------------------------------------------------------

    def fileno(self) -> int | None:
        return self._wake_r

    def poll(self) -> bool:
        woken = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                woken = True
        return woken

    def read(self) -> Loaded:
        with self._lock:
            if not self._listed:
                raise SourceError(f"{SOURCE}: no node list yet: {self._error}")
            if self._failing:  # counted and reported by the loop, which keeps the last good
                raise SourceError(f"{SOURCE}: {self._error}; the nodes listed before stay")
            version, cached = self._version, self._cached
            if cached is not None and cached[0] == version:
                return cached[1]
            nodes = [self._nodes[name] for name in sorted(self._nodes)]
        loaded = load_nodes(nodes, self._pod_subnets)
        with self._lock:
            self._cached = (version, loaded)
        return loaded

    def reload(self) -> None:
        """Check the nodes again and list them afresh (the new list wakes the loop)."""
        with self._lock:
            self._cached = None
        self._nodes_stream.interrupt(relist=True)

    def close(self) -> None:
        self._stopping.set()
        streams = (self._nodes_stream, self._pods_stream)
        deadline = time.monotonic() + CLOSE_SECONDS
        for s in streams:
            s.interrupt()
        for s in streams:
            # interrupt() again: a request may have been connecting the first time round
            while s.thread.is_alive() and time.monotonic() < deadline:
                s.thread.join(0.05)
                s.interrupt()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
        for s in streams:
            s.api.close()
