#!/usr/bin/env bash
# Throughput and latency of one herd replica, measured with wrk:
# GET /healthz (no auth, the floor of the HTTP stack) against GET /v1/me (bearer-token
# verification on top of it), same wrk settings, same run.
#
# Usage: bench/wrk.sh            (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   DURATION=10s   length of each measured run
#   WARMUP=2s      length of the discarded warm-up run of each endpoint
#   ROUNDS=3       measured rounds (healthz then me, alternating); the table shows medians
#   THREADS=2      wrk threads
#   CONNECTIONS=64 wrk connections
#   CARGO_TARGET_DIR  (default: <repo>/target)
#   HERD_BENCH_PROFILE=release  the cargo profile herd is built with
#   HERD_BIN       a herd binary to run as it is, unbuilt
#   HERD_BENCH_DOCS=docs/benchmarks.md  the file the section is written to
#   NO_DOCS=1      print the table only; leave docs/benchmarks.md alone
#
# It builds herd (release unless told otherwise), starts `herd serve` on 127.0.0.1 (a
# port the kernel picks) with a throw-away SQLite file, signs a user up, logs in, runs wrk, prints a markdown
# table and writes it between the wrk markers in docs/benchmarks.md. The server is
# stopped on exit, whatever happens.
# Backticks in the printf formats below are markdown, not command substitution.
# shellcheck disable=SC2016
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-30}

INVOCATION="bench/wrk.sh (DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- 1. tools and build ------------------------------------------------------------
bench_require_tools
bench_build

# --- 2. server ---------------------------------------------------------------------
bench_init herd-wrk
bench_start_server "$WORK/server.log" \
    --database "sqlite://$WORK/herd.db" \
    --access-ttl 1h
bench_login

# --- 3. wrk ------------------------------------------------------------------------
export HERD_BENCH_TOKEN=$TOKEN
bench_prepare_wrk

# Both endpoints get the very same request (bearer header included), so the difference
# is what /v1/me does on top of the HTTP stack. Warm up each, then alternate rounds: on
# a small shared machine a single run is at the mercy of whatever else runs meanwhile.
declare -A ROUTE=([healthz]=/healthz [me]=/v1/me)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for name in healthz me; do
    bench_warmup "$name" "$BASE${ROUTE[$name]}"
done
for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    for name in healthz me; do
        run_wrk "$name" "$BASE${ROUTE[$name]}"
    done
done
unset HERD_BENCH_TOKEN

# Medians over the rounds, each column on its own.
bench_medians healthz me

# --- 4. report ---------------------------------------------------------------------
RATIO=$(ratio "${RPS[me]}" "${RPS[healthz]}")

TABLE=$(
    printf '| endpoint | requests/s | p50 | p99 |\n'
    printf '|---|---:|---:|---:|\n'
    printf '| `GET /healthz` | %s | %s | %s |\n' "${RPS[healthz]}" "$(fmt_us "${P50[healthz]}")" "$(fmt_us "${P99[healthz]}")"
    printf '| `GET /v1/me` | %s | %s | %s |\n' "${RPS[me]}" "$(fmt_us "${P50[me]}")" "$(fmt_us "${P99[me]}")"
    printf '\nRatio me/healthz (requests/s): **%s**\n' "$RATIO"
)

printf '\n%s\n\n' "$TABLE"

if [[ ${NO_DOCS:-} == 1 ]]; then
    exit 0
fi

SECTION=$(
    printf '<!-- wrk:begin -->\n'
    printf '## HTTP throughput: `/healthz` vs `/v1/me` (wrk)\n\n'
    printf 'One replica (`herd serve`, %s build, SQLite in a temp dir, `--access-ttl 1h`) on\n' "$PROFILE"
    printf '127.0.0.1; wrk and the server share the machine. Both endpoints get the same request,\n'
    printf 'a valid bearer token included, so the gap is the token check and the bigger reply of\n'
    if ((ROUNDS == 1)); then
        printf '`/v1/me`. One round of each.\n\n'
    else
        printf '`/v1/me`. Each figure is the median of %s alternating rounds (healthz, me, healthz, ...).\n\n' "$ROUNDS"
    fi
    printf '%s\n\n' "$TABLE"
    printf -- '- Script: `%s`\n' "$INVOCATION"
    printf -- '- wrk command (each endpoint, after a %s warm-up): `%s`\n' "$WARMUP" "$WRK_CMD"
    printf -- '- Requests/s per round: healthz %s; me %s\n' "${ROUND_RPS[healthz]}" "${ROUND_RPS[me]}"
    bench_provenance "$LOAD_BEFORE"
    printf '<!-- wrk:end -->\n'
)

bench_write_section wrk "$SECTION"
