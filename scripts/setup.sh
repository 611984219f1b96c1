#!/usr/bin/env bash
# Installs everything kindplan and its tests need on a Debian or Ubuntu machine: the kernel-facing
# tools (iproute2, iptables, nftables' nft, the reference CNI plugins in /usr/lib/cni) and, in the
# project's own virtual environment (.venv), the package with its test extras. A venv, because Debian's and
# Ubuntu's python3 is "externally managed" (PEP 668): pip refuses to install into it.
#
# KINDPLAN_PYTHON chooses the interpreter that makes the venv (default: python3 on PATH);
# KINDPLAN_VENV its folder (default: .venv). An existing venv is reused and brought up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${KINDPLAN_PYTHON:-python3}"
VENV="${KINDPLAN_VENV:-.venv}"
say() { echo "setup: $*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

packages=()
{ command -v ip && command -v iptables-restore; } >/dev/null 2>&1 || packages+=(iproute2 iptables)
command -v nft >/dev/null 2>&1 || packages+=(nftables)  # the nftables masquerade backend
[ -x /usr/lib/cni/ptp ] || packages+=(containernetworking-plugins)
# Debian keeps venv's bootstrap (ensurepip) of its own python3 in a separate package.
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  say "installing Debian packages: ${packages[*]} (apt-get${SUDO:+, with sudo})"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  rm -rf "$VENV"  # a venv that failed half-way (no bin/python) is made again
  say "creating the virtual environment $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PYTHON" -m venv "$VENV"
fi
# The install is editable (code changes need none): again only when the requirements changed.
stamp="$VENV/.kindplan-setup"
wanted="$(cat pyproject.toml)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  say "kindplan and its test extras are installed in $VENV (pyproject.toml unchanged)"
else
  say "installing kindplan (editable) with its test extras into $VENV: typer, jinja2," \
    "jsonschema, pyroute2, deepdiff, PyYAML, prometheus-client, inotify-simple, kubernetes; pytest," \
    "hypothesis, ruff, mypy, import-linter, pre-commit (a few minutes the first time: about 4" \
    "measured on a busy 2-core machine with pip's cache filled)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  printf '%s\n' "$wanted" >"$stamp"
fi
# An editable install leaves kindplan's modules uncompiled, and this environment may set
# PYTHONDONTWRITEBYTECODE: compile them once, as pip does for a wheel, or every command would
# compile them again (about 0.1 s of a command's start-up).
"$VENV/bin/python" -m compileall -q kindplan
say "done. Run the tests with: $VENV/bin/python -m pytest (as root for the kernel tests);" \
  "kindplan itself is $VENV/bin/kindplan (sudo $VENV/bin/kindplan ... for what needs root)"
