#!/usr/bin/env bash
# Install the benchmark's peers (idempotent). Prints what it installed or found.
#   - ohpub-download: PyPI package open-humans-api, in its own venv benchmarks/work/peer-venv
#     (its dependencies never touch ohpub's venv);
#   - py-spy (profiler) in benchmarks/work/tools-venv;
#   - wget, curl, aria2c: Debian packages (apt-get, as root).
# A peer that cannot be installed is reported here and shows as "not available" in the table.
set -uo pipefail
cd "$(dirname "$0")"
WORK="$PWD/work"
mkdir -p "$WORK"
PY="${PYTHON:-python3}"
status=0

say() { printf 'setup: %-16s %s\n' "$1" "$2"; }

venv_pkg() {  # venv-dir package [import-name]
  local dir="$1" pkg="$2"
  if [ ! -x "$dir/bin/python" ]; then
    "$PY" -m venv "$dir" || return 1
  fi
  if ! "$dir/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1; then
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$pkg" || return 1
  fi
  "$dir/bin/python" -m pip show "$pkg" 2>/dev/null | awk '/^Version:/ {print $2}'
}

if v=$(venv_pkg "$WORK/peer-venv" open-humans-api); then
  say ohpub-download "open-humans-api $v in $WORK/peer-venv"
else
  say ohpub-download "NOT INSTALLED (pip install open-humans-api failed)"; status=1
fi
if v=$(venv_pkg "$WORK/tools-venv" py-spy); then
  say py-spy "py-spy $v in $WORK/tools-venv"
else
  say py-spy "NOT INSTALLED (profiling with --profile unavailable)"
fi

missing=()
for tool in wget curl aria2c; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  pkgs=()
  for tool in "${missing[@]}"; do
    case "$tool" in aria2c) pkgs+=(aria2) ;; *) pkgs+=("$tool") ;; esac
  done
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1 \
      || say apt "apt-get install ${pkgs[*]} failed"
  else
    say apt "cannot install ${pkgs[*]}: needs apt-get as root"
  fi
fi
for tool in wget curl aria2c; do
  if command -v "$tool" >/dev/null 2>&1; then
    say "$tool" "$("$tool" --version 2>/dev/null | head -1)"
  else
    say "$tool" "NOT INSTALLED"; status=1
  fi
done
exit "$status"
