#!/usr/bin/env bash
# Login and refresh throughput of herd (issue 17, item 5), in one run:
#
#   argon2-threads  argon2id alone: a password verified against its hash under herd's
#                   argon2id parameters, on one plain thread per hashing slot
#   argon2-herd     the same work in the arrangement herd uses: a tokio runtime, at most
#                   one verification per core at once behind a semaphore, each on the
#                   blocking pool (spawn_blocking); the ceiling logins are held against
#   login-sqlite    POST /v1/auth/login on `herd serve --sessions token`, SQLite file
#   login-postgres  the same on PostgreSQL (a throw-away database)
#   refresh-postgres  POST /v1/auth/refresh on PostgreSQL, rotating: each refresh presents
#                   the refresh token the previous answer gave; many sessions at once;
#                   with the CPU herd and its PostgreSQL backends spent over the window
#
# and prints the ratios: logins/s over argon2id alone (the goal: 0.90 or more) and
# refreshes/s per core herd used (the goal: 1,200 or more, 10x Keycloak's published
# sizing of 120 refreshes/s per vCPU).
#
# The login servers run at herd's shipped argon2id parameters and hashing concurrency
# (one per core) unless the ARGON2_* knobs say otherwise, and argon2 alone runs at the
# very same ones. The accounts are signed up before each measured window (signup cost
# is not counted), and each login comes from a client address of its own
# (X-Forwarded-For, herd started with --trusted-proxy 127.0.0.1), so herd's login
# throttle, on at its defaults, refuses none: a refused login fails the run. The refresh server hashes cheaply
# (--argon2-memory-kib 64), since its logins only open the sessions and are not timed;
# its per-session refresh limit is on, as shipped (10 at once), and each session is
# refreshed at most that many times.
#
# Usage: bench/auth.sh     (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   ROUNDS=3 WARMUP=2 DURATION=8   rounds through every run, the order rotating from
#                        round to round (the table shows medians); seconds per window
#   USERS=64 LOGIN_CONCURRENCY=8   accounts logged in round-robin; logins in flight
#   LOGIN_STORES="sqlite postgres"
#   MALLOC_TUNED=0       1: also log in on SQLite with glibc's malloc told a fixed mmap
#                        and trim threshold (GLIBC_TUNABLES), the run "sqlite-malloc-tuned":
#                        a diagnosis of the page faults herd's process takes a login
#   REFRESH=1            0 skips the refresh run
#   REFRESH_USERS=100 REFRESH_SESSIONS=4000 REFRESH_PER_SESSION=10 REFRESH_CONCURRENCY=32
#   ARGON2_MEMORY_KIB ARGON2_ITERATIONS ARGON2_PARALLELISM   empty: herd's defaults
#   PG_PORT=5432 PG_ADMIN_DB=postgres   PostgreSQL on 127.0.0.1 (user postgres, trust)
#   STARTUP_TIMEOUT_S=60
#   CARGO_TARGET_DIR, HERD_BENCH_PROFILE=release, HERD_BIN, HERD_BENCH_DOCS, NO_DOCS=1
#     as in bench/lib.sh; AUTHBENCH_BIN  an authbench binary to run as it is (with
#     HERD_BIN: both or neither)
#
# The servers, and the PostgreSQL databases, are gone on exit, whatever happens.
# Backticks in the printf formats below are markdown, not command substitution.
# shellcheck disable=SC2016
set -euo pipefail

ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
USERS=${USERS:-64}
LOGIN_CONCURRENCY=${LOGIN_CONCURRENCY:-8}
LOGIN_STORES=${LOGIN_STORES:-sqlite postgres}
MALLOC_TUNED=${MALLOC_TUNED:-0}
# glibc's malloc, by default, serves an allocation as large as an argon2id hash's memory
# (19 MiB) from mmap and moves its thresholds as it goes, returning memory to the kernel
# as it frees; fixed thresholds should keep such blocks in the heap. Whether that is
# where herd's page faults come from is what the run is for: not settled yet.
TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728
REFRESH=${REFRESH:-1}
REFRESH_USERS=${REFRESH_USERS:-100}
REFRESH_SESSIONS=${REFRESH_SESSIONS:-4000}
REFRESH_PER_SESSION=${REFRESH_PER_SESSION:-10}
REFRESH_CONCURRENCY=${REFRESH_CONCURRENCY:-32}
ARGON2_MEMORY_KIB=${ARGON2_MEMORY_KIB:-}
ARGON2_ITERATIONS=${ARGON2_ITERATIONS:-}
ARGON2_PARALLELISM=${ARGON2_PARALLELISM:-}
PG_PORT=${PG_PORT:-5432}
PG_ADMIN_DB=${PG_ADMIN_DB:-postgres}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-60}

INVOCATION="bench/auth.sh (ROUNDS=$ROUNDS WARMUP=$WARMUP DURATION=$DURATION USERS=$USERS LOGIN_CONCURRENCY=$LOGIN_CONCURRENCY REFRESH_SESSIONS=$REFRESH_SESSIONS REFRESH_CONCURRENCY=$REFRESH_CONCURRENCY)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
command -v psql >/dev/null || die "psql is required"
PSQL=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1)

# --- 1. build -----------------------------------------------------------------------
if [[ -n ${HERD_BIN:-} && -n ${AUTHBENCH_BIN:-} ]]; then
    HERD=$HERD_BIN AUTHBENCH=$AUTHBENCH_BIN
    log "using $HERD and $AUTHBENCH (HERD_BIN, AUTHBENCH_BIN; not built here)"
elif [[ -z ${HERD_BIN:-} && -z ${AUTHBENCH_BIN:-} ]]; then
    log "building herd and authbench ($PROFILE profile, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet --locked -p herd --example authbench &&
        cargo build --profile "$PROFILE" --quiet --locked -p herd)
    HERD=$CARGO_TARGET_DIR/$(bench_profile_dir)/herd
    AUTHBENCH=$CARGO_TARGET_DIR/$(bench_profile_dir)/examples/authbench
else
    die "set both HERD_BIN and AUTHBENCH_BIN, or neither"
fi
for binary in "$HERD" "$AUTHBENCH"; do
    [[ -x $binary ]] || die "no binary at $binary"
done
CLK_TCK=$(getconf CLK_TCK)

# The argon2id flags, the same for herd's login servers and for argon2 alone; none
# means each runs at herd's defaults (HashParams::default(), which a test holds equal to
# herd serve's flag defaults).
ARGON2_FLAGS=()
ARGON2_ALONE=()
if [[ -n $ARGON2_MEMORY_KIB ]]; then
    ARGON2_FLAGS+=(--argon2-memory-kib "$ARGON2_MEMORY_KIB")
    ARGON2_ALONE+=(--memory-kib "$ARGON2_MEMORY_KIB")
fi
if [[ -n $ARGON2_ITERATIONS ]]; then
    ARGON2_FLAGS+=(--argon2-iterations "$ARGON2_ITERATIONS")
    ARGON2_ALONE+=(--iterations "$ARGON2_ITERATIONS")
fi
if [[ -n $ARGON2_PARALLELISM ]]; then
    ARGON2_FLAGS+=(--argon2-parallelism "$ARGON2_PARALLELISM")
    ARGON2_ALONE+=(--parallelism "$ARGON2_PARALLELISM")
fi

# --- 2. servers ---------------------------------------------------------------------
bench_init herd-bench-auth
declare -A URL=() PID=()
EXTRA_PIDS=()
PG_DBS=()
bench_on_exit() {
    local pid db
    for pid in "${EXTRA_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for db in "${PG_DBS[@]}"; do
        "${PSQL[@]}" -d "$PG_ADMIN_DB" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
}

# A throw-away PostgreSQL database, dropped on exit; its URL in PG_URL. Not called in a
# command substitution: the subshell's PG_DBS would be lost and the database left behind.
postgres_database() { # name
    local db=herd_bench_auth_$1_$$
    "${PSQL[@]}" -d "$PG_ADMIN_DB" -c "CREATE DATABASE \"$db\"" >/dev/null
    PG_DBS+=("$db")
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db"
}

# `herd serve --sessions token` named NAME, kept running beside the others (the helpers
# track one server, so its pid goes to EXTRA_PIDS); sets URL[NAME] and PID[NAME].
start_herd() { # name herd-serve-flags...
    local name=$1
    shift
    bench_start_server "$WORK/server-$name.log" --sessions token --trusted-proxy 127.0.0.1 "$@"
    EXTRA_PIDS+=("$SERVER_PID")
    URL[$name]=$BASE PID[$name]=$SERVER_PID
    SERVER_PID=
}

NAMES=(argon2)
LOGIN_RUNS=()
for store in $LOGIN_STORES; do
    case $store in
        sqlite) start_herd login-sqlite --database "sqlite://$WORK/herd-login.db" "${ARGON2_FLAGS[@]}" ;;
        postgres)
            postgres_database login
            start_herd login-postgres --database "$PG_URL" "${ARGON2_FLAGS[@]}"
            ;;
        *) die "unknown store $store in LOGIN_STORES" ;;
    esac
    NAMES+=("login-$store")
    LOGIN_RUNS+=("$store")
done
if [[ $MALLOC_TUNED == 1 ]]; then
    export GLIBC_TUNABLES=$TUNABLES
    start_herd login-sqlite-malloc-tuned --database "sqlite://$WORK/herd-login-tuned.db" "${ARGON2_FLAGS[@]}"
    unset GLIBC_TUNABLES
    NAMES+=(login-sqlite-malloc-tuned)
    LOGIN_RUNS+=(sqlite-malloc-tuned)
fi
if [[ $REFRESH == 1 ]]; then
    postgres_database refresh
    REFRESH_DB=$PG_URL
    start_herd refresh-postgres --database "$REFRESH_DB" --argon2-memory-kib 64 --argon2-iterations 1
    NAMES+=(refresh-postgres)
fi

# --- 3. measurements ----------------------------------------------------------------
WINDOW=(--warmup "$WARMUP" --duration "$DURATION")
measure() { # name round
    local name=$1 out=$WORK/result-$1-$2.json
    log "round $2: $name"
    case $name in
        argon2) "$AUTHBENCH" argon2 "${ARGON2_ALONE[@]}" --clk-tck "$CLK_TCK" "${WINDOW[@]}" >"$out" ;;
        login-*)
            "$AUTHBENCH" login --url "${URL[$name]}" --server-pid "${PID[$name]}" --users "$USERS" \
                --concurrency "$LOGIN_CONCURRENCY" --clk-tck "$CLK_TCK" "${WINDOW[@]}" >"$out"
            ;;
        refresh-postgres)
            "$AUTHBENCH" refresh --url "${URL[$name]}" --server-pid "${PID[$name]}" \
                --postgres "$REFRESH_DB" --users "$REFRESH_USERS" --sessions "$REFRESH_SESSIONS" \
                --per-session "$REFRESH_PER_SESSION" --concurrency "$REFRESH_CONCURRENCY" \
                --clk-tck "$CLK_TCK" "${WINDOW[@]}" >"$out"
            ;;
    esac
    log "$name: $(cat "$out")"
}

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; round++)); do
    # The order rotates, so that no run always comes first or last.
    for ((i = 0; i < ${#NAMES[@]}; i++)); do
        measure "${NAMES[(i + round - 1) % ${#NAMES[@]}]}" "$round"
    done
done

# --- 4. the table -------------------------------------------------------------------
# Medians over the rounds, and the per-round ratios, from the JSON lines; one line of
# JSON for the section below.
SUMMARY=$(python3 - "$WORK" "$ROUNDS" "${NAMES[@]}" <<'PY'
import json, statistics, sys
work, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
runs = {n: [json.load(open(f"{work}/result-{n}-{r}.json")) for r in range(1, rounds + 1)] for n in names}
med = lambda xs: statistics.median(xs) if xs else None
out = {"argon2": {}, "logins": {}, "refresh": None}
a = runs["argon2"]
for how in ("threads", "blocking_pool"):
    out["argon2"][how] = {
        "per_s": med([r[how]["per_s"] for r in a]), "rounds": [r[how]["per_s"] for r in a],
        "cores": med([r[how]["cores"] for r in a]), "per_cpu_s": med([r[how]["per_cpu_s"] for r in a]),
        "faults": med([r[how]["page_faults_per_op"] for r in a if r[how].get("page_faults_per_op") is not None]),
    }
out["argon2"]["params"] = {k: a[0][k] for k in ("memory_kib", "iterations", "parallelism", "permits", "concurrency")}
for n in names:
    if not n.startswith("login-"):
        continue
    rs = runs[n]
    ratios = [r["per_s"] / x["blocking_pool"]["per_s"] for r, x in zip(rs, a)]
    cpu_ratios = [r["per_cpu_s"] / x["blocking_pool"]["per_cpu_s"] for r, x in zip(rs, a)]
    out["logins"][n] = {
        "per_s": med([r["per_s"] for r in rs]), "rounds": [r["per_s"] for r in rs],
        "p50_ms": med([r["p50_ms"] for r in rs]), "p99_ms": med([r["p99_ms"] for r in rs]),
        "server_cores": med([r["server_cores"] for r in rs]),
        "other_cores": med([r["other_cores"] for r in rs if r.get("other_cores") is not None]),
        "per_cpu_s": med([r["per_cpu_s"] for r in rs]),
        "faults": med([r["page_faults_per_op"] for r in rs if r.get("page_faults_per_op") is not None]),
        "ratio": med(ratios), "ratios": ratios, "cpu_ratio": med(cpu_ratios), "cpu_ratios": cpu_ratios,
    }
if "refresh-postgres" in runs:
    rs = runs["refresh-postgres"]
    pick = lambda k: med([r[k] for r in rs if r.get(k) is not None])
    both = [r["per_s"] / (r["server_cores"] + r.get("postgres_cores", 0)) for r in rs]
    out["refresh"] = {
        "per_s": pick("per_s"), "rounds": [r["per_s"] for r in rs],
        "server_cores": pick("server_cores"), "per_server_core": pick("per_server_core"),
        "per_server_core_rounds": [r["per_server_core"] for r in rs],
        "postgres_cores": pick("postgres_cores"), "postgres_backends": pick("postgres_backends"),
        "per_core_with_postgres": med(both), "generator_cores": pick("generator_cores"),
        "other_cores": pick("other_cores"), "p50_ms": pick("p50_ms"), "p99_ms": pick("p99_ms"),
        "ended_early": any(r["ended_early"] for r in rs),
    }
print(json.dumps(out))
PY
)
log "summary: $SUMMARY"
get() { python3 -c 'import json, sys; v = json.loads(sys.argv[1]); [v := v[k] for k in sys.argv[2:]]; print(json.dumps(v) if isinstance(v, (list, dict)) else v)' "$SUMMARY" "$@"; }
num() { python3 -c 'import sys; print(f"{float(sys.argv[1]):,.{int(sys.argv[2])}f}")' "$1" "${2:-0}"; }
list() { python3 -c 'import json, sys; print(", ".join(f"{float(x):,.{int(sys.argv[2])}f}" for x in json.loads(sys.argv[1])))' "$(get "$@")" 1; }
rlist() { python3 -c 'import json, sys; print(", ".join(f"{x:.2f}" for x in json.loads(sys.argv[1])))' "$(get "$@")"; }

PERMITS=$(get argon2 params permits)
SECTION=$(
    printf '<!-- auth:begin -->\n'
    printf '## Login and refresh throughput (auth.sh)\n\n'
    printf 'Command: `%s`, profile `%s`, every run in one script run, the order rotating from\n' "$INVOCATION" "$PROFILE"
    printf 'round to round; the figures are medians of %s rounds of %s s (after %s s of warm-up).\n' "$ROUNDS" "$DURATION" "$WARMUP"
    printf 'The load generator (`crates/herd/examples/authbench.rs`) runs on the same cores.\n\n'
    printf '### Logins against argon2id alone\n\n'
    printf 'argon2id at m = %s KiB, t = %s, p = %s (herd'"'"'s defaults unless the command says\n' \
        "$(get argon2 params memory_kib)" "$(get argon2 params iterations)" "$(get argon2 params parallelism)"
    printf 'otherwise), %s hashing slots (one per core, herd'"'"'s default). argon2id alone verifies a\n' "$PERMITS"
    printf 'password against its hash as fast as it can; in herd'"'"'s arrangement, %s callers share\n' "$(get argon2 params concurrency)"
    printf '%s permits and each verification runs by `spawn_blocking`, as `PasswordHasher` does.\n' "$PERMITS"
    printf 'Logins: %s accounts signed up before each window (not timed) and logged in round-robin,\n' "$USERS"
    printf '%s at once, each login from a client address of its own (`X-Forwarded-For`, with\n' "$LOGIN_CONCURRENCY"
    printf '`--trusted-proxy 127.0.0.1`), as from many clients, so the login throttle, on at its\n'
    printf 'defaults, refuses none (a refused login fails the run; a successful one counts against\n'
    printf 'no per-account limit).\n\n'
    printf '| run | per second | rounds | p50 | p99 | cores used | per CPU-second | page faults each | others'"'"' cores | per second / argon2id alone | per CPU-second / argon2id alone |\n'
    printf '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    printf '| argon2id alone, %s threads | %s | %s | | | %s | %s | %s | | | |\n' "$PERMITS" \
        "$(num "$(get argon2 threads per_s)" 1)" "$(list argon2 threads rounds)" \
        "$(num "$(get argon2 threads cores)" 2)" "$(num "$(get argon2 threads per_cpu_s)" 1)" \
        "$(num "$(get argon2 threads faults)")"
    printf '| argon2id alone, herd'"'"'s arrangement | %s | %s | | | %s | %s | %s | | 1.00 | 1.00 |\n' \
        "$(num "$(get argon2 blocking_pool per_s)" 1)" "$(list argon2 blocking_pool rounds)" \
        "$(num "$(get argon2 blocking_pool cores)" 2)" "$(num "$(get argon2 blocking_pool per_cpu_s)" 1)" \
        "$(num "$(get argon2 blocking_pool faults)")"
    for store in "${LOGIN_RUNS[@]}"; do
        n=login-$store
        printf '| herd login, %s | %s | %s | %s ms | %s ms | %s | %s | %s | %s | **%s** (rounds: %s) | **%s** (rounds: %s) |\n' "$store" \
            "$(num "$(get logins "$n" per_s)" 1)" "$(list logins "$n" rounds)" \
            "$(get logins "$n" p50_ms)" "$(get logins "$n" p99_ms)" \
            "$(num "$(get logins "$n" server_cores)" 2)" "$(num "$(get logins "$n" per_cpu_s)" 1)" \
            "$(num "$(get logins "$n" faults)")" "$(num "$(get logins "$n" other_cores)" 2)" \
            "$(num "$(get logins "$n" ratio)" 2)" "$(rlist logins "$n" ratios)" \
            "$(num "$(get logins "$n" cpu_ratio)" 2)" "$(rlist logins "$n" cpu_ratios)"
    done
    printf '\nThe goal is 0.90 or more: nothing but the hash costs. Each ratio is taken within a\n'
    printf 'round (the logins against the argon2 run of the same round); the table shows their\n'
    printf 'median. "cores used" is the CPU of the process doing the work (herd'"'"'s, or argon2'"'"'s\n'
    printf 'alone) over the window, from `/proc/PID/stat`; "per CPU-second" divides by it, so its\n'
    printf 'ratio says what a login costs herd beside the hash whatever share of the cores other\n'
    printf 'work left it. "others'"'"' cores" is what the rest of the machine used meanwhile (other\n'
    printf 'builds, PostgreSQL, the generator): on a shared machine the per-second ratio moves\n'
    printf 'with it from round to round, the per-CPU-second one much less. "page faults each" is\n'
    printf 'the working process'"'"'s minor page faults (`/proc/PID/stat` minflt) over the window,\n'
    printf 'per verification or login.\n\n'
    if [[ $MALLOC_TUNED == 1 ]]; then
        printf '`sqlite-malloc-tuned` is the `sqlite` server started with `GLIBC_TUNABLES=%s`\n' "$TUNABLES"
        printf '(fixed mmap and trim thresholds for glibc'"'"'s malloc): a diagnosis of whether herd'"'"'s\n'
        printf 'page faults come from malloc giving the 19 MiB of each verification back to the kernel.\n\n'
    fi
    if [[ $REFRESH == 1 ]]; then
        printf '### Refreshes on PostgreSQL\n\n'
        printf '%s sessions opened before each window (not timed; this server hashes at m = 64 KiB),\n' "$REFRESH_SESSIONS"
        printf 'refreshed %s at once, each session %s times in a chain, every refresh presenting the\n' "$REFRESH_CONCURRENCY" "$REFRESH_PER_SESSION"
        printf 'refresh token the previous answer gave. The per-session refresh limit is on, as shipped\n'
        printf '(10 at once), and refused none. CPU is utime + stime from `/proc/PID/stat` over the\n'
        printf 'window: herd'"'"'s process, and the PostgreSQL backends of herd'"'"'s pool (its database'"'"'s\n'
        printf 'rows in `pg_stat_activity`; the WAL writer and checkpointer, shared with everything\n'
        printf 'else on the server, are not counted).\n\n'
        printf '| refreshes/s | rounds | herd cores | **refreshes/s per herd core** | rounds | PostgreSQL backends'"'"' cores | refreshes/s per core, herd + backends | generator cores | others'"'"' cores | p50 | p99 |\n'
        printf '|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n'
        printf '| %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %s ms | %s ms |\n' \
            "$(num "$(get refresh per_s)")" "$(list refresh rounds)" "$(num "$(get refresh server_cores)" 2)" \
            "$(num "$(get refresh per_server_core)")" "$(list refresh per_server_core_rounds)" \
            "$(num "$(get refresh postgres_cores)" 2)" "$(num "$(get refresh per_core_with_postgres)")" \
            "$(num "$(get refresh generator_cores)" 2)" "$(num "$(get refresh other_cores)" 2)" \
            "$(get refresh p50_ms)" "$(get refresh p99_ms)"
        printf '\nThe goal is 1,200 refreshes/s or more per core herd uses: 10x Keycloak'"'"'s published\n'
        printf 'sizing of 120 refreshes/s per vCPU.\n'
        if [[ $(get refresh ended_early) == True ]]; then
            printf '(The sessions ran out before the end of a window; its rate is over the part run.)\n'
        fi
        printf '\n'
    fi
    printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf -- '- `nproc`: %s; load average before the runs: %s\n' "$(nproc)" "$LOAD"
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ $commit != unknown && -n $(git -C "$ROOT" status --porcelain -- . ':!bench' ':!docs' 2>/dev/null) ]]; then
        commit="$commit (with uncommitted changes)"
    fi
    printf -- '- Commit: %s\n' "$commit"
    printf '<!-- auth:end -->\n'
)
printf '%s\n' "$SECTION"
[[ -n ${NO_DOCS:-} ]] || bench_write_section auth "$SECTION"
