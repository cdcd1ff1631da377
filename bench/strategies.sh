#!/usr/bin/env bash
# GET /v1/me on one herd replica under each session strategy, measured with wrk in one
# run: throughput and latency side by side, and where the CPU goes.
#
#   memory           --sessions memory                      (session ids in the process)
#   shared-redis     --sessions shared --redis-url ...      (a Redis GET+TTL per request)
#   shared-sqlite    --sessions shared, SQLite              (a SELECT per request)
#   shared-postgres  --sessions shared, PostgreSQL          (a SELECT per request)
#   token            --sessions token (the default), SQLite (a signature check, cached)
#
# Usage: bench/strategies.sh     (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   DURATION=10s   length of each measured run
#   WARMUP=2s      length of the discarded warm-up run after each server start
#   ROUNDS=3       measured rounds, each going through all five configs (the order
#                  rotates from round to round); the table shows medians
#   THREADS=2      wrk threads
#   CONNECTIONS=64 wrk connections
#   REDIS_PORT=6379     Redis on 127.0.0.1, for shared-redis
#   PG_PORT=5432        PostgreSQL on 127.0.0.1 (user postgres, trust auth), for
#   PG_ADMIN_DB=postgres  shared-postgres: a fresh database is created in it for the run
#                       and dropped at exit
#   QUIET_WAIT=60  before each measured run, wait at most this many seconds for the cores
#   QUIET_BUSY=25  to be less than QUIET_BUSY% busy over a second (someone else's build
#                  running through a run says nothing about herd); 0 measures at once
#   NOISE_MAX=10   a run during which other work took more than this % of the busy CPU
#   RETRIES=2      is measured again, on the same server, at most RETRIES times
#   CARGO_TARGET_DIR  (default: <repo>/target)
#   HERD_BENCH_PROFILE=release  the cargo profile herd is built with
#   HERD_BIN       a herd binary to run as it is, unbuilt
#   HERD_BENCH_DOCS=docs/benchmarks.md  the file the section is written to
#   NO_DOCS=1      print the tables only; leave docs/benchmarks.md alone
#
# Every measured run gets a server of its own: started fresh (127.0.0.1, a port the
# kernel picks), a user signed up and logged in, warmed up, measured, logged out (which
# deletes the session, in Redis too) and stopped before the next config starts. The
# login's access_token is the bearer under every strategy: a signed token under `token`,
# the session id under `memory` and `shared`. Anything still running, and the PostgreSQL
# database, are gone on exit, whatever happens.
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
PG_PORT=${PG_PORT:-5432}
PG_ADMIN_DB=${PG_ADMIN_DB:-postgres}
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_BUSY=${QUIET_BUSY:-25}
NOISE_MAX=${NOISE_MAX:-10}
RETRIES=${RETRIES:-2}

INVOCATION="bench/strategies.sh (DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONFIGS=(memory shared-redis shared-sqlite shared-postgres token)
declare -A LABEL=(
    [memory]='`memory`'
    [shared-redis]='`shared`, Redis'
    [shared-sqlite]='`shared`, SQLite'
    [shared-postgres]='`shared`, PostgreSQL'
    [token]='`token`'
)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
PSQL=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1)

# --- 1. tools, services and build ----------------------------------------------------
bench_require_tools
command -v psql >/dev/null || die "psql is required (for the PostgreSQL database of the run)"
command -v redis-cli >/dev/null || die "redis-cli is required (to check that Redis is up)"
[[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>&1) == PONG ]] ||
    die "no Redis answering at $REDIS_URL"
"${PSQL[@]}" -d "$PG_ADMIN_DB" -c 'SELECT 1' >/dev/null ||
    die "no PostgreSQL accepting user postgres at 127.0.0.1:$PG_PORT/$PG_ADMIN_DB"
REDIS_PID=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | tr -d '\r' | sed -n 's/^process_id://p')
# The postmaster collects the CPU time of the backends that exit (see cpu_stop).
POSTMASTER_PID=$(head -n1 "$("${PSQL[@]}" -d "$PG_ADMIN_DB" -c 'SHOW data_directory')/postmaster.pid" 2>/dev/null) ||
    POSTMASTER_PID=
bench_build

# --- 2. scratch space and the PostgreSQL database -------------------------------------
bench_init herd-strategies
PGDB=
bench_on_exit() {
    if [[ -n $PGDB ]]; then
        "${PSQL[@]}" -d "$PG_ADMIN_DB" -c "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" ||
            log "warning: could not drop the PostgreSQL database $PGDB"
    fi
}
NAME=herd_bench_$$_$RANDOM
log "creating the PostgreSQL database $NAME"
"${PSQL[@]}" -d "$PG_ADMIN_DB" -c "CREATE DATABASE $NAME"
PGDB=$NAME

# The flags of each config. Long lifetimes, so that nothing expires mid-run; each config
# keeps its own SQLite file (accounts, and sessions under shared-sqlite) across rounds.
# Signups are not metered: under shared-redis the meter lives in Redis and outlasts the
# run, and every run signs up from 127.0.0.1.
config_flags() { # config
    FLAGS=(--access-ttl 1h --session-idle-timeout 1h --signup-limit-address off)
    case $1 in
        memory) FLAGS+=(--sessions memory --database "sqlite://$WORK/memory.db") ;;
        shared-redis) FLAGS+=(--sessions shared --redis-url "$REDIS_URL" --database "sqlite://$WORK/shared-redis.db") ;;
        shared-sqlite) FLAGS+=(--sessions shared --database "sqlite://$WORK/shared-sqlite.db") ;;
        shared-postgres) FLAGS+=(--sessions shared --database "postgres://postgres@127.0.0.1:$PG_PORT/$PGDB") ;;
        token) FLAGS+=(--sessions token --database "sqlite://$WORK/token.db") ;;
        *) die "unknown config $1" ;;
    esac
}

# --- 3. CPU accounting -----------------------------------------------------------------
# Clock ticks spent, over each measured run, by herd, by the store's own processes
# (redis-server; the PostgreSQL backends of the run's database), by wrk, and by the
# whole machine; what remains is whatever else ran meanwhile.
CLK_TCK=$(getconf CLK_TCK)
stat_fields() { # pid: the fields of /proc/PID/stat after the command name, or nothing
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    printf '%s\n' "${stat##*) }"
}
proc_ticks() { # pid: its utime + stime, all threads; 0 once it has gone
    local fields
    read -ra fields <<<"$(stat_fields "$1")"
    echo $((${fields[11]:-0} + ${fields[12]:-0}))
}
reaped_ticks() { # pid: cutime + cstime, the CPU of the children it has waited for
    local fields
    read -ra fields <<<"$(stat_fields "$1")"
    echo $((${fields[13]:-0} + ${fields[14]:-0}))
}
machine_ticks() { # busy ticks of all cores together
    local _cpu user nice system _idle _iowait irq softirq steal _rest
    read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}
store_pids() { # config
    case $1 in
        shared-redis) echo "$REDIS_PID" ;;
        shared-postgres)
            "${PSQL[@]}" -d "$PG_ADMIN_DB" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$PGDB'" ;;
    esac
}
# The CPU of the store's processes that have exited and been reaped: the PostgreSQL
# backends that herd's pool closed. It drops a connection whose query was cancelled, as
# happens to the requests in flight when wrk closes its connections at the end of a run,
# and the ticks of those backends would vanish with them.
store_reaped() { # config
    if [[ $1 == shared-postgres && -n $POSTMASTER_PID ]]; then
        reaped_ticks "$POSTMASTER_PID"
    else
        echo 0
    fi
}
# Calls and µs of command execution Redis has counted so far, all commands together.
redis_commands() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2/p' |
        awk '{ calls += $1; usec += $2 } END { print calls + 0, usec + 0 }'
}
declare -A STORE_BEFORE
cpu_start() { # config
    local pid
    STORE_BEFORE=()
    for pid in $(store_pids "$1"); do
        STORE_BEFORE[$pid]=$(proc_ticks "$pid")
    done
    REAPED_BEFORE=$(store_reaped "$1")
    [[ $1 != shared-redis ]] || read -r REDIS_CALLS_BEFORE REDIS_USEC_BEFORE <<<"$(redis_commands)"
    HERD_BEFORE=$(proc_ticks "$SERVER_PID")
    WRK_BEFORE=$(reaped_ticks $$)
    MACHINE_BEFORE=$(machine_ticks)
    WALL_BEFORE=$EPOCHREALTIME
}
# Appends "herd_us store_us wrk_us other_us busy_pct" to $WORK/cpu-<config>: CPU µs per
# request of herd, of the store's processes, of wrk (the children this script reaped:
# wrk and the tee behind it), of everything else, and how busy the cores were. Backends
# that connected during the run count from zero; those that exited count through the
# postmaster, less what they had spent before (the postmaster's other reaped children,
# the psql sessions of store_pids included, are noise of a tick or two). Under
# shared-redis, also appends "commands_per_request command_us_per_request" to
# $WORK/redis-commands, from Redis's own counters.
cpu_stop() { # config requests
    local wall=$EPOCHREALTIME machine herd wrk store pid calls usec
    local -A after=()
    machine=$(($(machine_ticks) - MACHINE_BEFORE))
    wrk=$(($(reaped_ticks $$) - WRK_BEFORE))
    herd=$(($(proc_ticks "$SERVER_PID") - HERD_BEFORE))
    for pid in $(store_pids "$1"); do
        after[$pid]=$(proc_ticks "$pid")
    done
    store=$(($(store_reaped "$1") - REAPED_BEFORE))
    for pid in "${!after[@]}"; do
        store=$((store + after[$pid] - ${STORE_BEFORE[$pid]:-0}))
    done
    for pid in "${!STORE_BEFORE[@]}"; do
        [[ -v after[$pid] ]] || store=$((store - STORE_BEFORE[$pid]))
    done
    if [[ $1 == shared-redis ]]; then
        read -r calls usec <<<"$(redis_commands)"
        python3 -c 'import sys; c, u, n = map(float, sys.argv[1:]); print(f"{c / n:.2f} {u / n:.2f}")' \
            "$((calls - REDIS_CALLS_BEFORE))" "$((usec - REDIS_USEC_BEFORE))" "$2" >>"$WORK/redis-commands"
    fi
    python3 - "$CLK_TCK" "$2" "$WALL_BEFORE" "$wall" "$herd" "$store" "$wrk" "$machine" "$(nproc)" \
        >>"$WORK/cpu-$1" <<'PY'
import sys
tck, requests, start, end, herd, store, wrk, machine, cores = map(float, sys.argv[1:])
us = lambda ticks: round(ticks * 1e6 / tck / requests, 1)
print(us(herd), us(store), us(wrk), us(max(machine - herd - store - wrk, 0)),
      round(100 * machine / tck / ((end - start) * cores)))
PY
}

# Waits, at most QUIET_WAIT seconds, for the cores to be less than QUIET_BUSY% busy over
# a second; counts the runs that had to start on a busy machine anyway in NOISY_STARTS.
NOISY_STARTS=0
wait_for_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) before after busy said=
    ((QUIET_WAIT > 0)) || return 0
    while :; do
        read -r before _ <<<"$(machine_ticks)"
        sleep 1
        read -r after _ <<<"$(machine_ticks)"
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

# --- 4. the rounds ---------------------------------------------------------------------
bench_prepare_wrk

# The share of the busy CPU that other work took in the last run of a config, in %.
noise_of_last_run() { # config
    tail -n1 "$WORK/cpu-$1" | awk '{ total = $1 + $2 + $3 + $4; print (total > 0 ? int(100 * $4 / total) : 0) }'
}
drop_last_run() { # config
    local file
    for file in "$WORK/results-$1" "$WORK/cpu-$1" "$WORK/redis-commands"; do
        [[ $file != */redis-commands || $1 == shared-redis ]] || continue
        sed -i '$d' "$file"
    done
}

# One measured run of a config on a server of its own. A run that other work disturbed
# (NOISE_MAX) is measured again on the same server, RETRIES times at most.
RETRIED=0
KEPT_NOISY=0
measure() { # config
    local config=$1 status noise attempt
    config_flags "$config"
    wait_for_quiet
    log "config: $config (${FLAGS[*]})"
    bench_start_server "$WORK/server-$config.log" "${FLAGS[@]}"
    bench_login
    export HERD_BENCH_TOKEN=$TOKEN
    bench_warmup "$config" "$BASE/v1/me"
    for attempt in $(seq 0 "$RETRIES"); do
        cpu_start "$config"
        run_wrk "$config" "$BASE/v1/me"
        cpu_stop "$config" "$WRK_REQUESTS"
        noise=$(noise_of_last_run "$config")
        ((noise > NOISE_MAX)) || break
        if ((attempt == RETRIES)); then
            log "warning: other work took ${noise}% of the CPU during this run; keeping it all the same"
            KEPT_NOISY=$((KEPT_NOISY + 1))
            break
        fi
        log "other work took ${noise}% of the CPU during this run; measuring it again"
        drop_last_run "$config"
        RETRIED=$((RETRIED + 1))
        wait_for_quiet
    done
    unset HERD_BENCH_TOKEN
    # Logging out ends the session, so none is left behind in Redis.
    status=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST \
        -H "Authorization: Bearer $TOKEN" "$BASE/v1/auth/logout") || true
    [[ $status == 204 ]] || log "warning: logout returned $status"
    bench_stop_server
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    for i in $(seq 0 $((${#CONFIGS[@]} - 1))); do
        measure "${CONFIGS[$(((i + round - 1) % ${#CONFIGS[@]}))]}"
    done
done

bench_medians "${CONFIGS[@]}"
declare -A CPU_HERD CPU_STORE CPU_WRK CPU_OTHER BUSY
for config in "${CONFIGS[@]}"; do
    read -r "CPU_HERD[$config]" "CPU_STORE[$config]" "CPU_WRK[$config]" "CPU_OTHER[$config]" "BUSY[$config]" \
        < <(python3 - "$WORK/cpu-$config" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
print(*(f"{statistics.median(col):.1f}" for col in zip(*rows)))
PY
)
    log "$config CPU rounds (herd_us store_us wrk_us other_us busy%): $(paste -sd';' "$WORK/cpu-$config")"
done

read -r REDIS_COMMANDS REDIS_COMMAND_US < <(python3 - "$WORK/redis-commands" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
print(*(f"{statistics.median(col):.2f}" for col in zip(*rows)))
PY
)

# --- 5. report -----------------------------------------------------------------------
TOKEN_VS_REDIS=$(ratio "${RPS[token]}" "${RPS[shared-redis]}")
if python3 -c 'import sys; sys.exit(not float(sys.argv[1]) >= 1.3)' "$TOKEN_VS_REDIS"; then
    THROUGHPUT_MET=yes
else
    THROUGHPUT_MET=no
fi
if [[ ${P99[token]} -lt ${P99[shared-redis]} ]]; then P99_MET=yes; else P99_MET=no; fi
if [[ $THROUGHPUT_MET == yes && $P99_MET == yes ]]; then
    VERDICT='**met**'
elif [[ $THROUGHPUT_MET == yes ]]; then
    VERDICT='**not met**: the throughput is there, the p99 is not lower'
elif [[ $P99_MET == yes ]]; then
    VERDICT="**not met**: the p99 is lower, but the throughput is ${TOKEN_VS_REDIS}x, short of 1.3x"
else
    VERDICT="**not met**: ${TOKEN_VS_REDIS}x, short of 1.3x, and the p99 is not lower"
fi
if [[ $P99_MET == yes ]]; then P99_CMP='<'; else P99_CMP='>='; fi

TABLE=$(
    printf '| config | requests/s | p50 | p99 | token ÷ this (requests/s) |\n'
    printf '|---|---:|---:|---:|---:|\n'
    for config in "${CONFIGS[@]}"; do
        printf '| %s | %s | %s | %s | %s |\n' "${LABEL[$config]}" "${RPS[$config]}" \
            "$(fmt_us "${P50[$config]}")" "$(fmt_us "${P99[$config]}")" \
            "$(ratio "${RPS[token]}" "${RPS[$config]}")"
    done
    printf '\nGoal: token >= 1.3x shared-on-Redis throughput, with a lower p99. Measured: token\n'
    printf '%s requests/s = **%sx** shared-on-Redis %s; p99 %s %s %s. Goal %s.\n' \
        "${RPS[token]}" "$TOKEN_VS_REDIS" "${RPS[shared-redis]}" \
        "$(fmt_us "${P99[token]}")" "$P99_CMP" "$(fmt_us "${P99[shared-redis]}")" "$VERDICT"
)
CPU_TABLE=$(
    printf '| config | herd | store process | wrk | everything else | cores busy |\n'
    printf '|---|---:|---:|---:|---:|---:|\n'
    for config in "${CONFIGS[@]}"; do
        case $config in
            shared-redis) store="${CPU_STORE[$config]} µs" ;;
            shared-postgres) store="${CPU_STORE[$config]} µs" ;;
            *) store='(in herd)' ;;
        esac
        printf '| %s | %s µs | %s | %s µs | %s µs | %s%% |\n' "${LABEL[$config]}" \
            "${CPU_HERD[$config]}" "$store" "${CPU_WRK[$config]}" "${CPU_OTHER[$config]}" "${BUSY[$config]%.*}"
    done
)

REDIS_NOTE=$(
    printf 'Under `shared`, Redis: %s commands a request (a pipelined `GET`+`TTL`), executing in\n' "$REDIS_COMMANDS"
    printf '%s µs a request all told (Redis'"'"'s `INFO commandstats`), of the %s µs redis-server spent:\n' \
        "$REDIS_COMMAND_US" "${CPU_STORE[shared-redis]}"
    printf 'the rest is its network I/O.\n'
)
printf '\n%s\n\nCPU per request (median of the rounds):\n\n%s\n\n%s\n\n' "$TABLE" "$CPU_TABLE" "$REDIS_NOTE"

if [[ ${NO_DOCS:-} == 1 ]]; then
    exit 0
fi

SECTION=$(
    printf '<!-- strategies:begin -->\n'
    printf '## Session strategies: `GET /v1/me` under each `--sessions` (wrk)\n\n'
    printf 'One replica (`herd serve`, %s build, `--access-ttl 1h --session-idle-timeout 1h`)\n' "$PROFILE"
    printf 'on 127.0.0.1, under each strategy in turn; wrk, the server, Redis and PostgreSQL share\n'
    printf 'the machine. Every request carries the bearer the login returned: a signed access\n'
    printf 'token under `token` (verified once, then found in the replica'"'"'s token cache), the\n'
    printf 'session id under `memory` and `shared` (looked up on every request: in the process,\n'
    printf 'with a Redis `GET`+`TTL` pipeline, or with a `SELECT` on SQLite or PostgreSQL).\n'
    printf 'Accounts live in SQLite in every config but the PostgreSQL one. Each measured run has a\n'
    printf 'server of its own, started fresh and warmed up for %s; ' "$WARMUP"
    if ((ROUNDS == 1)); then
        printf 'one round of the five.\n\n'
    else
        printf 'each figure is the median of %s\n' "$ROUNDS"
        printf 'rounds, each going through the five configs, the order rotating from round to round.\n\n'
    fi
    printf '%s\n\n' "$TABLE"
    printf 'Where the CPU goes, per request (median of the rounds): herd'"'"'s own process (SQLite\n'
    printf 'and memory sessions run inside it), the store'"'"'s (redis-server; the PostgreSQL backends\n'
    printf 'of the run'"'"'s database), wrk, and everything else on the machine meanwhile (other\n'
    printf 'PostgreSQL processes, other users'"'"' work: noise, when it is large). This kernel has no\n'
    printf 'IRQ time accounting, so its share of loopback TCP is charged to the processes it ran in.\n\n'
    printf '%s\n\n' "$CPU_TABLE"
    printf '%s\n\n' "$REDIS_NOTE"
    printf -- '- Script: `%s`\n' "$INVOCATION"
    printf -- '- wrk command (each config, after a %s warm-up): `%s`\n' "$WARMUP" "$WRK_CMD"
    printf -- '- Requests/s per round:'
    sep=' '
    for config in "${CONFIGS[@]}"; do
        printf '%s%s %s' "$sep" "$config" "${ROUND_RPS[$config]}"
        sep='; '
    done
    printf '\n'
    if ((QUIET_WAIT > 0)); then
        printf -- '- Each run waited (at most %ss) for the cores to be under %s%% busy before it\n' "$QUIET_WAIT" "$QUIET_BUSY"
        printf '  started; runs that started on a busy machine all the same: %s\n' "$NOISY_STARTS"
    fi
    printf -- '- Runs measured again because other work took over %s%% of the CPU: %s; kept after\n' "$NOISE_MAX" "$RETRIED"
    printf '  %s retries all the same: %s\n' "$RETRIES" "$KEPT_NOISY"
    printf -- '- Redis %s; %s\n' \
        "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | tr -d '\r' | sed -n 's/^redis_version://p')" \
        "$("${PSQL[@]}" -d "$PG_ADMIN_DB" -c 'SHOW server_version' | sed 's/^/PostgreSQL /; s/ (.*//')"
    bench_provenance "$LOAD_BEFORE"
    printf '<!-- strategies:end -->\n'
)

bench_write_section strategies "$SECTION"
