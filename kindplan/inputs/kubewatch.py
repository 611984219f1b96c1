"""The Kubernetes API as a source of snapshots: nodes, namespaces, pods and NetworkPolicies, kept
current by watches.

Four daemon threads list and then watch the API server, one per kind; what they hold is a
kubestore.Store, which tells the changes that matter to this node from those that do not (a pod's
status heartbeat; a pod elsewhere while the cluster has no NetworkPolicy). `read()` builds a List
from the store only when a change that matters came, and sends it through the same checks as a
List file (kubestore.load_cluster), so the API and a file can never disagree about what is valid.
The pods' host veths still come from libcni's cache: an event of a pod on this node wakes the loop
at once.

Threads are started in the constructor only, and a thread inherits the network namespace of the
thread that starts it: construct the source outside `enter_netns`, so the API server is reached
from the host's network even when the loop works on a lab namespace.
"""

from __future__ import annotations

import contextlib
import functools
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
    list_calls,
    new_watch,
)
from kindplan.inputs.kubenodes import SOURCE
from kindplan.inputs.kubestore import NODES, PODS, RESOURCES, Store, load_cluster

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
    """Nodes, namespaces, pods and NetworkPolicies from the Kubernetes API, kept current by a
    watch of each; a change that matters to `node` (kubestore.py) makes a new snapshot and wakes
    the loop, and so does any event of a pod on `node` (its CNI cache entry may have changed)."""

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
        self._store = Store(node)  # what the lists and watches hold; its version: what matters
        # resource -> why its last request failed (what we hold of it may be old), or "connecting"
        # until its first list
        self._errors: dict[str, str] = dict.fromkeys(RESOURCES, "connecting")
        self._failing: set[str] = set()
        self._cached: tuple[int, Loaded] | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._streams: dict[str, _Stream] = {}
        for resource in RESOURCES:
            api = self._kubernetes.client.ApiClient(settings)
            call = list_calls(self._kubernetes, api)[resource]
            self._streams[resource] = _Stream(
                resource,
                api,
                call,
                {},
                self,
                on_list=functools.partial(self._list, resource),
                on_event=functools.partial(self._event, resource),
            )
        for s in self._streams.values():
            s.thread.start()

    # -- called from the threads ---------------------------------------------------------------

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def _failed(self, stream: _Stream, text: str) -> None:
        with self._lock:
            self._errors[stream.what] = text
            self._failing.add(stream.what)
        self._wake()  # the loop reports it now, not at the next interval

    def _succeeded(self, stream: _Stream) -> None:
        with self._lock:
            self._failing.discard(stream.what)

    def _list(self, resource: str, items: list[Any]) -> None:
        with self._lock:
            self._store.replace_all(resource, items)
            everything = self._store.listed == set(RESOURCES)
        if everything:
            self._listed_once.set()
        self._wake()  # also after an unchanged relist: the loop may be waiting for a first list

    def _event(self, resource: str, kind: str, obj: Any) -> None:
        with self._lock:
            changed = self._store.apply(resource, kind, obj)
            local = resource == PODS and self._store.is_local_pod(obj)
        if changed or local:
            self._wake()

    def _wake(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                    os.write(self._wake_w, b"\0")

    def wait_listed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the first list of each kind (so a first read need
        not fail)."""
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
            self._check_listed()
            version, cached = self._store.version, self._cached
            if cached is not None and cached[0] == version:
                return cached[1]
            # The dicts are copied, not the objects: a watch replaces a changed object whole.
            objects = {r: dict(held) for r, held in self._store.objects.items()}
            pods = self._store.pods
            taken = pods.take_dirty()
        loaded = load_cluster(objects, self._pod_subnets, (pods, taken))  # the loop's thread only
        with self._lock:
            self._cached = (version, loaded)
        return loaded

    def _check_listed(self) -> None:
        """SourceError unless every kind was listed and is current (called with the lock held).

        Every kind, not only the nodes: a snapshot without the NetworkPolicies, or without the
        pods they select, would open what they close until the next round.
        """
        for resource in RESOURCES:
            what = "node" if resource == NODES else resource
            if resource not in self._store.listed:
                raise SourceError(f"{SOURCE}: no {what} list yet: {self._errors[resource]}")
        for resource in RESOURCES:
            if resource in self._failing:  # counted and reported by the loop: the last good stays
                held = "the nodes" if resource == NODES else f"the {resource}"
                raise SourceError(f"{SOURCE}: {self._errors[resource]}; {held} listed before stay")

    def reload(self) -> None:
        """Check everything again and list it afresh (the new lists wake the loop)."""
        with self._lock:
            self._cached = None
        for s in self._streams.values():
            s.interrupt(relist=True)

    def close(self) -> None:
        self._stopping.set()
        streams = list(self._streams.values())
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
