"""Where a cluster's description comes in: every source a command or the watch loop reads (a file,
a folder, stdin, the Kubernetes API) and every kind of object it may hold, turned into the core's
ClusterSnapshot document before the core checks it.

  sources.py    the one place a source is opened: read once (one-shot commands) or watched (the
                loop); the Source protocol the loop reads through; freeze_heap
  kinds.py      the table from an object's `kind` to its converter (a new kind: one converter
                and one row), and parse_snapshot / check_document, bytes or a document in
  converted.py  what a converter makes: a ClusterSnapshot document and where its values came from
  nodes.py      the v1 Node converter (kubectl get nodes, the API's nodes)
  files.py      a file, a folder of files taken together, FileSource (watched with inotify.py)
  stdin.py      StdinSource: a stream of snapshots on stdin
  kubenodes.py  nodes from the API as a node list: trimmed, the pod subnet inferred (pure)
  kubeclient.py the Kubernetes client: its configuration, its errors in one line, one list
  kubewatch.py  KubeSource: the nodes kept current by list and watch threads

kinds, converted, nodes and kubenodes are pure, as the core is (an import-linter contract).
Nothing is imported here: a command loads only the modules it uses (start-up time).
"""
