"""The Kubernetes API as a source of snapshots: the node list, kept current by watches.

Two daemon threads list and then watch the API server: the nodes (their PodCIDRs and InternalIPs
are the snapshot) and the pods on this node (only a trigger: a pod coming or going is a reason to
reconcile at once; the pods' host veths come from libcni's cache). `read()` builds a NodeList from
what the node thread holds and sends it through the same checks as a node list file
(kubenodes.load_nodes), so the API and a file can never disagree about what is valid.

Threads are started in the constructor only, and a thread inherits the network namespace of the
thread that starts it: construct the source outside `enter_netns`, so the API server is reached
from the host's network even when the loop works on a lab namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kindplan.core.snapshot import Loaded
from kindplan.errors import SourceError
from kindplan.inputs.kubeclient import (
    CONNECT_TIMEOUT,
    LIST_TIMEOUT,
    configuration,
    describe_error,
    http_status,
    import_client,
    new_watch,
)
from kindplan.inputs.kubenodes import SOURCE, load_nodes, node_name, trim_node

WATCH_GRACE = 30.0  # the client waits this much longer than the server's own watch timeout
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 30.0
SETTLED_SECONDS = 5.0  # a watch that lasted this long (or brought an event) was not a failure
CLOSE_SECONDS = 2.0
GONE = 410  # the resourceVersion is older than the server's watch window: list again


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
        self._watch = new_watch(source._kubernetes)
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

    def _run(self) -> None:
        """List (when there is no resourceVersion to resume from) and watch, again and again
        until the source closes; a failure is reported and waited out."""
        backoff = _Backoff()
        stopping = self._source._stopping
        while not stopping.is_set():
            with self._lock:
                if self._want_relist:
                    self._want_relist, self._rv, self._consistent = False, None, True
            started, self._events = time.monotonic(), 0
            try:
                error = self._list_and_watch()
            except _Interrupted:
                continue
            with self._lock:
                if stopping.is_set() or self._want_relist:
                    continue  # the failure was the interruption
            lasted = time.monotonic() - started
            settled = self._events > 0 or lasted >= min(
                SETTLED_SECONDS, self._source._watch_timeout
            )
            delay = self._pause(error, settled, backoff)
            if delay:
                stopping.wait(delay)

    def _list_and_watch(self) -> Exception | None:
        """A list if needed, then a watch until it ends: the failure that ended it, if one did."""
        try:
            if self._rv is None:
                self._list()
            self._watch_events()
        except _Interrupted:
            raise
        except Exception as e:  # a watch thread must not die: report, wait, retry
            return e
        finally:
            with self._lock:
                self._response = None
        return None

    def _pause(self, error: Exception | None, settled: bool, backoff: _Backoff) -> float:
        """Seconds to wait before the next attempt (0: none), the failure said on the way."""
        if error is not None and http_status(error) == GONE:
            self._rv, self._consistent = None, True
            self._source._say(f"{self.what}: resourceVersion expired (410 Gone); listing again")
            return 0.0 if settled else backoff.step()
        if error is not None:
            text, delay = describe_error(error), backoff.step()
            self._source._failed(self, text)
            self._source._say(f"{self.what}: {text}; retrying in {delay:g}s")
            return delay
        if settled:
            backoff.reset()
            return 0.0
        delay = backoff.step()  # the server ended the watch at once: do not hammer it
        self._source._say(f"{self.what}: the watch ended at once; again in {delay:g}s")
        return delay

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
        self._kubernetes = import_client()
        settings = configuration(self._kubernetes, kubeconfig)
        self.name = f"{SOURCE} ({settings.host})"
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
            api = client.ApiClient(settings)
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
