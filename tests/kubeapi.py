"""A small fake kube-apiserver for the tests of kindplan/inputs/kubewatch.py, on loopback.

No real API server can run where these tests run, so this one serves the hand-assembled responses
in tests/data/kube (see the README there) in kube-apiserver's wire format: compact JSON bodies,
`Content-Type: application/json`, and a watch as a chunked stream of one event per line that ends
at `timeoutSeconds`, after an ERROR event, or when the server stops. It serves GET /api/v1/nodes,
/api/v1/namespaces, /api/v1/pods (with `fieldSelector=spec.nodeName=...`) and
/apis/networking.k8s.io/v1/networkpolicies, each as a list or, with `watch=true` or `watch=1`,
as a watch fed by the test (`send`); a resource in `forbidden` is refused (403) as without RBAC.
It checks the bearer token and records every request, so a test can assert what the client sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DATA = Path(__file__).parent / "data" / "kube"
TOKEN = "kindplan-test-token-3f9a1c"
PATHS = {
    "/api/v1/nodes": "nodes",
    "/api/v1/namespaces": "namespaces",
    "/api/v1/pods": "pods",
    "/apis/networking.k8s.io/v1/networkpolicies": "networkpolicies",
}
RESOURCES = tuple(PATHS.values())


def load(name: str) -> Any:
    """A recorded list (tests/data/kube/NAME), as parsed JSON."""
    return json.loads((DATA / name).read_text())


def events(name: str) -> list[dict[str, Any]]:
    """The watch events of tests/data/kube/NAME (one JSON object per line)."""
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def wire(obj: Any) -> bytes:
    """JSON as kube-apiserver writes it: compact, ended by a newline."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A v1 Status object, the body of every error response."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def write_kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    """A kubeconfig with one cluster at `server` and bearer-token auth (JSON is valid YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kind-fake", "cluster": {"server": server}}],
        "users": [{"name": "kindplan", "user": {"token": token}}],
        "contexts": [
            {"name": "kind-fake", "context": {"cluster": "kind-fake", "user": "kindplan"}}
        ],
        "current-context": "kind-fake",
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    authorization: str | None

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in {"true", "1"}


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata", {})
    return (metadata.get("namespace", ""), metadata.get("name", ""))


class FakeKubeAPI:
    """The fake server: `start()`, feed watch events with `send()`, `stop()` (or use `with`)."""

    def __init__(
        self,
        nodes: Any = None,
        pods: Any = None,
        token: str = TOKEN,
        *,
        namespaces: Any = None,
        policies: Any = None,
    ) -> None:
        self.token = token
        self.requests: list[Request] = []
        self._cond = threading.Condition()
        self._lists = {
            "nodes": nodes if nodes is not None else load("nodelist.json"),
            "namespaces": namespaces if namespaces is not None else load("namespacelist.json"),
            "pods": pods if pods is not None else load("podlist-kind-worker.json"),
            "networkpolicies": policies if policies is not None else load("networkpolicylist.json"),
        }
        self._pending: dict[str, deque[bytes]] = {r: deque() for r in RESOURCES}
        self._generation = dict.fromkeys(RESOURCES, 0)  # the newest watch of each takes the events
        self.forbidden: set[str] = set()  # resources answered 403, as without the RBAC for them
        self._stopping = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kubeapi"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch, stop serving and wait for the handler threads."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()  # joins the handler threads (block_on_close)

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(path, self.url, self.token)

    # -- what the test does ------------------------------------------------------------------

    def send(self, resource: str, event: dict[str, Any]) -> None:
        """Queue a watch event for the current (or next) watch, and update the list to match."""
        with self._cond:
            self._apply(resource, event)
            self._pending[resource].append(wire(event))
            self._cond.notify_all()

    def set_list(self, resource: str, doc: Any) -> None:
        """Change the state without an event, as if the client missed the events in between."""
        with self._cond:
            self._lists[resource] = doc

    def wait_for(
        self, what: str, test: Callable[[list[Request]], bool], timeout: float = 5
    ) -> None:
        """Wait until the requests seen pass `test` (fail the test after `timeout` seconds)."""
        with self._cond:
            if not self._cond.wait_for(lambda: test(self.requests), timeout):
                seen = [(r.path, r.query) for r in self.requests]
                raise AssertionError(f"the fake API server never saw {what}; it saw {seen}")

    def lists(self, resource: str) -> list[Request]:
        return [r for r in self.requests if PATHS.get(r.path) == resource and not r.watch]

    # -- what the handlers do ----------------------------------------------------------------

    def _apply(self, resource: str, event: dict[str, Any]) -> None:
        obj, kind = event.get("object"), event.get("type")
        if kind not in {"ADDED", "MODIFIED", "DELETED"} or not isinstance(obj, dict):
            return
        doc = self._lists[resource]
        items = [i for i in doc["items"] if _object_key(i) != _object_key(obj)]
        if kind != "DELETED":
            item = {k: v for k, v in obj.items() if k not in {"kind", "apiVersion"}}
            items = sorted([*items, item], key=_object_key)  # lists come sorted by key
        doc = {**doc, "items": items}
        doc["metadata"] = {"resourceVersion": obj["metadata"]["resourceVersion"]}
        self._lists[resource] = doc

    def _record(self, request: Request) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def _list(self, resource: str, selector: str | None) -> Any:
        with self._cond:
            doc = self._lists[resource]
        if selector and selector.startswith("spec.nodeName="):
            node = selector.partition("=")[2]
            items = [i for i in doc["items"] if i.get("spec", {}).get("nodeName") == node]
            doc = {**doc, "items": items}
        return doc

    def _claim(self, resource: str) -> int:
        with self._cond:
            self._generation[resource] += 1
            self._cond.notify_all()  # an older watch of the same resource ends
            return self._generation[resource]

    def _next_event(self, resource: str, generation: int, deadline: float) -> bytes | None:
        with self._cond:
            while True:
                if self._stopping or self._generation[resource] != generation:
                    return None
                if self._pending[resource]:
                    return self._pending[resource].popleft()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for the handlers: nothing outlives a test
    api: FakeKubeAPI


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as the real server
    server: _Server
    timeout = 10  # an idle keep-alive connection does not hold up server_close() for long

    def do_GET(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        authorization = self.headers.get("Authorization")
        request = Request(url.path, query, authorization)
        api._record(request)
        resource = PATHS.get(url.path)
        if api._stopping:  # as a real server going down: no keep-alive request is served
            self.close_connection = True
            self._send(503, status(503, "ServiceUnavailable", "the server is shutting down"))
        elif authorization != f"Bearer {api.token}":
            self._send(401, status(401, "Unauthorized", "Unauthorized"))
        elif resource is None:
            self._send(404, status(404, "NotFound", "the server could not find the resource"))
        elif resource in api.forbidden:
            message = (
                f'{resource} is forbidden: User "system:serviceaccount:kube-system:kindplan" '
                f'cannot list resource "{resource}" at the cluster scope'
            )
            self._send(403, status(403, "Forbidden", message))
        elif request.watch:
            self._watch(resource, float(query.get("timeoutSeconds", "1800")))
        else:
            self._send(200, api._list(resource, query.get("fieldSelector")))

    def _send(self, code: int, body: Any) -> None:
        data = wire(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, resource: str, timeout: float) -> None:
        api = self.server.api
        generation = api._claim(resource)
        deadline = time.monotonic() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.wfile.flush()
            while (line := api._next_event(resource, generation, deadline)) is not None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                if json.loads(line).get("type") == "ERROR":
                    break  # the API server ends a watch after an error event
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            if api._stopping:
                self.close_connection = True
        except OSError:  # the client went away (interrupted, or closed)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the requests are recorded instead."""
