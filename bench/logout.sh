#!/usr/bin/env bash
# Read-your-logout through `herd cluster`: a client behind the balancer logs in, touches
# every replica, logs out, and at once presents the same access token again (the
# balancer round-robins, so it reaches another replica). Counts the tokens accepted after
# their logout had answered (the goal is 0) and logout's latency, p50 and p99, on each bus:
#
#   sqlite-sql      SQLite file, bus = the SQL tail of its event log (herd cluster's default)
#   postgres-sql    PostgreSQL (a throw-away database), bus = the SQL tail
#   postgres-redis  PostgreSQL (a throw-away database), bus = Redis pub/sub
#
# Usage: bench/logout.sh     (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   LOGOUTS=200          logouts per bus
#   BUSES="sqlite-sql postgres-sql postgres-redis"
#   REPLICAS=3
#   POLL_INTERVAL=50ms   the SQL tail's --bus-poll-interval (herd serve's default)
#   BASELINE=1           also run each bus with --confirm-deadline 0s: the logout answers
#                        without waiting for confirmations, as herd did before them
#   PG_PORT=5432 PG_ADMIN_DB=postgres   PostgreSQL on 127.0.0.1 (user postgres, trust)
#   REDIS_PORT=6379 REDIS_DB=11         Redis on 127.0.0.1; the login meters go in this
#                        db index, under keys that expire (nothing is flushed)
#   STARTUP_TIMEOUT_S=60
#   CARGO_TARGET_DIR, HERD_BENCH_PROFILE=release, HERD_BIN, HERD_BENCH_DOCS, NO_DOCS=1
#     as in bench/lib.sh
#
# A logout that answers names, in herd-unconfirmed, the live replicas that had not
# confirmed it within --confirm-deadline (1 s): the table counts those answers too.
# The cluster, and the PostgreSQL database, are gone on exit, whatever happens.
# Backticks in the printf formats below are markdown, not command substitution.
# shellcheck disable=SC2016
set -euo pipefail

LOGOUTS=${LOGOUTS:-200}
BUSES=${BUSES:-sqlite-sql postgres-sql postgres-redis}
REPLICAS=${REPLICAS:-3}
POLL_INTERVAL=${POLL_INTERVAL:-50ms}
PG_PORT=${PG_PORT:-5432}
PG_ADMIN_DB=${PG_ADMIN_DB:-postgres}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_DB=${REDIS_DB:-11}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-60}
BASELINE=${BASELINE:-1}

INVOCATION="bench/logout.sh (LOGOUTS=$LOGOUTS REPLICAS=$REPLICAS POLL_INTERVAL=$POLL_INTERVAL)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_DB=
bench_on_exit() {
    if [[ -n $PG_DB ]]; then
        psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$PG_ADMIN_DB" \
            -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
bench_init herd-bench-logout
bench_build
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# Starts `herd cluster` on the given database (and Redis URL, if any) as the bench's
# "server" (bench_stop_server stops it, and its replicas with it); sets BASE.
start_cluster() { # name deadline database [redis-url]
    local name=$1 deadline=$2 database=$3 redis=${4:-}
    SERVER_LOG=$WORK/cluster-$name.log
    local args=(cluster --listen 127.0.0.1:0 --replicas "$REPLICAS" --database "$database")
    if [[ -n $redis ]]; then args+=(--redis-url "$redis"); fi
    args+=(-- --bus-poll-interval "$POLL_INTERVAL" --confirm-deadline "$deadline" --login-limit-address off
        --login-limit-account off --login-limit-account-address off --signup-limit-address off)
    log "starting herd ${args[*]}"
    HERD_LOG_FORMAT=json RUST_LOG=info "$HERD" --log-format json "${args[@]}" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + STARTUP_TIMEOUT_S)) addr=
    until [[ -n $addr ]]; do
        kill -0 "$SERVER_PID" 2>/dev/null || die "herd cluster exited during startup"
        ((SECONDS < deadline)) || die "herd cluster did not start within ${STARTUP_TIMEOUT_S}s"
        addr=$(python3 - "$SERVER_LOG" <<'PY'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "cluster is serving":
        print(fields["listen"])
        break
PY
)
        sleep 0.1
    done
    BASE=http://$addr
}

# Runs the client against BASE; prints one JSON line of results.
measure() {
    python3 - "$BASE" "$LOGOUTS" "$REPLICAS" "$STARTUP_TIMEOUT_S" <<'PY'
import http.client, json, secrets, statistics, sys, time, urllib.parse

base, logouts, replicas, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
host = urllib.parse.urlparse(base).netloc
conn = http.client.HTTPConnection(host, timeout=30)

def call(method, path, body=None, token=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body) if body is not None else None
    for attempt in range(3):
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except (ConnectionError, http.client.HTTPException):
            conn.close()
            if attempt == 2:
                raise

# Every replica up, and each has heard the others announce themselves (three heartbeats).
deadline = time.monotonic() + timeout
while True:
    status, _, body = call("GET", "/_cluster/replicas")
    up = [r for r in json.loads(body).get("replicas", []) if r.get("state") == "up"] if status == 200 else []
    if len(up) >= replicas:
        break
    if time.monotonic() > deadline:
        sys.exit(f"only {len(up)} replicas up")
    time.sleep(0.2)
time.sleep(3.5)

user = {"username": "bench" + secrets.token_hex(6), "password": secrets.token_urlsafe(18)}
status, _, body = call("POST", "/v1/auth/signup", user)
assert status == 201, (status, body)

latencies, accepted, unconfirmed, refusers = [], 0, 0, set()
for i in range(logouts):
    status, _, body = call("POST", "/v1/auth/login", user)
    assert status == 200, (status, body)
    token = json.loads(body)["access_token"]
    # Every replica verifies (and caches) the token; one more now and then, so that the
    # logout lands on each replica in turn.
    for _ in range(replicas + i % replicas):
        status, _, _ = call("GET", "/v1/me", token=token)
        assert status == 200, status
    started = time.perf_counter()
    status, headers, body = call("POST", "/v1/auth/logout", token=token)
    latencies.append((time.perf_counter() - started) * 1e6)
    assert status == 204, (status, body)
    if any(k.lower() == "herd-unconfirmed" for k in headers):
        unconfirmed += 1
    status, headers, _ = call("GET", "/v1/me", token=token)
    if status == 200:
        accepted += 1
    else:
        refusers.add(next((v for k, v in headers.items() if k.lower() == "x-herd-replica"), "?"))

latencies.sort()
p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
print(json.dumps({
    "logouts": len(latencies),
    "accepted": accepted,
    "unconfirmed": unconfirmed,
    "p50_us": round(statistics.median(latencies)),
    "p99_us": round(p99),
    "refused_on": sorted(refusers),
}))
PY
}

declare -A RESULT=()
RUNS=()
for bus in $BUSES; do
    RUNS+=("$bus")
    if [[ $BASELINE == 1 ]]; then RUNS+=("$bus/no-wait"); fi
done
for run in "${RUNS[@]}"; do
    bus=${run%/no-wait}
    deadline=1s
    if [[ $run == */no-wait ]]; then deadline=0s; fi
    case $bus in
        sqlite-sql) start_cluster "${run//\//-}" "$deadline" "sqlite://$WORK/herd-${run//\//-}.db" ;;
        postgres-sql | postgres-redis)
            command -v psql >/dev/null || die "psql is required for $bus"
            PG_DB=herd_bench_logout_$$_$RANDOM
            psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$PG_ADMIN_DB" -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
            redis=
            if [[ $bus == postgres-redis ]]; then redis=redis://127.0.0.1:$REDIS_PORT/$REDIS_DB; fi
            start_cluster "${run//\//-}" "$deadline" "postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB" "$redis"
            ;;
        *) die "unknown bus $bus" ;;
    esac
    log "measuring $run: $LOGOUTS logouts through $BASE (--confirm-deadline $deadline)"
    RESULT[$run]=$(measure) || die "$run: the client failed"
    log "$run: ${RESULT[$run]}"
    bench_stop_server
    bench_on_exit
    PG_DB=
done

field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

for run in "${RUNS[@]}"; do
    (($(field "${RESULT[$run]}" logouts) > 0)) || die "$run: no logout was measured"
done

SECTION=$(
    printf '<!-- logout:begin -->\n'
    printf '## Read-your-logout across replicas (logout.sh)\n\n'
    printf 'Command: `%s`, profile `%s`. `herd cluster` with %s replicas; a client through the\n' "$INVOCATION" "$PROFILE" "$REPLICAS"
    printf 'balancer logs in, touches every replica, logs out (timed), and at once sends the same\n'
    printf 'access token again, which the round-robin balancer hands to another replica.\n'
    printf 'Rows marked `no-wait` run `--confirm-deadline 0s`: the logout answers without waiting\n'
    printf 'for confirmations, as herd did before them.\n\n'
    printf '| bus | logouts | token accepted after logout | answers naming an unconfirmed replica | logout p50 | logout p99 |\n'
    printf '|---|---:|---:|---:|---:|---:|\n'
    for run in "${RUNS[@]}"; do
        r=${RESULT[$run]}
        printf '| %s | %s | %s | %s | %s | %s |\n' "$run" "$(field "$r" logouts)" "$(field "$r" accepted)" \
            "$(field "$r" unconfirmed)" "$(fmt_us "$(field "$r" p50_us)")" "$(fmt_us "$(field "$r" p99_us)")"
    done
    printf '\n'
    printf 'How to read it: a token accepted after its logout answered is what read-your-logout\n'
    printf 'forbids (the goal is 0; the `no-wait` rows show what herd allowed before). The\n'
    printf 'difference between a bus and its `no-wait` row is what waiting for confirmations costs\n'
    printf 'a logout: on the SQL tail, the peers reading the log (up to one `--bus-poll-interval`)\n'
    printf 'and writing their confirmations; on Redis, a pub/sub round trip. No other request pays\n'
    printf 'anything. The login before each logout is not timed. Under profile `dev` and a busy\n'
    printf 'machine (load average below) the absolute figures are inflated; compare rows.\n\n'
    printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf -- '- `nproc`: %s; load average before the runs: %s\n' "$(nproc)" "$LOAD"
    printf -- '- Commit: %s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf '<!-- logout:end -->\n'
)
printf '%s\n' "$SECTION"
[[ -n ${NO_DOCS:-} ]] || bench_write_section logout "$SECTION"
