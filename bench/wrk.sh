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
#   NO_DOCS=1      print the table only; leave docs/benchmarks.md alone
#
# It builds herd in release, starts `herd serve` on 127.0.0.1 (a port the kernel picks)
# with a throw-away SQLite file, signs a user up, logs in, runs wrk, prints a markdown
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

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DOCS=$ROOT/docs/benchmarks.md
INVOCATION="bench/wrk.sh (DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS)"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- 1. wrk ------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

# --- 2. build ----------------------------------------------------------------------
log "building herd (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release --quiet -p herd)
HERD=$CARGO_TARGET_DIR/release/herd
[[ -x $HERD ]] || die "no binary at $HERD"

# --- 3. server ---------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/herd-wrk.XXXXXX")
SERVER_PID=
cleanup() {
    local status=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        # Graceful shutdown first; force it if it has not gone within 5 s.
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s $WORK/server.log ]]; then
        printf -- '--- server log (last 20 lines) ---\n' >&2
        tail -n 20 "$WORK/server.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the kernel picks a free port and herd logs the address it bound, so there is
# no window in which another process could take a port we picked.
log "starting herd serve"
HERD_LOG_FORMAT=json RUST_LOG=info "$HERD" serve \
    --listen 127.0.0.1:0 \
    --database "sqlite://$WORK/herd.db" \
    --issuer http://127.0.0.1 \
    --access-ttl 1h \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# The bound address, from the "herd is serving" log line.
listen_addr() {
    python3 - "$WORK/server.log" <<'PY'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    fields = event.get("fields", {})
    if fields.get("message") == "herd is serving" and "listen" in fields:
        print(fields["listen"])
        break
PY
}

deadline=$((SECONDS + STARTUP_TIMEOUT_S))
ADDR=
until [[ -n $ADDR ]] && curl -fsS --max-time 1 "http://$ADDR/healthz" >/dev/null 2>&1; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "herd serve exited during startup"
    ((SECONDS < deadline)) || die "herd was not healthy within ${STARTUP_TIMEOUT_S}s"
    [[ -n $ADDR ]] || ADDR=$(listen_addr)
    sleep 0.1
done
case $ADDR in
    127.0.0.1:*) ;;
    *) die "herd bound $ADDR, not a loopback address" ;;
esac
BASE=http://$ADDR
log "herd is healthy at $BASE (pid $SERVER_PID)"

USERNAME=bench-$$-$RANDOM
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
CREDENTIALS=$(python3 -c 'import json, sys; print(json.dumps({"username": sys.argv[1], "password": sys.argv[2]}))' \
    "$USERNAME" "$PASSWORD")

status=$(curl -sS --max-time 30 -o "$WORK/signup.json" -w '%{http_code}' \
    -H 'content-type: application/json' -d "$CREDENTIALS" "$BASE/v1/auth/signup")
[[ $status == 201 ]] || die "signup returned $status: $(cat "$WORK/signup.json")"

status=$(curl -sS --max-time 30 -o "$WORK/login.json" -w '%{http_code}' \
    -H 'content-type: application/json' -d "$CREDENTIALS" "$BASE/v1/auth/login")
[[ $status == 200 ]] || die "login returned $status: $(cat "$WORK/login.json")"

TOKEN=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["access_token"])' "$WORK/login.json")
[[ -n $TOKEN ]] || die "login returned no access_token"

status=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' \
    -H "Authorization: Bearer $TOKEN" "$BASE/v1/me")
[[ $status == 200 ]] || die "GET /v1/me with the new token returned $status"

# --- 4. wrk ------------------------------------------------------------------------
# The token reaches wrk through the environment, so it is on no command line and in no
# file that outlives the run. done() prints one machine-readable line for the table.
cat >"$WORK/bench.lua" <<'LUA'
local token = os.getenv("HERD_BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

export HERD_BENCH_TOKEN=$TOKEN
WRK_ARGS=(-t"$THREADS" -c"$CONNECTIONS" --latency -s "$WORK/bench.lua")
WRK_CMD="wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench.lua <url>"

# One measurement: appends "rps p50_us p99_us" to $WORK/results-<name>.
run_wrk() { # name url
    local name=$1 url=$2 out=$WORK/wrk-$1.txt result
    log "measuring: $name ($DURATION)"
    wrk "${WRK_ARGS[@]}" -d"$DURATION" "$url" | tee "$out" >&2
    result=$(grep '^WRK_RESULT ' "$out") || die "wrk printed no result for $name"
    local requests duration_us p50_us p99_us errors non2xx
    # "WRK_RESULT requests=N duration_us=N p50_us=N p99_us=N errors=N non2xx=N"
    read -r requests duration_us p50_us p99_us errors non2xx \
        <<<"$(sed 's/^WRK_RESULT //; s/[a-z0-9_]*=//g' <<<"$result")"
    ((requests > 0)) || die "$name: wrk completed no requests"
    ((non2xx == 0)) || die "$name: $non2xx responses were not 2xx/3xx; the numbers would be meaningless"
    ((errors == 0)) || log "warning: $name: $errors socket errors"
    printf '%s %s %s\n' "$((requests * 1000000 / duration_us))" "$p50_us" "$p99_us" >>"$WORK/results-$name"
}

# Both endpoints get the very same request (bearer header included), so the difference
# is what /v1/me does on top of the HTTP stack. Warm up each, then alternate rounds: on
# a small shared machine a single run is at the mercy of whatever else runs meanwhile.
declare -A ROUTE=([healthz]=/healthz [me]=/v1/me)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for name in healthz me; do
    log "warm-up: $name ($WARMUP)"
    wrk "${WRK_ARGS[@]}" -d"$WARMUP" "$BASE${ROUTE[$name]}" >/dev/null
done
for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    for name in healthz me; do
        run_wrk "$name" "$BASE${ROUTE[$name]}"
    done
done
unset HERD_BENCH_TOKEN

# Medians over the rounds, each column on its own.
declare -A RPS P50 P99 ROUND_RPS
for name in healthz me; do
    read -r "RPS[$name]" "P50[$name]" "P99[$name]" < <(python3 - "$WORK/results-$name" <<'PY'
import statistics, sys
rows = [list(map(int, line.split())) for line in open(sys.argv[1])]
print(*(round(statistics.median(col)) for col in zip(*rows)))
PY
)
    ROUND_RPS[$name]=$(cut -d' ' -f1 "$WORK/results-$name" | paste -sd' ' | sed 's/ /, /g')
    log "$name rounds (rps p50_us p99_us): $(paste -sd';' "$WORK/results-$name")"
done

# --- 5. report ---------------------------------------------------------------------
fmt_us() { python3 -c 'import sys; us = int(sys.argv[1]); print(f"{us} µs" if us < 1000 else f"{us / 1000:.2f} ms")' "$1"; }
RATIO=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "${RPS[me]}" "${RPS[healthz]}")

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

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# Changes outside bench/ and docs/ would mean the binary is not the commit's.
if [[ $COMMIT != unknown && -n $(git -C "$ROOT" status --porcelain -- . ':!bench' ':!docs' 2>/dev/null) ]]; then
    COMMIT="$COMMIT (with uncommitted changes)"
fi

SECTION=$(
    printf '<!-- wrk:begin -->\n'
    printf '## HTTP throughput: `/healthz` vs `/v1/me` (wrk)\n\n'
    printf 'One replica (`herd serve`, release build, SQLite in a temp dir, `--access-ttl 1h`) on\n'
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
    printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf -- '- `nproc`: %s; load average before the runs: %s\n' "$(nproc)" "$LOAD_BEFORE"
    printf -- '- Commit: %s\n' "$COMMIT"
    printf -- '- wrk: %s\n' "$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)"
    printf '<!-- wrk:end -->\n'
)

mkdir -p "$(dirname "$DOCS")"
python3 - "$DOCS" "$SECTION" <<'PY'
import os, sys
path, section = sys.argv[1], sys.argv[2].rstrip("\n") + "\n"
BEGIN, END = "<!-- wrk:begin -->", "<!-- wrk:end -->"
if os.path.exists(path):
    text = open(path, encoding="utf-8").read()
else:
    text = "# Benchmarks\n\nMeasurements of herd, each section written by the script it names.\n"
start, end = text.find(BEGIN), text.find(END)
if start != -1 and end != -1 and end > start:
    text = text[:start] + section + text[end + len(END):].removeprefix("\n")
elif start == -1 and end == -1:
    text = text.rstrip("\n") + "\n\n" + section
else:
    sys.exit(f"{path}: the wrk markers are unbalanced; fix them by hand")
tmp = path + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
os.replace(tmp, path)
PY
log "wrote the wrk section of ${DOCS#"$ROOT"/}"
