#!/usr/bin/env bash
# Live chat under load, measured with the chatbench example (crates/herd/examples/
# chatbench.rs) against release builds (HERD_BENCH_PROFILE) of `herd serve` on 127.0.0.1:
#
#   1. fan-out latency across replicas: a sender on replica A sends `send` frames at
#      RATE a second, subscribers of the room on replica B receive them; latency is the
#      receive instant minus the send instant, both read from one clock in chatbench.
#      Over the Redis bus, and over the SQL tail (both replicas on one SQLite file) at
#      each poll interval of POLL_INTERVALS. Each latency run also reports where the
#      time went: the replicas' own stage histograms (`herd_chat_stage_seconds` in
#      /metrics: commit queue, commit, announce queue, publish on A; fan-out and write
#      on B), read by chatbench at the end of the warm-up and at the end of the run, and
#      the cores of herd A, herd B, Redis, PostgreSQL (with its backends) and chatbench.
#   2. delivered messages a second per core: one replica, TP_SUBSCRIBERS subscribers of a
#      room, one sender as fast as they keep up; frames delivered to all subscribers a
#      second, divided by the cores the server process used meanwhile (its utime + stime
#      from /proc/PID/stat over the measured window, divided by the window).
#   3. resident memory per idle connection: the server's VmRSS before and after opening
#      IDLE_CONNECTIONS authenticated WebSocket connections, each subscribed to a room.
#
# Usage: bench/chat.sh           (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   RATE=1000                  messages a second in the latency runs
#   WARMUP=2 DURATION=10       seconds: sent but not counted, then measured (runs 1 and 2)
#   LAT_SUBSCRIBERS="10 100"   subscribers on replica B, one latency run each
#   POLL_INTERVALS="10ms 50ms" --bus-poll-interval of each SQL-tail config (50ms is the
#                              default)
#   TP_SUBSCRIBERS="100 1000"  subscribers, one throughput run each
#   TP_BUSES="in-process redis"  the --bus of the throughput replica, one run each
#   TP_WINDOW=128              how many messages the sender may be ahead of the slowest
#                              subscriber (below --ws-queue, 256, so none is cut off)
#   LAT_POSTGRES=1             also run the Redis config with both replicas on one fresh
#                              PostgreSQL database (PG_PORT, user postgres, trust auth; it
#                              is created in PG_ADMIN_DB and dropped on exit); 0 skips it
#   SWEEP_RATES=""             messages a second, one more PostgreSQL + Redis latency run
#                              each (SWEEP_SUBSCRIBERS subscribers, default 100): latency
#                              against offered load, to find the knee; empty skips it
#   PG_PORT=5432 PG_ADMIN_DB=postgres
#   LAT_DIAGNOSTIC=1           also run the Redis config with the SQLite file on tmpfs
#                              (/dev/shm), where a sync costs nothing: what the disk's syncs
#                              of the shared file cost the tail (diagnostic); 0 skips it
#   IDLE_CONNECTIONS=10000     connections held open in run 3
#   IDLE_BATCH=100             handshakes in flight at a time, so that a handshake's time
#                              is the server's, not a queue in chatbench (herd listens
#                              with a backlog of 4096: the kernel drops no SYN below it)
#   REDIS_URL=redis://127.0.0.1:6379        must answer PING
#   QUIET_WAIT=60 QUIET_BUSY=25  before each run, wait at most QUIET_WAIT seconds for the
#                              cores to be under QUIET_BUSY% busy; 0 measures at once
#   NOISE_MAX=0.2 ATTEMPTS=3   a run during which the machine spent more than NOISE_MAX
#                              cores on anything but herd, Redis and chatbench (someone
#                              else's build, say) is run again, up to ATTEMPTS times in all;
#                              the quietest attempt is kept, and its noise is shown
#   RUN_TIMEOUT=300            seconds any one chatbench run may take
#   CARGO_TARGET_DIR           (default: <repo>/target)
#   HERD_BENCH_PROFILE=release the cargo profile herd and chatbench are built with
#   HERD_BIN, CHATBENCH_BIN    binaries to run as they are, unbuilt (both or neither)
#   HERD_BENCH_DOCS=docs/benchmarks.md  the file the section is written to
#   NO_DOCS=1                  print the section only; leave docs/benchmarks.md alone
#
# Every replica gets a fresh SQLite file in a temp directory, cheap argon2 (logins are
# not what is measured), `--access-ttl 1h` (no reauth mid-run), a send limit high enough
# not to bite, and a connection limit above IDLE_CONNECTIONS. Everything started here is
# stopped on exit, whatever happens; traffic goes to 127.0.0.1 only.
# Backticks in the printf formats below are markdown, not command substitution.
# shellcheck disable=SC2016
set -euo pipefail

RATE=${RATE:-1000}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
LAT_SUBSCRIBERS=${LAT_SUBSCRIBERS:-10 100}
POLL_INTERVALS=${POLL_INTERVALS:-10ms 50ms}
TP_SUBSCRIBERS=${TP_SUBSCRIBERS:-100 1000}
TP_BUSES=${TP_BUSES:-in-process redis}
TP_WINDOW=${TP_WINDOW:-128}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_BATCH=${IDLE_BATCH:-100}
LAT_DIAGNOSTIC=${LAT_DIAGNOSTIC:-1}
LAT_POSTGRES=${LAT_POSTGRES:-1}
SWEEP_RATES=${SWEEP_RATES:-}
SWEEP_SUBSCRIBERS=${SWEEP_SUBSCRIBERS:-100}
PG_PORT=${PG_PORT:-5432}
PG_ADMIN_DB=${PG_ADMIN_DB:-postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_BUSY=${QUIET_BUSY:-25}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
NOISE_MAX=${NOISE_MAX:-0.2}
ATTEMPTS=${ATTEMPTS:-3}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-30}

INVOCATION="bench/chat.sh (RATE=$RATE WARMUP=$WARMUP DURATION=$DURATION LAT_SUBSCRIBERS=\"$LAT_SUBSCRIBERS\" POLL_INTERVALS=\"$POLL_INTERVALS\" TP_SUBSCRIBERS=\"$TP_SUBSCRIBERS\" TP_BUSES=\"$TP_BUSES\" TP_WINDOW=$TP_WINDOW IDLE_CONNECTIONS=$IDLE_CONNECTIONS IDLE_BATCH=$IDLE_BATCH LAT_DIAGNOSTIC=$LAT_DIAGNOSTIC LAT_POSTGRES=$LAT_POSTGRES SWEEP_RATES=\"$SWEEP_RATES\" SWEEP_SUBSCRIBERS=$SWEEP_SUBSCRIBERS)"

# ROOT, DOCS, CARGO_TARGET_DIR, log, die and bench_write_section come from lib.sh; this
# script runs its own servers, so it uses nothing else of it.
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CLK_TCK=$(getconf CLK_TCK)

# --- 1. tools and limits --------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"
command -v redis-cli >/dev/null || die "redis-cli is required (to check that Redis is up)"
case $REDIS_URL in
    redis://127.0.0.1:*) ;;
    *) die "REDIS_URL must be redis://127.0.0.1:PORT: traffic stays on this machine" ;;
esac
REDIS_PORT=${REDIS_URL##*:}
REDIS_PORT=${REDIS_PORT%%/*}
[[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>&1) == PONG ]] || die "no Redis answering at $REDIS_URL"
PSQL=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1)
POSTMASTER_PID=
if [[ $LAT_POSTGRES == 1 || -n $SWEEP_RATES ]]; then
    command -v psql >/dev/null || die "psql is required (LAT_POSTGRES=1 or SWEEP_RATES)"
    "${PSQL[@]}" -d "$PG_ADMIN_DB" -c 'SELECT 1' >/dev/null ||
        die "no PostgreSQL accepting user postgres at 127.0.0.1:$PG_PORT/$PG_ADMIN_DB"
    # PostgreSQL's CPU (its postmaster's children) is counted apart from the noise.
    POSTMASTER_PID=$(head -n1 "$("${PSQL[@]}" -d "$PG_ADMIN_DB" -c 'SHOW data_directory')/postmaster.pid" 2>/dev/null) || POSTMASTER_PID=
fi
# Redis's CPU is counted apart from the noise of other work on the machine.
REDIS_PID=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | tr -d '\r' | sed -n 's/^process_id://p')

# Each connection is a file descriptor in chatbench and another in the server: raise the
# soft limit (inherited by both) as far as the hard limit allows, up to 65536.
want=65536
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < want)); then want=$hard; fi
ulimit -n "$want"
(($(ulimit -n) >= IDLE_CONNECTIONS + 1000)) ||
    die "ulimit -n is $(ulimit -n) (hard limit $hard): too low for $IDLE_CONNECTIONS connections"

# --- 2. scratch space, build, replicas ---------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/herd-chat.XXXXXX")
SHM=
declare -A PID=() ADDR=() LOGFILE=()
PGDBS=()

stop_replica() { # name
    local pid=${PID[$1]:-}
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    PID[$1]=
}

cleanup() {
    local status=$? name
    for name in "${!PID[@]}"; do
        stop_replica "$name"
    done
    if [[ $status -ne 0 ]]; then
        for name in "${!LOGFILE[@]}"; do
            if [[ -s ${LOGFILE[$name]} ]]; then
                printf -- '--- log of replica %s (last 10 lines) ---\n' "$name" >&2
                tail -n 10 "${LOGFILE[$name]}" >&2 || true
            fi
        done
    fi
    for name in "${PGDBS[@]}"; do
        "${PSQL[@]}" -d "$PG_ADMIN_DB" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" ||
            log "warning: could not drop the PostgreSQL database $name"
    done
    rm -rf "$WORK"
    [[ -z $SHM ]] || rm -rf "$SHM"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n ${HERD_BIN:-} && -n ${CHATBENCH_BIN:-} ]]; then
    log "using $HERD_BIN and $CHATBENCH_BIN (HERD_BIN, CHATBENCH_BIN; not built here)"
else
    log "building herd and chatbench ($PROFILE profile, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet -p herd --example chatbench &&
        cargo build --profile "$PROFILE" --quiet -p herd)
    HERD_BIN=$CARGO_TARGET_DIR/$(bench_profile_dir)/herd
    CHATBENCH_BIN=$CARGO_TARGET_DIR/$(bench_profile_dir)/examples/chatbench
fi
# The commit the binaries were built from, read now: the report is written minutes later.
# Changes to what they are built from would mean they are not the commit's.
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $COMMIT != unknown && -n $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock ':!crates/herd/examples/chatbench.rs' 2>/dev/null) ]]; then
    COMMIT="$COMMIT (with uncommitted changes)"
fi
# Run from copies: another build may overwrite the target directory mid-run.
for binary in "$HERD_BIN" "$CHATBENCH_BIN"; do
    [[ -x $binary ]] || die "no binary at $binary"
done
cp "$HERD_BIN" "$WORK/herd"
cp "$CHATBENCH_BIN" "$WORK/chatbench"
HERD=$WORK/herd
CHATBENCH=$WORK/chatbench

# The bound address, from the "herd is serving" line of a JSON log.
listen_addr() { # logfile
    python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "herd is serving" and "listen" in fields:
        print(fields["listen"])
        break
PY
}

# Starts `herd serve` on a port the kernel picks, and waits until it is healthy.
start_replica() { # name herd-serve-flags...
    local name=$1 deadline addr=
    shift
    LOGFILE[$name]=$WORK/$name.log
    HERD_LOG_FORMAT=json RUST_LOG=info "$HERD" serve \
        --listen 127.0.0.1:0 \
        --issuer http://127.0.0.1 \
        --argon2-memory-kib 64 --argon2-iterations 1 \
        --access-ttl 1h \
        --signup-limit-address off \
        --ws-sends-per-second 1000000 \
        --ws-frames-per-second 1000000 \
        --ws-max-connections $((IDLE_CONNECTIONS + 2000)) \
        --ws-max-connections-per-user $((IDLE_CONNECTIONS + 2000)) \
        "$@" >"${LOGFILE[$name]}" 2>&1 &
    PID[$name]=$!
    deadline=$((SECONDS + STARTUP_TIMEOUT_S))
    until [[ -n $addr ]] && curl -fsS --max-time 1 "http://$addr/healthz" >/dev/null 2>&1; do
        kill -0 "${PID[$name]}" 2>/dev/null || die "replica $name exited during startup"
        ((SECONDS < deadline)) || die "replica $name was not healthy within ${STARTUP_TIMEOUT_S}s"
        [[ -n $addr ]] || addr=$(listen_addr "${LOGFILE[$name]}")
        sleep 0.1
    done
    case $addr in
        127.0.0.1:*) ;;
        *) die "replica $name bound $addr, not a loopback address" ;;
    esac
    ADDR[$name]=$addr
    log "replica $name: http://$addr (pid ${PID[$name]}) $*"
}

# --- 3. quiet machine, bounded runs ------------------------------------------------------
machine_ticks() { # busy ticks of all cores together
    local _cpu user nice system _idle _iowait irq softirq steal _rest
    read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

# Waits, at most QUIET_WAIT seconds, for the cores to be under QUIET_BUSY% busy over a
# second: someone else's build running through a run says nothing about herd. Counts the
# runs that had to start on a busy machine anyway.
NOISY_STARTS=0
RUNS=0
wait_for_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) before after busy said=
    RUNS=$((RUNS + 1))
    ((QUIET_WAIT > 0)) || return 0
    while :; do
        before=$(machine_ticks)
        sleep 1
        after=$(machine_ticks)
        busy=$(((after - before) * 100 / (CLK_TCK * $(nproc))))
        ((busy >= QUIET_BUSY)) || return 0
        if ((SECONDS >= deadline)); then
            log "warning: the cores are still ${busy}% busy after ${QUIET_WAIT}s; measuring anyway"
            NOISY_STARTS=$((NOISY_STARTS + 1))
            return 0
        fi
        [[ -n $said ]] || log "the cores are ${busy}% busy with someone else's work; waiting (at most ${QUIET_WAIT}s)"
        said=1
    done
}

# The cores the machine spent on other work during a run, from chatbench's JSON.
noise_of() { # json-file
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("cpu", {}).get("other_cores") or 0)' "$1"
}

# Runs chatbench, each attempt bounded by RUN_TIMEOUT; runs it again (at most ATTEMPTS
# times in all) while other work took more than NOISE_MAX cores; the quietest attempt's
# JSON line goes to OUT, with the number of attempts added.
NOISY_RESULTS=0
chatbench() { # out args...
    local out=$1 attempt noise best=
    shift
    for attempt in $(seq "$ATTEMPTS"); do
        wait_for_quiet
        log "chatbench $* (attempt $attempt)"
        timeout --kill-after=10 "$RUN_TIMEOUT" "$CHATBENCH" "$@" >"$out.$attempt" ||
            die "chatbench $1 failed or timed out (${RUN_TIMEOUT}s)"
        log "$(cat "$out.$attempt")"
        noise=$(noise_of "$out.$attempt")
        if [[ -z $best ]] || python3 -c 'import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))' "$noise" "$(noise_of "$out.$best")"; then
            best=$attempt
        fi
        if python3 -c 'import sys; sys.exit(not float(sys.argv[1]) <= float(sys.argv[2]))' "$noise" "$NOISE_MAX"; then
            break
        fi
        log "other work took $noise cores during that run (more than $NOISE_MAX)"
    done
    if ! python3 -c 'import sys; sys.exit(not float(sys.argv[1]) <= float(sys.argv[2]))' "$(noise_of "$out.$best")" "$NOISE_MAX"; then
        NOISY_RESULTS=$((NOISY_RESULTS + 1))
    fi
    python3 - "$out.$best" "$attempt" >"$out" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
result["attempts"] = int(sys.argv[2])
print(json.dumps(result))
PY
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 4. fan-out latency across two replicas ----------------------------------------------
LAT_CONFIGS=(redis)
declare -A LAT_FLAGS=([redis]="--bus redis --redis-url $REDIS_URL")
for interval in $POLL_INTERVALS; do
    LAT_CONFIGS+=("sql-$interval")
    LAT_FLAGS[sql-$interval]="--bus sql --bus-poll-interval $interval"
done
if [[ $LAT_DIAGNOSTIC == 1 ]]; then
    if [[ -d /dev/shm && -w /dev/shm ]]; then
        SHM=$(mktemp -d /dev/shm/herd-chat.XXXXXX)
        LAT_CONFIGS+=(redis-tmpfs)
        LAT_FLAGS[redis-tmpfs]="--bus redis --redis-url $REDIS_URL"
    else
        log "no writable /dev/shm: skipping the tmpfs diagnostic"
    fi
fi

if [[ $LAT_POSTGRES == 1 ]]; then
    LAT_CONFIGS+=(postgres)
    LAT_FLAGS[postgres]="--bus redis --redis-url $REDIS_URL"
fi
ALSO_PIDS=$REDIS_PID${POSTMASTER_PID:+,$POSTMASTER_PID}

# A fresh PostgreSQL database, dropped on exit; its URL in PG_URL. Not called in a
# command substitution: the subshell's PGDBS would be lost and the database left behind.
fresh_postgres() {
    local name=herd_chat_$$_$RANDOM
    "${PSQL[@]}" -d "$PG_ADMIN_DB" -c "CREATE DATABASE $name" >&2
    PGDBS+=("$name")
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/$name"
}

for config in "${LAT_CONFIGS[@]}"; do
    read -ra flags <<<"${LAT_FLAGS[$config]}"
    db=sqlite://$WORK/latency-$config.db
    [[ $config != redis-tmpfs ]] || db=sqlite://$SHM/latency-$config.db
    if [[ $config == postgres ]]; then
        fresh_postgres
        db=$PG_URL
    fi
    start_replica a --database "$db" "${flags[@]}"
    start_replica b --database "$db" "${flags[@]}"
    for n in $LAT_SUBSCRIBERS; do
        chatbench "$WORK/latency-$config-$n.json" latency \
            --send-url "http://${ADDR[a]}" --recv-url "http://${ADDR[b]}" \
            --subscribers "$n" --rate "$RATE" --warmup "$WARMUP" --duration "$DURATION" \
            --server-pids "${PID[a]},${PID[b]}" --also-pids "$ALSO_PIDS" --clk-tck "$CLK_TCK"
    done
    stop_replica a
    stop_replica b
done

# --- 4b. latency against offered load, PostgreSQL + Redis --------------------------------
if [[ -n $SWEEP_RATES ]]; then
    fresh_postgres
    db=$PG_URL
    start_replica a --database "$db" --bus redis --redis-url "$REDIS_URL"
    start_replica b --database "$db" --bus redis --redis-url "$REDIS_URL"
    for rate in $SWEEP_RATES; do
        chatbench "$WORK/sweep-$rate.json" latency \
            --send-url "http://${ADDR[a]}" --recv-url "http://${ADDR[b]}" \
            --subscribers "$SWEEP_SUBSCRIBERS" --rate "$rate" --warmup "$WARMUP" --duration "$DURATION" \
            --server-pids "${PID[a]},${PID[b]}" --also-pids "$ALSO_PIDS" --clk-tck "$CLK_TCK"
    done
    stop_replica a
    stop_replica b
fi

# --- 5. delivered messages per core on one replica ---------------------------------------
for bus in $TP_BUSES; do
    case $bus in
        redis) flags=(--bus redis --redis-url "$REDIS_URL") ;;
        in-process | sql) flags=(--bus "$bus") ;;
        *) die "TP_BUSES: unknown bus $bus" ;;
    esac
    start_replica tp --database "sqlite://$WORK/throughput-$bus.db" "${flags[@]}"
    for n in $TP_SUBSCRIBERS; do
        chatbench "$WORK/throughput-$bus-$n.json" throughput \
            --url "http://${ADDR[tp]}" --server-pid "${PID[tp]}" --subscribers "$n" \
            --window "$TP_WINDOW" --warmup "$WARMUP" --duration "$DURATION" \
            --also-pids "$REDIS_PID" --clk-tck "$CLK_TCK"
    done
    stop_replica tp
done

# --- 6. memory per idle connection -------------------------------------------------------
start_replica idle --database "sqlite://$WORK/idle.db" --bus redis --redis-url "$REDIS_URL"
chatbench "$WORK/idle.json" idle --url "http://${ADDR[idle]}" --server-pid "${PID[idle]}" \
    --connections "$IDLE_CONNECTIONS" --batch "$IDLE_BATCH"
stop_replica idle

# --- 7. report -----------------------------------------------------------------------------
REDIS_VERSION=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | tr -d '\r' | sed -n 's/^redis_version://p')

SECTION=$(
    LAT_CONFIGS="${LAT_CONFIGS[*]}" SWEEP_RATES=$SWEEP_RATES SWEEP_SUBSCRIBERS=$SWEEP_SUBSCRIBERS LAT_SUBSCRIBERS=$LAT_SUBSCRIBERS TP_BUSES=$TP_BUSES \
        TP_SUBSCRIBERS=$TP_SUBSCRIBERS TP_WINDOW=$TP_WINDOW RATE=$RATE WARMUP=$WARMUP \
        DURATION=$DURATION NPROC=$(nproc) PROFILE=$PROFILE python3 - "$WORK" <<'PY'
import json, os, sys

work = sys.argv[1]
def load(name):
    with open(os.path.join(work, name)) as f:
        return json.loads(f.read().strip().splitlines()[-1])

env = os.environ
lat_configs = env["LAT_CONFIGS"].split()
lat_ns = env["LAT_SUBSCRIBERS"].split()
tp_buses = env["TP_BUSES"].split()
tp_ns = env["TP_SUBSCRIBERS"].split()
rate, warmup, duration = env["RATE"], env["WARMUP"], env["DURATION"]
window, nproc = env["TP_WINDOW"], env["NPROC"]

def ms(us):
    return "n/a" if us is None else (f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs")
def num(x):
    return f"{x:,.0f}"
def label(config):
    if config == "redis":
        return "Redis"
    if config == "redis-tmpfs":
        return "Redis, SQLite on tmpfs (diagnostic)"
    if config == "postgres":
        return "Redis, PostgreSQL"
    return f"SQL tail, {config[4:]} poll"
def met(ok):
    return "**yes**" if ok else "**no**"

out = []
p = out.append
p("<!-- chat:begin -->")
p("## Live chat: fan-out latency, deliveries per core, memory per connection (chatbench)")
p("")
p(f"{env['PROFILE'].capitalize()} builds of `herd serve` on 127.0.0.1, each with a fresh SQLite file; the load")
p("generator is `crates/herd/examples/chatbench.rs` (one process, one tokio runtime), run by")
p(f"`bench/chat.sh`. **The machine has {nproc} cores, shared by the load generator, every")
p("replica and Redis**: each figure includes the competition for them, and the generator")
p("reads its clock on the same cores it shares with the servers.")
p("")
p("### Goals")
p("")
p("| measure | goal | measured | measured ÷ goal | met |")
p("|---|---:|---:|---:|:---:|")
for config in [c for c in ("redis", "postgres") if c in lat_configs]:
    for n in lat_ns:
        r = load(f"latency-{config}-{n}.json")
        v = r["p99_us"]
        store = "SQLite" if config == "redis" else "PostgreSQL"
        ratio = "n/a" if v is None else f"{v / 10000:.2f}"
        p(f"| cross-replica fan-out p99 over Redis, {store}, {num(float(rate))} msg/s, {n} subscribers | ≤ 10 ms | {ms(v)} | {ratio} | {met(v is not None and v <= 10000 and r['missing'] == 0)} |")
for bus in tp_buses:
    for n in tp_ns:
        r = load(f"throughput-{bus}-{n}.json")
        v = r["delivered_per_s_per_core"] or 0
        p(f"| delivered messages/s per core, `--bus {bus}`, {n} subscribers | ≥ 25,000 | {num(v)} | {v / 25000:.2f} | {met(v >= 25000 and not r['closed_early'])} |")
idle = load("idle.json")
kib = idle["kib_per_connection"]
p(f"| resident memory per idle connection, {num(idle['connections'])} open | ≤ 16 KiB | {kib:.1f} KiB | {kib / 16:.2f} | {met(kib <= 16 and idle['still_open'] == idle['connections'])} |")
p("")
p("For comparison: Centrifugo publishes about 12,500 delivered messages/s per core and")
p("advises 30-50 KB per idle connection.")
p("")

p("### 1. Fan-out latency across replicas")
p("")
p(f"A sender on replica A sends `send` frames on one WebSocket at {num(float(rate))} a second, on a")
p("fixed schedule and without waiting for acks; the room's subscribers are all on replica")
p("B. Latency is the moment a subscriber reads the `message` frame minus the moment just")
p("before the sender wrote the `send` frame, both read from one `Instant` in chatbench (the")
p("body carries the send time). It includes the commit on A (a message is published only")
p(f"once it is durable). {warmup} s of messages are sent first and not counted, then {duration} s are;")
p("percentiles are over every (message, subscriber) pair. \"ack\" is the sender's own")
p("send-to-ack time on A. Both replicas share one SQLite file; the SQL tail polls the")
p("event log every `--bus-poll-interval` (50 ms is the default). With n subscribers, B writes")
p("n frames a message and chatbench reads them, on the cores everything else shares.")
if "redis-tmpfs" in lat_configs:
    p("The diagnostic row repeats the Redis run with the shared SQLite file on tmpfs")
    p("(`/dev/shm`), where syncing it to disk costs nothing (WAL checkpoints sync it): not a")
    p("setting to run with, a way to see what the disk costs the tail.")
p("")
p("| bus | subscribers | p50 | p90 | p99 | p99.9 | max | ack p50 / p99 | sent msg/s | received / expected | cores: herd A / herd B / Redis / chatbench / other work |")
p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for config in lat_configs:
    for n in lat_ns:
        r = load(f"latency-{config}-{n}.json")
        cpu = r["cpu"]
        a, b = (cpu["server_cores"] + [None, None])[:2]
        redis = (cpu.get("also_each_cores") or [cpu["also_cores"]])[0]
        cores = " / ".join("n/a" if c is None else f"{c:.2f}" for c in (a, b, redis, cpu["generator_cores"], cpu["other_cores"]))
        expected = r["measured_messages"] * r["subscribers"]
        p(f"| {label(config)} | {n} | {ms(r['p50_us'])} | {ms(r['p90_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | {ms(r['max_us'])} | {ms(r['ack_p50_us'])} / {ms(r['ack_p99_us'])} | {num(r['achieved_rate'] or 0)} | {num(r['samples'])} / {num(expected)} | {cores} |")
problems = []
for config in lat_configs:
    for n in lat_ns:
        r = load(f"latency-{config}-{n}.json")
        what = []
        if r["send_errors"]:
            what.append(f"sends refused {r['send_errors']}")
        if r["closed"]:
            codes = {}
            for c in r["closed"]:
                codes[c] = codes.get(c, 0) + 1
            what.append("subscribers closed by the server: " + ", ".join(f"{k} × {v}" for k, v in sorted(codes.items())))
        if r["out_of_order"]:
            what.append(f"{r['out_of_order']} out of seq order")
        if r["missing"]:
            what.append(f"{num(r['missing'])} (message, subscriber) pairs never received")
        if what:
            problems.append(f"{label(config)}, {n} subscribers: " + "; ".join(what))
p("")
p("cores = CPU time over the run ÷ its wall time; other work = the machine's busy time")
p("minus herd's, Redis's, PostgreSQL's (its postmaster and every backend, whoever's) and")
p("chatbench's: someone else's processes (builds, tests), and the kernel's softirq threads.")
if problems:
    p("Not clean (4008 = the subscriber's outbound queue filled: the server cut it off, and")
    p("it would resume from its last seq):")
    p("")
    for x in problems:
        p(f"- {x}")
else:
    p("Every subscriber received every message once, in seq order; no send was refused.")
p("")

def stage(r, name, what=("mean", "p99")):
    st = (r.get("stages") or {}).get(name) or {}
    if not st.get("count"):
        return "n/a"
    return " / ".join(ms(st.get(w)) for w in what)
def posts(r):
    st = (r.get("stages") or {}).get("commit_posts") or {}
    if not st.get("count"):
        return "n/a"
    return f"{st['mean']:.1f} / {st['p99']:.0f}"
def cores_of(r):
    cpu = r["cpu"]
    a, b = (cpu["server_cores"] + [None, None])[:2]
    each = (cpu.get("also_each_cores") or []) + [None, None]
    return " / ".join("n/a" if c is None else f"{c:.2f}" for c in (a, b, each[0], each[1], cpu["generator_cores"], cpu["other_cores"]))
def stage_rows(rows):
    p("| run | end to end p50 / p99 | commit queue | commit | posts a commit (mean / p99) | announce queue | publish | fan-out on B | write on B | cores: herd A / herd B / Redis / PostgreSQL / chatbench / other |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for what, r in rows:
        p(f"| {what} | {ms(r['p50_us'])} / {ms(r['p99_us'])} | {stage(r, 'commit_queue')} | {stage(r, 'commit')} | {posts(r)} | {stage(r, 'announce_queue')} | {stage(r, 'publish')} | {stage(r, 'fanout')} | {stage(r, 'write')} | {cores_of(r)} |")
def stage_legend():
    p("Each stage cell is mean / p99 of the servers' own `herd_chat_stage_seconds` histograms")
    p("(read from `/metrics` at the end of the warm-up's sends and at the end of the run; the")
    p("p99 is interpolated within a bucket, as Prometheus's `histogram_quantile` does). On A, per")
    p("message: *commit queue* = submitted until its room's commit starts; *commit* = that")
    p("commit (all its round trips and the sync); *announce queue* = commit done until its")
    p("PUBLISH starts (waiting for the sender's ack to be queued and for earlier messages'")
    p("PUBLISH); *publish* = the PUBLISH round trip. On B, per message and subscriber:")
    p("*fan-out* = the replica decoded the bus delivery until that subscriber's frame is")
    p("queued; *write* = queued until the write to the socket is flushed. What the stages do")
    p("not cover is the sender's frame waiting in A's socket, Redis's delivery to B, and")
    p("chatbench's own reading. Redis and PostgreSQL cores include their children (the")
    p("backends), so PostgreSQL's are every backend's, other users' of the shared server too.")
    p("")

pg_rows = [(f"Redis, PostgreSQL, {n} subscribers, {num(float(rate))} msg/s", load(f"latency-postgres-{n}.json")) for n in lat_ns] if "postgres" in lat_configs else []
if pg_rows:
    p("Where the time goes in the PostgreSQL + Redis runs:")
    p("")
    stage_rows(pg_rows)
    p("")
    stage_legend()

sweep = env["SWEEP_RATES"].split()
if sweep:
    p("### 1b. Latency against offered load, PostgreSQL + Redis")
    p("")
    p(f"As above, on two replicas sharing one PostgreSQL database, {env['SWEEP_SUBSCRIBERS']} subscribers on B,")
    p("one run per offered rate (one sending socket), all in one run of the script. Where p99")
    p("leaves the single-digit milliseconds is the knee; the stages say which one grew.")
    p("")
    p("| offered msg/s | sent msg/s | p50 | p99 | p99.9 | ack p50 / p99 | received / expected |")
    p("|---:|---:|---:|---:|---:|---:|---:|")
    for rate_s in sweep:
        r = load(f"sweep-{rate_s}.json")
        expected = r["measured_messages"] * r["subscribers"]
        p(f"| {num(float(rate_s))} | {num(r['achieved_rate'] or 0)} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | {ms(r['ack_p50_us'])} / {ms(r['ack_p99_us'])} | {num(r['samples'])} / {num(expected)} |")
    p("")
    stage_rows([(f"{num(float(x))} msg/s", load(f"sweep-{x}.json")) for x in sweep])
    p("")
    if not pg_rows:
        stage_legend()

p("### 2. Delivered messages per second per core")
p("")
p("One replica; the subscribers all follow one room, and one sender sends as fast as they")
p(f"keep up: at most {window} messages ahead of the slowest subscriber (below the 256-frame")
p("`--ws-queue`, so none is cut off with 4008). Delivered = `message` frames read by all")
p("subscribers together, a second; herd cores = the server's utime + stime")
p("(`/proc/PID/stat`) over the measured window, divided by the window; per core = delivered")
p(f"÷ herd cores. {warmup} s of warm-up, then {duration} s measured. Redis's own CPU (one PUBLISH and")
p("one delivery a message, not a subscriber) is not counted.")
p("")
p("| bus | subscribers | sent msg/s | delivered/s | herd cores | **delivered/s per core** | cores: Redis / chatbench / other work |")
p("|---|---:|---:|---:|---:|---:|---:|")
for bus in tp_buses:
    for n in tp_ns:
        r = load(f"throughput-{bus}-{n}.json")
        cpu = r["cpu"]
        p(f"| `{bus}` | {n} | {num(r['sent_per_s'])} | {num(r['delivered_per_s'])} | {r['server_cores']:.2f} | **{num(r['delivered_per_s_per_core'] or 0)}** | {cpu['also_cores']:.2f} / {cpu['generator_cores']:.2f} / {cpu['other_cores']:.2f} |")
closed = {f"{b}/{n}": load(f"throughput-{b}-{n}.json")["closed_early"] for b in tp_buses for n in tp_ns}
closed = {k: v for k, v in closed.items() if v}
p("")
p("No subscriber was cut off." if not closed else f"Subscribers cut off: {closed}.")
p("")

p("### 3. Resident memory per idle connection")
p("")
p(f"One replica (`--bus redis`). Its VmRSS (`/proc/PID/status`) is read after "
  f"{idle['warmup_connections']} connections")
p("have been opened and closed (so that what the first connection initialises is in the")
p(f"baseline), then {num(idle['connections'])} authenticated connections are opened, {idle['batch']} handshakes at a time,")
p(f"each subscribed to one room and then left idle; VmRSS is read again {idle['settle_s']:.0f} s after the")
p("last one is subscribed. Per connection = (after - before) ÷ connections; a handshake is")
p("TCP connect, upgrade, `ready`, `subscribe`, `subscribed`. RSS is user")
p("space only; the kernel's socket buffers (`/proc/net/sockstat`, mostly empty for idle")
p("sockets) are shown apart.")
p("")
p("| connections | still open | RSS before | RSS after | **per connection** | RSS after closing them all | kernel TCP memory before / after | opening took | handshake p50 / p99 |")
p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
def mib(k):
    return "n/a" if k is None else f"{k / 1024:.1f} MiB"
p(f"| {num(idle['connections'])} | {num(idle['still_open'])} | {mib(idle['rss_before_kib'])} | {mib(idle['rss_after_kib'])} | **{kib:.1f} KiB** ({num(idle['bytes_per_connection'])} B) | {mib(idle['rss_after_close_kib'])} | {idle['kernel_tcp_kib_before']:.0f} KiB / {idle['kernel_tcp_kib_after']:.0f} KiB | {idle['open_s']:.1f} s | {ms(idle['handshake_p50_us'])} / {ms(idle['handshake_p99_us'])} |")
p("")
print("\n".join(out))
PY
    printf -- '- Script: `%s`\n' "$INVOCATION"
    printf -- '- Replicas: `herd serve --listen 127.0.0.1:0 --database sqlite://<fresh file> --argon2-memory-kib 64 --argon2-iterations 1 --access-ttl 1h --ws-sends-per-second 1000000 --ws-frames-per-second 1000000 --ws-max-connections %s --ws-max-connections-per-user %s` plus, for latency, `--bus redis --redis-url %s` or `--bus sql --bus-poll-interval <interval>` on two replicas sharing the file; for throughput `--bus <bus>`; for memory `--bus redis`\n' \
        "$((IDLE_CONNECTIONS + 2000))" "$((IDLE_CONNECTIONS + 2000))" "$REDIS_URL"
    printf -- '- chatbench: `chatbench latency --send-url <A> --recv-url <B> --subscribers <n> --rate %s --warmup %s --duration %s`; `chatbench throughput --url <replica> --server-pid <pid> --subscribers <n> --window %s --warmup %s --duration %s`; `chatbench idle --url <replica> --server-pid <pid> --connections %s --batch %s`\n' \
        "$RATE" "$WARMUP" "$DURATION" "$TP_WINDOW" "$WARMUP" "$DURATION" "$IDLE_CONNECTIONS" "$IDLE_BATCH"
    if ((QUIET_WAIT > 0)); then
        printf -- '- Each attempt waited (at most %ss) for the cores to be under %s%% busy before it started; %s of %s started on a busy machine anyway\n' \
            "$QUIET_WAIT" "$QUIET_BUSY" "$NOISY_STARTS" "$RUNS"
    fi
    printf -- '- A run during which other work took more than %s cores was run again, at most %s attempts in all (%s attempts for the %s runs); %s of the results kept are still above that\n' \
        "$NOISE_MAX" "$ATTEMPTS" "$RUNS" "$(find "$WORK" -maxdepth 1 -name '*.json' | wc -l)" "$NOISY_RESULTS"
    printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf -- '- `nproc`: %s; load average before the runs: %s; `ulimit -n`: %s\n' "$(nproc)" "$LOAD_BEFORE" "$(ulimit -n)"
    printf -- '- Commit (when the binaries were built): %s\n' "$COMMIT"
    printf -- '- Redis %s\n' "$REDIS_VERSION"
    printf '<!-- chat:end -->\n'
)

printf '\n%s\n\n' "$SECTION"

if [[ ${NO_DOCS:-} == 1 ]]; then
    exit 0
fi

bench_write_section chat "$SECTION"
