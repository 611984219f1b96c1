"""The lab: kind nodes and pods as network namespaces, networked by the real CNI plugins."""
