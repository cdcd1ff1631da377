#!/usr/bin/env bash
# Instructions a request: herd's `GET /v1/me` (token) and `GET /healthz`, and bench/peer's
# bare axum `/v1/me` sent the very same request, each counted by valgrind's callgrind
# while wrk drives it. A count, not a time: the same binary and load give nearly the
# same figure whatever else the machine is doing, where requests a second on this
# shared 2-core machine spread by 10 % or more from round to round (bench/wrk.sh). So
# this is the figure to compare a change by; bench/wrk.sh says what it is worth.
#
# Each server runs under `valgrind --tool=callgrind --instr-atstart=no`; after a wrk
# warm-up, instrumentation is switched on for one wrk run (`callgrind_control -i on`),
# off after it, and the counters dumped. Instructions a request = every instruction the
# server ran in that window (all its threads, kernel excluded) / the requests wrk
# completed in it. Under valgrind a server runs some 50x slower, so the window holds
# thousands of requests, not millions; the ratio is what is reported.
#
# Usage: bench/instructions.sh   (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   DURATION=15s   the counted wrk run (after a 3 s warm-up)
#   CONNECTIONS=8  wrk connections (one wrk thread)
#   CARGO_TARGET_DIR, HERD_BENCH_PROFILE, HERD_BIN, PEER_BIN, HERD_BENCH_DOCS, NO_DOCS  as bench/wrk.sh
#
# Needs valgrind (installed when missing). It fails when a server ran no instruction or
# wrk completed no request in the counted window.
# Backticks in the printf formats below are markdown, not command substitution.
# shellcheck disable=SC2016
set -euo pipefail

DURATION=${DURATION:-15s}
THREADS=1
CONNECTIONS=${CONNECTIONS:-8}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-120}
INVOCATION="bench/instructions.sh (DURATION=$DURATION CONNECTIONS=$CONNECTIONS)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_require_tools
if ! command -v valgrind >/dev/null 2>&1; then
    log "installing valgrind"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
bench_build
bench_build_peer

bench_init herd-instructions
PEER_PID=
bench_on_exit() {
    if [[ -n $PEER_PID ]]; then
        kill -TERM "$PEER_PID" 2>/dev/null || true
        wait "$PEER_PID" 2>/dev/null || true
    fi
}

# A program that runs `binary` under callgrind, counting nothing until told to.
under_callgrind() { # name binary
    local wrapper=$WORK/$1-under-callgrind
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=%s "%s" "$@"\n' \
        "$WORK/$1.callgrind" "$2" >"$wrapper"
    chmod +x "$wrapper"
    printf '%s' "$wrapper"
}

declare -A PER_REQUEST=() REQUESTS_OF=()
# Counts `name`'s instructions a request while wrk sends GET `url` (with the bearer
# token, if TOKEN is set) to the process `pid`, which `under_callgrind program` started.
count() { # name program pid url
    local name=$1 program=$2 pid=$3 url=$4
    HERD_BENCH_TOKEN=${TOKEN:-} wrk -t1 -c"$CONNECTIONS" -d3s -s "$WORK/bench.lua" "$url" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    HERD_BENCH_TOKEN=${TOKEN:-} wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/bench.lua" "$url" \
        >"$WORK/$name.wrk"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    # Each dump of a process is numbered on from the last: this one is the only new file.
    local before dump= requests total
    before=$(find "$WORK" -maxdepth 1 -name "$program.callgrind.*" | sort)
    callgrind_control -d "$pid" >/dev/null 2>&1
    for _ in $(seq 100); do
        dump=$(comm -13 <(printf '%s\n' "$before") \
            <(find "$WORK" -maxdepth 1 -name "$program.callgrind.*" | sort) | head -n1)
        [[ -n $dump ]] && grep -q '^totals:' "$dump" 2>/dev/null && break
        sleep 0.1
    done
    [[ -n $dump ]] || die "callgrind wrote no dump for $name"
    requests=$(sed -n 's/^WRK_RESULT requests=\([0-9]*\).*/\1/p' "$WORK/$name.wrk")
    total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -n1)
    ((${requests:-0} > 0)) || die "wrk completed no request to $name under callgrind"
    ((${total:-0} > 0)) || die "callgrind counted no instruction of $name"
    REQUESTS_OF[$name]=$requests
    PER_REQUEST[$name]=$((total / requests))
    log "$name: $total instructions over $requests requests: ${PER_REQUEST[$name]} a request"
}

bench_prepare_wrk
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# herd first: its token is the bearer header every server gets.
REAL_HERD=$HERD
HERD=$(under_callgrind herd "$REAL_HERD")
bench_start_server "$WORK/server.log" --database "sqlite://$WORK/herd.db" --access-ttl 1h
bench_login
count herd-token herd "$SERVER_PID" "$BASE/v1/me"
count herd-healthz herd "$SERVER_PID" "$BASE/healthz"
bench_stop_server

bench_start_peer axum-bare "$(under_callgrind peer "$PEER")" bare
count axum-bare peer "$PEER_PID" "$PEER_BASE/v1/me"

TABLE=$(
    printf '| server | instructions a request | of bare axum | requests counted |\n'
    printf '|---|---:|---:|---:|\n'
    for name in axum-bare herd-healthz herd-token; do
        printf '| %s | %s | %s | %s |\n' "$name" "${PER_REQUEST[$name]}" \
            "$(ratio "${PER_REQUEST[$name]}" "${PER_REQUEST[axum-bare]}")" "${REQUESTS_OF[$name]}"
    done
)
printf '\n%s\n\n' "$TABLE"
[[ ${NO_DOCS:-} == 1 ]] && exit 0

SECTION=$(
    printf '<!-- instructions:begin -->\n'
    printf '## Instructions a request (callgrind)\n\n'
    printf 'Each server (%s build) under `valgrind --tool=callgrind`, counting only while one\n' "$PROFILE"
    printf '`wrk -t1 -c%s -d%s` run drives it (after a 3 s warm-up); every instruction the\n' "$CONNECTIONS" "$DURATION"
    printf 'server ran in that window (all its threads, not the kernel'"'"'s) over the requests wrk\n'
    printf 'completed. herd: `herd serve`, SQLite, `--access-ttl 1h`, `GET /v1/me` with a token\n'
    printf 'and `GET /healthz` with the same header; axum-bare: bench/peer'"'"'s bare handler, sent\n'
    printf 'the same request. A count: repeatable where requests a second are not.\n\n'
    printf '%s\n\n' "$TABLE"
    printf -- '- Script: `%s`\n' "$INVOCATION"
    bench_provenance "$LOAD_BEFORE"
    printf '<!-- instructions:end -->\n'
)
bench_write_section instructions "$SECTION"
