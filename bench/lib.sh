# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts; sourced, never run. It builds herd, starts
# and stops one `herd serve` at a time on 127.0.0.1, signs a user up, runs wrk and
# writes a section of docs/benchmarks.md between a script's markers.
#
# The sourcing script sets, before calling these:
#   DURATION WARMUP ROUNDS THREADS CONNECTIONS STARTUP_TIMEOUT_S   (its knobs)
# and gets:
#   ROOT DOCS PROFILE (now)   WORK (bench_init)   HERD (bench_build)   PEER (bench_build_peer)
#   PEER_PID PEER_BASE (bench_start_peer)
#   SERVER_PID ADDR BASE (bench_start_server)   TOKEN (bench_login)
#   WRK_ARGS WRK_CMD (bench_prepare_wrk)   WRK_REQUESTS (run_wrk)
#   RPS P50 P99 ROUND_RPS (bench_medians)
# A script may define bench_on_exit, run by the exit trap after the server is stopped.
# Backticks in the printf formats below are markdown, not command substitution.
# The variables the sourcing script reads are unused here.
# shellcheck disable=SC2016,SC2034

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# The file the sections are written to; CI's smoke run (.ci/bench-smoke.sh) points it at
# a copy, so that its tiny measurements never replace the real ones.
DOCS=${HERD_BENCH_DOCS:-$ROOT/docs/benchmarks.md}
# The cargo profile the binaries are built with: release for measurements; CI's smoke
# run uses dev, the build its tests already made.
PROFILE=${HERD_BENCH_PROFILE:-release}
WORK=
SERVER_PID=
SERVER_LOG=
declare -gA RPS=() P50=() P99=() ROUND_RPS=()

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# wrk (installed when missing), curl and python3.
bench_require_tools() {
    if ! command -v wrk >/dev/null 2>&1; then
        log "installing wrk"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
    command -v curl >/dev/null || die "curl is required"
    command -v python3 >/dev/null || die "python3 is required"
}

# The directory under CARGO_TARGET_DIR that PROFILE's binaries go to.
bench_profile_dir() {
    case $PROFILE in
        dev | test) echo debug ;;
        bench) echo release ;;
        *) echo "$PROFILE" ;;
    esac
}

# herd, built with PROFILE (release unless HERD_BENCH_PROFILE says otherwise), or the
# binary HERD_BIN names, unbuilt (CI's smoke run reuses the one its tests ran); sets HERD.
bench_build() {
    if [[ -n ${HERD_BIN:-} ]]; then
        HERD=$HERD_BIN
        [[ -x $HERD ]] || die "HERD_BIN=$HERD_BIN is not an executable"
        log "using $HERD (HERD_BIN; not built here)"
        return
    fi
    log "building herd ($PROFILE profile, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p herd)
    HERD=$CARGO_TARGET_DIR/$(bench_profile_dir)/herd
    [[ -x $HERD ]] || die "no binary at $HERD"
}

# bench/peer (its own Cargo project, outside the workspace), or PEER_BIN as it is; sets
# PEER.
bench_build_peer() {
    if [[ -n ${PEER_BIN:-} ]]; then
        PEER=$PEER_BIN
    else
        log "building bench/peer ($PROFILE profile)"
        cargo build --profile "$PROFILE" --quiet --locked --manifest-path "$ROOT/bench/peer/Cargo.toml"
        PEER=$CARGO_TARGET_DIR/$(bench_profile_dir)/herd-bench-peer
    fi
    [[ -x $PEER ]] || die "no peer binary at $PEER"
}

# Runs `program mode 127.0.0.1:0 [args...]` (bench/peer, or a wrapper around it) and
# waits until it says where it listens; sets PEER_PID and PEER_BASE. The caller stops it.
bench_start_peer() { # name program mode [args...]
    local name=$1 program=$2 out=$WORK/peer-$1.log deadline=$((SECONDS + STARTUP_TIMEOUT_S)) addr=
    : >"$out"
    "$program" "$3" 127.0.0.1:0 "${@:4}" >>"$out" 2>&1 &
    PEER_PID=$!
    until [[ -n $addr ]]; do
        kill -0 "$PEER_PID" 2>/dev/null || { cat "$out" >&2; die "peer $name exited during startup"; }
        ((SECONDS < deadline)) || die "peer $name did not listen within ${STARTUP_TIMEOUT_S}s"
        addr=$(sed -n 's/^listening on //p' "$out")
        [[ -n $addr ]] || sleep 0.1
    done
    PEER_BASE=http://$addr
    log "peer $name listening at $PEER_BASE (pid $PEER_PID)"
}

# A scratch directory (WORK) and the traps that stop the server and remove it on exit,
# whatever happens.
bench_init() { # mktemp-prefix
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local status=$?
    bench_stop_server
    if [[ $status -ne 0 && -n $SERVER_LOG && -s $SERVER_LOG ]]; then
        printf -- '--- server log (last 20 lines) ---\n' >&2
        tail -n 20 "$SERVER_LOG" >&2 || true
    fi
    if declare -F bench_on_exit >/dev/null; then
        bench_on_exit || true
    fi
    rm -rf "$WORK"
    exit "$status"
}

# Stops the server, if one runs: gracefully first, forced if it has not gone within 5 s.
bench_stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}

# The bound address, from the "herd is serving" log line.
listen_addr() {
    python3 - "$SERVER_LOG" <<'PY'
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

# Starts `herd serve` with the given extra flags, its log in LOGFILE, and waits until it
# is healthy; sets SERVER_PID, ADDR and BASE.
# Port 0: the kernel picks a free port and herd logs the address it bound, so there is
# no window in which another process could take a port we picked.
bench_start_server() { # logfile herd-serve-flags...
    SERVER_LOG=$1
    shift
    log "starting herd serve"
    HERD_LOG_FORMAT=json RUST_LOG=info "$HERD" serve \
        --listen 127.0.0.1:0 \
        --issuer http://127.0.0.1 \
        "$@" \
        >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!

    local deadline=$((SECONDS + STARTUP_TIMEOUT_S))
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
}

# Signs a fresh user up and logs in; sets TOKEN (the login's access_token: a signed
# token, or a session id under --sessions memory|shared) once GET /v1/me accepts it.
bench_login() {
    local username password credentials status
    username=bench-$$-$RANDOM
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
    credentials=$(python3 -c 'import json, sys; print(json.dumps({"username": sys.argv[1], "password": sys.argv[2]}))' \
        "$username" "$password")

    status=$(curl -sS --max-time 30 -o "$WORK/signup.json" -w '%{http_code}' \
        -H 'content-type: application/json' -d "$credentials" "$BASE/v1/auth/signup")
    [[ $status == 201 ]] || die "signup returned $status: $(cat "$WORK/signup.json")"

    status=$(curl -sS --max-time 30 -o "$WORK/login.json" -w '%{http_code}' \
        -H 'content-type: application/json' -d "$credentials" "$BASE/v1/auth/login")
    [[ $status == 200 ]] || die "login returned $status: $(cat "$WORK/login.json")"

    TOKEN=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["access_token"])' "$WORK/login.json")
    [[ -n $TOKEN ]] || die "login returned no access_token"

    status=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer $TOKEN" "$BASE/v1/me")
    [[ $status == 200 ]] || die "GET /v1/me with the new token returned $status"
}

# The wrk script and arguments; sets WRK_ARGS and WRK_CMD. The token reaches wrk through
# HERD_BENCH_TOKEN (a cookie through HERD_BENCH_COOKIE) in the environment, so it is on no command line and in no file that
# outlives the run. done() prints one machine-readable line for the table.
bench_prepare_wrk() {
    cat >"$WORK/bench.lua" <<'LUA'
local token = os.getenv("HERD_BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local cookie = os.getenv("HERD_BENCH_COOKIE")
if cookie and cookie ~= "" then
  wrk.headers["Cookie"] = cookie
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
    WRK_ARGS=(-t"$THREADS" -c"$CONNECTIONS" --latency -s "$WORK/bench.lua")
    WRK_CMD="wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench.lua <url>"
}

# The discarded warm-up run.
bench_warmup() { # name url
    log "warm-up: $1 ($WARMUP)"
    wrk "${WRK_ARGS[@]}" -d"$WARMUP" "$2" >/dev/null
}

# One measurement: appends "rps p50_us p99_us" to $WORK/results-<name>, and leaves the
# number of requests completed in WRK_REQUESTS.
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
    WRK_REQUESTS=$requests
    printf '%s %s %s\n' "$((requests * 1000000 / duration_us))" "$p50_us" "$p99_us" >>"$WORK/results-$name"
}

# Medians over the rounds of each name, each column on its own, into RPS, P50 and P99;
# the requests/s of every round, comma-separated, into ROUND_RPS.
bench_medians() { # names...
    local name
    for name in "$@"; do
        read -r "RPS[$name]" "P50[$name]" "P99[$name]" < <(python3 - "$WORK/results-$name" <<'PY'
import statistics, sys
rows = [list(map(int, line.split())) for line in open(sys.argv[1])]
print(*(round(statistics.median(col)) for col in zip(*rows)))
PY
)
        ROUND_RPS[$name]=$(cut -d' ' -f1 "$WORK/results-$name" | paste -sd' ' | sed 's/ /, /g')
        log "$name rounds (rps p50_us p99_us): $(paste -sd';' "$WORK/results-$name")"
    done
}

fmt_us() { python3 -c 'import sys; us = int(sys.argv[1]); print(f"{us} µs" if us < 1000 else f"{us / 1000:.2f} ms")' "$1"; }

# a / b, two decimals.
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$2"; }

# The closing lines of a docs section: date, machine, commit, wrk version.
bench_provenance() { # load-average-before-the-runs
    local commit
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    # Changes outside bench/ and docs/ would mean the binary is not the commit's.
    if [[ $commit != unknown && -n $(git -C "$ROOT" status --porcelain -- . ':!bench' ':!docs' 2>/dev/null) ]]; then
        commit="$commit (with uncommitted changes)"
    fi
    printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf -- '- `nproc`: %s; load average before the runs: %s\n' "$(nproc)" "$1"
    printf -- '- Commit: %s\n' "$commit"
    printf -- '- wrk: %s\n' "$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)"
}

# Writes SECTION (which starts and ends with its markers) into docs/benchmarks.md:
# replaces what lies between <!-- NAME:begin --> and <!-- NAME:end -->, or appends it
# when the markers are absent. The rest of the file is left as it is.
bench_write_section() { # marker-name section
    mkdir -p "$(dirname "$DOCS")"
    python3 - "$DOCS" "$2" "$1" <<'PY'
import os, sys
path, section, name = sys.argv[1], sys.argv[2].rstrip("\n") + "\n", sys.argv[3]
BEGIN, END = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
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
    sys.exit(f"{path}: the {name} markers are unbalanced; fix them by hand")
tmp = path + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
os.replace(tmp, path)
PY
    log "wrote the $1 section of ${DOCS#"$ROOT"/}"
}
