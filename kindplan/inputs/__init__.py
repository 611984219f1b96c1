"""Where a cluster's description comes in: every source a command or the watch loop reads (a file,
a folder, stdin, the Kubernetes API) and every kind of object it may hold, turned into the core's
ClusterSnapshot document before the core checks it.

  sources.py    the one place a source is opened: read once (one-shot commands) or watched (the
                loop); the Source protocol the loop reads through; freeze_heap
  kinds.py      the table from an object's `kind` to its converter (a new kind: one converter
                and one row), and parse_snapshot / check_document, bytes or a document in
  converted.py  what a converter makes: a ClusterSnapshot document and where its values came from
  nodes.py      the v1 Node converter (kubectl get nodes, the API's nodes)
  namespaces.py the v1 Namespace converter; pods.py the v1 Pod converter (which pods count);
  policies.py   the NetworkPolicy converter (carried into the document as it is)
  files.py      a file, a folder of files taken together, FileSource (watched with inotify.py)
  stdin.py      StdinSource: a stream of snapshots on stdin
  kubenodes.py  nodes from the API: trimmed, the pod subnet inferred (pure)
  kubestore.py  what the watches hold of the four kinds, which change matters, the List (pure)
  kubeclient.py the Kubernetes client: its configuration, its errors in one line, one list each
  kubewatch.py  KubeSource: the four kinds kept current by list and watch threads

kinds, converted, the converters, kubenodes and kubestore are pure, as the core is (an
import-linter contract).
Nothing is imported here: a command loads only the modules it uses (start-up time).
"""
