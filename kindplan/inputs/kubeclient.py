"""The Kubernetes client (the `kube` extra, imported only for --kube): its configuration from
--kubeconfig or the pod's service account, its failures in one line, and one list of each kind
a snapshot is made of (a one-shot command's whole read of the API; kubewatch.py keeps them
current for the loop).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from kindplan.errors import SourceError, UsageError, one_line
from kindplan.inputs.kubenodes import SOURCE

# kindplan is not on a package index: the extra is installed from a checkout (or a built wheel).
MISSING_CLIENT = (
    "--kube needs the kubernetes client: in a kindplan checkout, pip install -e '.[kube]' "
    "(the .venv of scripts/setup.sh has it)"
)
CONNECT_TIMEOUT = 10.0
LIST_TIMEOUT = 120.0  # a LIST of 5,000 nodes is tens of MB
_CONNECTION = re.compile(
    r"HTTPS?Connection(?:Pool)?\(host='(?P<host>[^']*)', port=(?P<port>\d+)\): "
)
_ERRNO = re.compile(r"\[Errno -?\d+\] ")


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


def import_client() -> Any:
    try:
        import kubernetes.client
        import kubernetes.config
        import kubernetes.watch
    except ImportError as e:
        raise UsageError(MISSING_CLIENT) from e
    return kubernetes


def configuration(kubernetes: Any, kubeconfig: str | None) -> Any:
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
    # The watch threads retry with their own backoff (a one-shot list fails in one line);
    # urllib3's immediate retries would only log warnings to stderr. Keep-alive finds a watch
    # that a proxy dropped without a word.
    configuration.retries = 0
    configuration.keep_alive = True
    return configuration


def new_watch(kubernetes: Any) -> Any:
    watch = kubernetes.watch.Watch()
    # No return type: an event keeps the object as the raw JSON dict (event["raw_object"], set in
    # Watch.unmarshal_event of client 37.0.2) and is not turned into a V1Node model, which would
    # be most of the CPU at 5,000 nodes. (deserialize=False gives raw dicts too, but then its
    # ERROR branch fails on the missing "raw_object" key.)
    watch.get_return_type = lambda func: None
    return watch


def list_calls(kubernetes: Any, api: Any) -> dict[str, Any]:
    """The list (and watch) call of each resource a snapshot is made of (kubestore.RESOURCES)."""
    core = kubernetes.client.CoreV1Api(api)
    networking = kubernetes.client.NetworkingV1Api(api)
    return {
        "nodes": core.list_node,
        "namespaces": core.list_namespace,
        "pods": core.list_pod_for_all_namespaces,
        "networkpolicies": networking.list_network_policy_for_all_namespaces,
    }


def list_cluster(kubeconfig: str | None) -> tuple[str, dict[str, list[Any]]]:
    """The cluster's nodes, namespaces, pods and NetworkPolicies now, as the API returns their
    lists, with the API server's address: one list of each (as kubectl get), for a command that
    runs once."""
    kubernetes = import_client()
    settings = configuration(kubernetes, kubeconfig)
    found: dict[str, list[Any]] = {}
    with kubernetes.client.ApiClient(settings) as api:
        for resource, call in list_calls(kubernetes, api).items():
            try:
                response = call(
                    _preload_content=False, _request_timeout=(CONNECT_TIMEOUT, LIST_TIMEOUT)
                )
                try:
                    body = response.data  # raw JSON: models for 150,000 pods would take long
                finally:
                    response.close()
                    response.release_conn()
            except Exception as e:  # the client raises its own, urllib3's and the socket's
                # An answer of the server concerns the resource (403: no right to list it)
                what = f"{resource}: " if http_status(e) is not None else ""
                raise SourceError(f"{SOURCE} ({settings.host}): {what}{describe_error(e)}") from e
            items = list_items(body)
            if items is None:
                raise SourceError(
                    f"{SOURCE} ({settings.host}): the {resource} list response has no items"
                )
            found[resource] = items
    return settings.host, found


def list_items(body: bytes) -> list[Any] | None:
    """The items of a list response (None: not a list response)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    items = doc.get("items") if isinstance(doc, dict) else None
    return items if isinstance(items, list) else None
