#!/usr/bin/env bash
# Where herd's CPU goes on its hottest request: a perf profile of `herd serve` answering
# an authenticated `GET /v1/me` (token sessions) under wrk, reduced to the top entries by
# self time, written between the profile markers of docs/benchmarks.md.
#
# Usage: bench/profile.sh        (from anywhere; paths are relative to the repository)
# Knobs (environment):
#   DURATION=10s   how long perf samples (wrk runs 2 s longer, started first)
#   THREADS=1      wrk threads (one core is left to herd)
#   CONNECTIONS=32 wrk connections
#   TOP=12         entries in the table
#   FREQUENCY=999  samples a second
#   CARGO_TARGET_DIR, HERD_BENCH_PROFILE, HERD_BIN, HERD_BENCH_DOCS, NO_DOCS  as bench/wrk.sh
#
# Needs perf (Debian's linux-perf, installed when missing) and a kernel that lets it
# sample another process (`perf_event_paranoid` <= 1, or root). It samples the software
# cpu-clock event, which works where hardware counters are not exposed (a VM).
# It fails when perf recorded no sample of herd.
# Backticks in the printf formats below are markdown, not command substitution.
# shellcheck disable=SC2016
set -euo pipefail

DURATION=${DURATION:-10s}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
TOP=${TOP:-12}
FREQUENCY=${FREQUENCY:-999}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-30}
INVOCATION="bench/profile.sh (DURATION=$DURATION THREADS=$THREADS CONNECTIONS=$CONNECTIONS)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_require_tools
if ! command -v perf >/dev/null 2>&1; then
    log "installing perf"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
bench_build
bench_init herd-profile
bench_start_server "$WORK/server.log" --database "sqlite://$WORK/herd.db" --access-ttl 1h
bench_login
bench_prepare_wrk

seconds=${DURATION%s}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
HERD_BENCH_TOKEN=$TOKEN wrk "${WRK_ARGS[@]}" -d"$((seconds + 2))s" "$BASE/v1/me" >"$WORK/wrk.txt" &
wrk_pid=$!
log "sampling herd (pid $SERVER_PID) for $DURATION"
perf record -e cpu-clock -F "$FREQUENCY" -g -p "$SERVER_PID" -o "$WORK/perf.data" \
    -- sleep "$seconds" 2>"$WORK/perf-record.err" || { cat "$WORK/perf-record.err" >&2; die "perf record failed"; }
wait "$wrk_pid"
grep -q '^WRK_RESULT ' "$WORK/wrk.txt" || die "wrk printed no result"
REQUESTS=$(sed -n 's/^WRK_RESULT requests=\([0-9]*\).*/\1/p' "$WORK/wrk.txt")
((REQUESTS > 0)) || die "wrk completed no requests"

perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null >"$WORK/report.txt"
SAMPLES=$(sed -n 's/^# Samples: \([0-9.]*[KM]\?\).*/\1/p' "$WORK/report.txt" | head -n1)
[[ -n $SAMPLES && $SAMPLES != 0 ]] || die "perf recorded no sample of herd"

# The report's top-level lines: "    57.70%  herd  [.] symbol" (call chains are indented
# further and start with a branch character).
TABLE=$(python3 - "$WORK/report.txt" "$TOP" <<'PY'
import re, sys
path, top = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(path, errors="replace"):
    # Some perf versions add two columns ("-  -") after the symbol.
    m = re.match(r"^\s+(\d+\.\d+)%\s+\[([.k])\]\s+(.*?)(?:\s+-\s+-)?\s*$", line)
    if m:
        share, where, symbol = m.groups()
        symbol = symbol.replace("|", "\\|")
        if len(symbol) > 110:
            symbol = symbol[:107] + "..."
        rows.append(f"| {share}% | {'kernel' if where == 'k' else 'user'} | `{symbol}` |")
    if len(rows) == top:
        break
if not rows:
    sys.exit("no entries in the perf report")
print("| self | where | symbol |")
print("|---:|---|---|")
print("\n".join(rows))
PY
)
printf '\n%s\n\n' "$TABLE"
[[ ${NO_DOCS:-} == 1 ]] && exit 0

SECTION=$(
    printf '<!-- profile:begin -->\n'
    printf '## Where herd'"'"'s time goes: perf profile of `GET /v1/me` (token)\n\n'
    printf '`herd serve` (%s build, SQLite, `--access-ttl 1h`) answering an authenticated\n' "$PROFILE"
    printf '`GET /v1/me` under `wrk -t%s -c%s`, sampled with `perf record -e cpu-clock -F %s -g -p <pid>`\n' "$THREADS" "$CONNECTIONS" "$FREQUENCY"
    printf 'for %s, then `perf report --no-children --sort symbol`: the top %s entries by self\n' "$DURATION" "$TOP"
    printf 'time (%s samples; wrk completed %s requests, on the same 2 cores).\n\n' "$SAMPLES" "$REQUESTS"
    printf '%s\n\n' "$TABLE"
    printf -- '- Script: `%s`\n' "$INVOCATION"
    bench_provenance "$LOAD_BEFORE"
    printf '<!-- profile:end -->\n'
)
bench_write_section profile "$SECTION"
