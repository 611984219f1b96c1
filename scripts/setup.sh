#!/usr/bin/env bash
# Installs everything kindplan and its tests need on a Debian machine: the kernel-facing tools
# (iproute2, iptables, the reference CNI plugins in /usr/lib/cni) and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! { command -v ip && command -v iptables-restore && [ -x /usr/lib/cni/ptp ]; } >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    iproute2 iptables containernetworking-plugins >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# An editable install leaves kindplan's modules uncompiled, and this environment may set
# PYTHONDONTWRITEBYTECODE: compile them once, as pip does for a wheel, or every command would
# compile them again (about 0.1 s of a command's start-up).
python3 -m compileall -q kindplan
