#!/usr/bin/env bash
# The main job on the bundled example: set everything up, build the kindnet guide's three-node lab
# from network namespaces (pods made by the real ptp/portmap plugins, kindplan applied on every
# node), prove it works end to end, show a node's plan and routes, then take the lab down.
# Needs root (network namespaces); touches nothing outside the namespaces it creates.
# Arguments go to `kindplan lab up` (e.g. --dual-stack); DEMO_LAB names the lab (default demo).
set -euo pipefail
cd "$(dirname "$0")/.."
LAB="${DEMO_LAB:-demo}"
heading() { printf '\n== %s\n' "$*"; }
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (it creates network namespaces): sudo bash scripts/demo.sh" >&2
  exit 1
fi
# A lab of this name is someone's: refuse before anything, and never take it down.
if ip netns list 2>/dev/null | grep -q "^$LAB-"; then
  echo "demo: a lab named $LAB is already up; it is left as it is. Take it down with" \
    ".venv/bin/kindplan lab down --name $LAB, or run the demo as DEMO_LAB=other bash scripts/demo.sh" >&2
  exit 1
fi

heading "Set-up: the kernel tools, the CNI plugins and kindplan in .venv"
bash scripts/setup.sh
kindplan=.venv/bin/kindplan

heading "Lab up: nodes and pods as namespaces; kindplan applied on each node; ptp + portmap make the pods"
$kindplan lab up --name "$LAB" "$@"
# Only now: a failed `up` has removed what it made, and a refused one must not remove anything.
trap 'heading "Lab down: every namespace and file of the lab removed"; $kindplan lab down --name "$LAB"' EXIT

heading "Check from what listeners see: pod to pod, the hops between, SNAT to the outside, hostPorts"
$kindplan lab check --name "$LAB"

heading "Plan on k8s-guide-worker2: no changes, kindplan wants exactly what the ptp plugin made"
$kindplan lab plan k8s-guide-worker2 --name "$LAB"

heading "Routes of k8s-guide-worker2: peers' PodCIDRs via their InternalIPs, its pods via their veths"
$kindplan lab exec k8s-guide-worker2 --name "$LAB" -- ip route
