#!/usr/bin/env bash
# The main job on the bundled example: set everything up, build the kindnet guide's three-node lab
# from network namespaces (pods made by the real ptp/portmap plugins, kindplan applied on every
# node), prove it works end to end, show a node's plan and routes, then take the lab down.
# Needs root (network namespaces); touches nothing outside the namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
trap 'kindplan lab down --name demo >/dev/null' EXIT
kindplan lab up --name demo "$@"
kindplan lab check --name demo
kindplan lab plan k8s-guide-worker2 --name demo
kindplan lab exec k8s-guide-worker2 --name demo -- ip route
