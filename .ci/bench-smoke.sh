#!/usr/bin/env bash
# Every benchmark tool, run at a tiny size so that none can rot silently: bench/wrk.sh
# (herd against bench/peer's bare axum and axum + tower-sessions; the peer, its own
# small Cargo project, is built here, debug), bench/profile.sh (perf under wrk),
# bench/instructions.sh (callgrind under wrk),
# bench/strategies.sh, bench/chat.sh (chatbench's latency, throughput and idle modes),
# bench/store-load.py, bench/logout.sh, bench/status-list.sh and bench/auth.sh
# (authbench's argon2, login and refresh modes). Each fails when it measured nothing (wrk
# completed no request, perf sampled nothing, callgrind counted nothing, chatbench
# received or delivered no message
# or kept no connection open, store-load counted no row written, logout.sh timed no
# logout, status-list.sh built no list, authbench completed no verification, login or
# refresh), and then so does this script.
#
# The figures are meaningless and go nowhere: the tools write their sections into a copy
# of docs/benchmarks.md in a temporary directory, which is then checked to hold every
# section. The binaries are the ones `cargo test --workspace` has just built and run
# (HERD_BIN, CHATBENCH_BIN, AUTHBENCH_BIN; cargo test builds the examples too), not built again: a
# `cargo build -p herd` would resolve features without the tests' dev-dependencies and
# rebuild half the workspace. bench/peer is not in the workspace: bench/wrk.sh builds it.
#
# Needs what the tools need: wrk (installed by bench/lib.sh when missing), curl,
# python3, psql, redis-cli, and PostgreSQL and Redis on 127.0.0.1 (`.ci/run` starts them).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
export HERD_BENCH_PROFILE=dev
export HERD_BIN=${HERD_BIN:-$target/debug/herd}
export CHATBENCH_BIN=${CHATBENCH_BIN:-$target/debug/examples/chatbench}
export AUTHBENCH_BIN=${AUTHBENCH_BIN:-$target/debug/examples/authbench}
for binary in "$HERD_BIN" "$CHATBENCH_BIN" "$AUTHBENCH_BIN"; do
    [[ -x $binary ]] || { echo "bench smoke: no $binary; run cargo test --workspace first" >&2; exit 1; }
done
scratch=$(mktemp -d "${TMPDIR:-/tmp}/herd-bench-smoke.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export HERD_BENCH_DOCS=$scratch/benchmarks.md
cp docs/benchmarks.md "$HERD_BENCH_DOCS"
# Every section starts out absent, so a tool that wrote nothing is caught below.
python3 - "$HERD_BENCH_DOCS" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
text = re.sub(r"<!-- ([a-z-]+):begin -->.*?<!-- \1:end -->\n?", "", text, flags=re.S)
open(path, "w", encoding="utf-8").write(text)
PY

step() {
    local name=$1 started=$SECONDS
    shift
    echo "-- $name"
    "$@" >"$scratch/$name.out" 2>"$scratch/$name.err" || {
        echo "$name failed:" >&2
        tail -n 40 "$scratch/$name.err" >&2
        exit 1
    }
    echo "   $name: $((SECONDS - started)) s"
}

step wrk env DURATION=1s WARMUP=1s ROUNDS=1 THREADS=1 CONNECTIONS=4 bench/wrk.sh
step profile env DURATION=1s THREADS=1 CONNECTIONS=4 TOP=5 bench/profile.sh
step instructions env DURATION=2s CONNECTIONS=2 bench/instructions.sh
step strategies env DURATION=1s WARMUP=1s ROUNDS=1 THREADS=1 CONNECTIONS=4 \
    QUIET_WAIT=0 RETRIES=0 bench/strategies.sh
step chat env RATE=50 WARMUP=0.5 DURATION=1 LAT_SUBSCRIBERS=2 POLL_INTERVALS=10ms \
    TP_SUBSCRIBERS=2 TP_BUSES="in-process redis" IDLE_CONNECTIONS=20 IDLE_BATCH=10 \
    LAT_DIAGNOSTIC=0 LAT_POSTGRES=1 SWEEP_RATES=50 SWEEP_SUBSCRIBERS=2 \
    QUIET_WAIT=0 ATTEMPTS=1 NOISE_MAX=1000 RUN_TIMEOUT=60 bench/chat.sh
step store-load env N=20 N_SLOW=5 IDLE_S=1 STABLE_S=0.5 bench/store-load.py
step status-list env SESSIONS=1000 ROUNDS=1 bench/status-list.sh

step logout env LOGOUTS=5 BASELINE=0 BUSES="sqlite-sql postgres-sql postgres-redis" bench/logout.sh
step auth env ROUNDS=1 WARMUP=0.5 DURATION=1 USERS=4 LOGIN_CONCURRENCY=2 \
    ARGON2_MEMORY_KIB=64 ARGON2_ITERATIONS=1 REFRESH_USERS=5 REFRESH_SESSIONS=300 \
    REFRESH_CONCURRENCY=4 bench/auth.sh

# herd lab --chaos (docs/lab.md, "Chaos"): every fault SQLite can take, at a tiny size
# (PostgreSQL and Redis are crates/herd/tests/it/lab.rs's); it fails when an invariant
# breaks, and the check below when a fault that ran checked nothing.
# The same faults then run once more in sequence on one cluster (--chaos-sequence).
step chaos "$HERD_BIN" lab --chaos all --chaos-sequence all --users 6 --no-progress \
    --warmup 1s --kill-at 2s --add-at 3s --stop-at 4s --out "$scratch/chaos" \
    -- --argon2-memory-kib 64 --argon2-iterations 1
python3 - "$scratch/chaos/results.json" <<'PY' || { echo "bench smoke: the chaos run measured nothing" >&2; exit 1; }
import json, sys
results = json.load(open(sys.argv[1]))
chaos = results["chaos"]
ran = [c for c in chaos if c["status"] == "ran"]
assert ran and all(i["checked"] > 0 for c in ran for i in c["invariants"]), chaos
sequence = results["chaos_sequence"]
windows = [w for w in sequence["windows"] if w["status"] == "ran"]
assert windows and all(i["checked"] > 0 for w in windows for i in w["invariants"]), sequence
assert len(sequence["invariants"]) == 7 and all(i["checked"] > 0 for i in sequence["invariants"]), sequence
PY

for section in wrk profile instructions strategies chat store-load logout status-list auth; do
    grep -q "<!-- $section:begin -->" "$HERD_BENCH_DOCS" ||
        { echo "bench smoke: no $section section was written" >&2; exit 1; }
done
echo "bench smoke: every tool measured something"
