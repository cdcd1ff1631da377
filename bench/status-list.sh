#!/usr/bin/env bash
# What herd's Token Status List costs at SESSIONS sessions (default a million): raw and
# compressed size, JWT size and build time, for 0 %, 0.1 %, 1 % and 10 % revoked; written
# to the status-list section of docs/benchmarks.md. Fails when it measured nothing.
#
#   bench/status-list.sh                 # release build, a million sessions
#   SESSIONS=1000 ROUNDS=1 bench/status-list.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
SESSIONS=${SESSIONS:-1000000}
ROUNDS=${ROUNDS:-5}

if [[ $PROFILE == release ]]; then
    cargo build -q --release -p herd-identity --example statuslist
    bin=$CARGO_TARGET_DIR/release/examples/statuslist
else
    bin=${STATUSLIST_BIN:-$CARGO_TARGET_DIR/debug/examples/statuslist}
fi
[[ -x $bin ]] || die "no $bin; build it with cargo build -p herd-identity --example statuslist"
load=$(cut -d' ' -f1-3 /proc/loadavg)
table=$("$bin" "$SESSIONS" "$ROUNDS")
rows=$(grep -c "^| $SESSIONS " <<<"$table" || true)
[[ $rows -eq 4 ]] || die "the status list measured nothing: $table"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
section=$(cat <<MD
<!-- status-list:begin -->
## Token Status List size and build time

\`bench/status-list.sh\` (\`SESSIONS=$SESSIONS ROUNDS=$ROUNDS\`, $PROFILE build): one list
of SESSIONS one-bit statuses with a share revoked at spread-out indices; *compressed* is
the ZLIB (best level) bytes, *JWT* the signed \`statuslist+jwt\` as served, *build* one
pack + compress + base64url + Ed25519 signature (the median of ROUNDS). herd builds it
once per revocation change a replica hears of, not per request (docs/security.md).

$table

- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')
- \`nproc\`: $(nproc); load average before the runs: $load
- Commit: $commit
<!-- status-list:end -->
MD
)
bench_write_section status-list "$section"
