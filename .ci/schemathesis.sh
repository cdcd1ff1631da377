#!/usr/bin/env bash
# Installs schemathesis (pinned) into its own virtualenv when missing and prints the path
# of its `st` executable, for crates/server/tests/it/schemathesis.rs.
set -euo pipefail
venv=${HERD_SCHEMATHESIS_VENV:-/opt/herd-schemathesis}
version=4.32.5
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
    command -v python3 >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3)
    python3 -m venv "$venv" >&2 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && python3 -m venv "$venv") >&2
    "$venv/bin/pip" install -q "schemathesis==$version" >&2
fi
echo "$venv/bin/st"
