#!/usr/bin/env bash
# Throughput and latency of herd against the peers a Rust user would pick, measured with
# wrk in one run (each server alone while measured; the others idle):
#
#   axum-bare      a bare axum handler answering GET /v1/me with a constant JSON body of
#                  the same shape as herd's (bench/peer, `peer bare`), sent the very
#                  request herd-token gets (its bearer token included, ignored): the
#                  ceiling, so that the ratio is what herd does with the request
#   axum-bare-no-token  the same handler sent the request without the bearer header:
#                  what carrying the token costs any server (shown, in no ratio)
#   herd-healthz   herd's GET /healthz (the floor of herd's HTTP stack), token server
#   herd-token     herd's GET /v1/me, `--sessions token` (a signature check, cached)
#   axum-sessions  axum + tower-sessions + tower-sessions-redis-store (fred, a pool of 4,
#                  its best: PEER_REDIS_POOL=1 carried fewer requests a second),
#                  GET /v1/me with the session cookie (bench/peer, `peer sessions`)
#   herd-shared    herd's GET /v1/me, `--sessions shared` on Redis
#
# and prints the ratios: herd-token / axum-bare (herd's overhead), herd-shared /
# axum-sessions (the stateful design against its usual Rust build), herd-token /
# herd-healthz.
#
# Usage: bench/wrk.sh            (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   DURATION=10s   length of each measured run
#   WARMUP=2s      length of the discarded warm-up run of each server
#   ROUNDS=3       measured rounds, each through every server, the order rotating from
#                  round to round; the table shows medians
#   THREADS=2      wrk threads
#   CONNECTIONS=64 wrk connections
#   REDIS_PORT=6379  Redis on 127.0.0.1 (herd-shared and axum-sessions)
#   CARGO_TARGET_DIR  (default: <repo>/target)
#   HERD_BENCH_PROFILE=release  the cargo profile herd and the peer are built with
#   HERD_BIN       a herd binary to run as it is, unbuilt
#   PEER_BIN       a bench/peer binary to run as it is, unbuilt
#   HERD_BENCH_DOCS=docs/benchmarks.md  the file the section is written to
#   NO_DOCS=1      print the table only; leave docs/benchmarks.md alone
#
# It builds herd and bench/peer (its own Cargo project and lock; release unless told
# otherwise), starts every server on 127.0.0.1 (ports the kernel picks; herd with a
# throw-away SQLite file), signs a user up and logs in on each, runs wrk, prints a
# markdown table and writes it between the wrk markers in docs/benchmarks.md. The
# servers are stopped on exit, whatever happens; the sessions made are logged out.
# Backticks in the printf formats below are markdown, not command substitution.
# shellcheck disable=SC2016
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-30}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_URL=redis://127.0.0.1:$REDIS_PORT

INVOCATION="bench/wrk.sh (DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- 1. tools and build ------------------------------------------------------------
bench_require_tools
command -v redis-cli >/dev/null || die "redis-cli is required (to check that Redis is up)"
[[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>&1) == PONG ]] ||
    die "no Redis answering at $REDIS_URL"
bench_build
bench_build_peer

# --- 2. servers ----------------------------------------------------------------------
bench_init herd-wrk
declare -A URL=() TOKEN_OF=() COOKIE_OF=()
EXTRA_PIDS=()
bench_on_exit() {
    local pid
    for pid in "${EXTRA_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# A bench/peer mode on a port the kernel picks; sets PEER_BASE once it is listening.
start_peer() { # name mode [args...]
    bench_start_peer "$1" "$PEER" "${@:2}"
    EXTRA_PIDS+=("$PEER_PID")
}

start_peer axum-bare bare
URL[axum-bare]=$PEER_BASE/v1/me
URL[axum-bare-no-token]=$PEER_BASE/v1/me

start_peer axum-sessions sessions "$REDIS_URL"
curl -fsS --max-time 5 -c "$WORK/peer-cookies" -X POST "$PEER_BASE/login" >/dev/null ||
    die "the axum-sessions peer refused a login"
COOKIE_OF[axum-sessions]=id=$(awk '$6 == "id" { print $7 }' "$WORK/peer-cookies")
[[ $(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "Cookie: ${COOKIE_OF[axum-sessions]}" \
    "$PEER_BASE/v1/me") == 200 ]] || die "the axum-sessions peer does not know its own session"
URL[axum-sessions]=$PEER_BASE/v1/me

# herd with Redis-backed shared sessions; kept running beside the token server (the
# helpers track one server, so this one's pid is stopped by bench_on_exit).
bench_start_server "$WORK/server-shared.log" \
    --database "sqlite://$WORK/herd-shared.db" \
    --access-ttl 1h --session-idle-timeout 1h --signup-limit-address off \
    --sessions shared --redis-url "$REDIS_URL"
bench_login
EXTRA_PIDS+=("$SERVER_PID")
SHARED_BASE=$BASE SHARED_TOKEN=$TOKEN
SERVER_PID=
URL[herd-shared]=$BASE/v1/me
TOKEN_OF[herd-shared]=$TOKEN

bench_start_server "$WORK/server.log" \
    --database "sqlite://$WORK/herd.db" \
    --access-ttl 1h
bench_login
URL[herd-token]=$BASE/v1/me
URL[herd-healthz]=$BASE/healthz
# /healthz gets the very same request as /v1/me (bearer header included), so the
# difference is what /v1/me does on top of herd's HTTP stack.
TOKEN_OF[herd-token]=$TOKEN
TOKEN_OF[herd-healthz]=$TOKEN
# The ceiling reads the same bytes: the ratio is then what herd does with them.
TOKEN_OF[axum-bare]=$TOKEN

# --- 3. wrk ------------------------------------------------------------------------
bench_prepare_wrk
NAMES=(axum-bare herd-healthz herd-token axum-sessions herd-shared axum-bare-no-token)

measure() { # name warmup|run
    local name=$1
    HERD_BENCH_TOKEN=${TOKEN_OF[$name]:-} HERD_BENCH_COOKIE=${COOKIE_OF[$name]:-} \
        "$2" "$name" "${URL[$name]}"
}

# Warm up each, then rotate the order from round to round: on a small shared machine a
# single run is at the mercy of whatever else runs meanwhile.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for name in "${NAMES[@]}"; do
    measure "$name" bench_warmup
done
for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    shift_by=$(((round - 1) % ${#NAMES[@]}))
    for name in "${NAMES[@]:shift_by}" "${NAMES[@]:0:shift_by}"; do
        measure "$name" run_wrk
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Log the herd-shared session out, so it leaves nothing in Redis.
curl -sS --max-time 5 -o /dev/null -X POST -H "Authorization: Bearer $SHARED_TOKEN" \
    "$SHARED_BASE/v1/auth/logout" || true

# Medians over the rounds, each column on its own.
bench_medians "${NAMES[@]}"

# --- 4. report ---------------------------------------------------------------------
declare -A LABEL=(
    [axum-bare]='bare axum handler, constant `/v1/me` JSON, same request as herd token (ceiling)'
    [axum-bare-no-token]='bare axum handler, the same without the bearer header'
    [herd-healthz]='herd `GET /healthz`'
    [herd-token]='herd `GET /v1/me`, `--sessions token`'
    [axum-sessions]='axum + tower-sessions + Redis store, `GET /v1/me`'
    [herd-shared]='herd `GET /v1/me`, `--sessions shared` on Redis'
)
TABLE=$(
    printf '| server | requests/s | p50 | p99 |\n'
    printf '|---|---:|---:|---:|\n'
    for name in "${NAMES[@]}"; do
        printf '| %s | %s | %s | %s |\n' "${LABEL[$name]}" "${RPS[$name]}" \
            "$(fmt_us "${P50[$name]}")" "$(fmt_us "${P99[$name]}")"
    done
    printf '\nRatios (requests/s, medians):\n\n'
    printf -- '- herd token `/v1/me` / bare axum: **%s** (goal >= 0.85)\n' \
        "$(ratio "${RPS[herd-token]}" "${RPS[axum-bare]}")"
    printf -- '- herd shared on Redis / axum + tower-sessions + Redis: **%s** (goal >= 1.00)\n' \
        "$(ratio "${RPS[herd-shared]}" "${RPS[axum-sessions]}")"
    printf -- '- herd token `/v1/me` / herd `/healthz`: **%s**\n' \
        "$(ratio "${RPS[herd-token]}" "${RPS[herd-healthz]}")"
)

printf '\n%s\n\n' "$TABLE"

if [[ ${NO_DOCS:-} == 1 ]]; then
    exit 0
fi

SECTION=$(
    printf '<!-- wrk:begin -->\n'
    printf '## HTTP throughput: herd against bare axum and axum + tower-sessions (wrk)\n\n'
    printf 'Every server on 127.0.0.1, %s build, each alone while measured (the others idle);\n' "$PROFILE"
    printf 'wrk and the servers share the machine. herd runs `herd serve` with SQLite in a temp\n'
    printf 'dir and `--access-ttl 1h`; the peers are bench/peer (axum 0.8; tower-sessions 0.14 with\n'
    printf 'tower-sessions-redis-store 0.16, fred pool of 4, sessions ending after 30 minutes\n'
    printf 'unused as herd'"'"'s do). The shared-session servers use the same Redis. The ceiling,\n'
    printf 'bare axum, is sent the very request herd token gets (its bearer header included, and\n'
    printf 'ignored), so that the ratio is what herd does with the request; the last row is the same\n'
    printf 'handler without that header.\n'
    if ((ROUNDS == 1)); then
        printf 'One round of each.\n\n'
    else
        printf 'Each figure is the median of %s rounds, the order rotating from round to round.\n\n' "$ROUNDS"
    fi
    printf '%s\n\n' "$TABLE"
    printf -- '- Script: `%s`\n' "$INVOCATION"
    printf -- '- wrk command (each server, after a %s warm-up): `%s`\n' "$WARMUP" "$WRK_CMD"
    for name in "${NAMES[@]}"; do
        printf -- '- Requests/s per round, %s: %s\n' "$name" "${ROUND_RPS[$name]}"
    done
    printf -- '- Load average after the runs: %s\n' "$LOAD_AFTER"
    bench_provenance "$LOAD_BEFORE"
    printf '<!-- wrk:end -->\n'
)

bench_write_section wrk "$SECTION"
