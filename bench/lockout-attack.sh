#!/usr/bin/env bash
# The account-lockout attack of docs/security.md ("Login throttling"), against a live
# `herd cluster` on loopback: an attacker hammers one account with wrong passwords from
# one address, then from many (X-Forwarded-For, which the cluster's replicas believe from
# their loopback balancer), while the owner logs in from elsewhere. Prints how many
# guesses were checked and refused, and the owner's login result.
#
#   bench/lockout-attack.sh                 # starts its own cluster on 127.0.0.1:$PORT
#   BASE=http://127.0.0.1:8080 bench/lockout-attack.sh   # a cluster already running
#
# Settings (environment):
#   PORT=18610          where the cluster it starts listens (loopback only)
#   REPLICAS=1          replicas; without REDIS_URL each counts on its own, so keep 1
#   REDIS_URL=          redis://127.0.0.1:6379 shares the meters between replicas
#   SINGLE=200          attempts from the single attacking address
#   ADDRESSES=50 PER_ADDRESS=10   the spread attack
#   DEADLINE_S=300      the whole run stops after this long, whatever happens
#   HERD=               the herd binary (default: cargo build -p herd, debug)
set -euo pipefail

PORT=${PORT:-18610}
REPLICAS=${REPLICAS:-1}
REDIS_URL=${REDIS_URL:-}
SINGLE=${SINGLE:-200}
ADDRESSES=${ADDRESSES:-50}
PER_ADDRESS=${PER_ADDRESS:-10}
DEADLINE_S=${DEADLINE_S:-300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() { printf 'lockout-attack: %s\n' "$*" >&2; exit 1; }
(( SINGLE <= 10000 && ADDRESSES <= 250 && PER_ADDRESS <= 100 )) || die "counts too large"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/herd-lockout.XXXXXX")
CLUSTER_PID=
cleanup() {
    [[ -n $CLUSTER_PID ]] && kill "$CLUSTER_PID" 2>/dev/null && wait "$CLUSTER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${BASE:-} ]]; then
    if [[ -z ${HERD:-} ]]; then
        (cd "$ROOT" && cargo build --quiet -p herd)
        HERD=${CARGO_TARGET_DIR:-$ROOT/target}/debug/herd
    fi
    BASE=http://127.0.0.1:$PORT
    flags=(cluster --listen "127.0.0.1:$PORT" --replicas "$REPLICAS" --database "sqlite://$WORK/herd.db")
    [[ -n $REDIS_URL ]] && flags+=(--redis-url "$REDIS_URL")
    "$HERD" "${flags[@]}" >"$WORK/cluster.log" 2>&1 &
    CLUSTER_PID=$!
    for _ in $(seq 1 120); do
        curl -fsS --max-time 1 "$BASE/readyz" >/dev/null 2>&1 && break
        kill -0 "$CLUSTER_PID" 2>/dev/null || { tail -20 "$WORK/cluster.log" >&2; die "the cluster exited"; }
        sleep 0.5
    done
    curl -fsS --max-time 1 "$BASE/readyz" >/dev/null || die "the cluster did not become ready"
fi
case $BASE in
    http://127.0.0.1:*|http://localhost:*|http://\[::1\]:*) ;;
    *) die "BASE must be a loopback address: this attacks what it points at" ;;
esac

# Names and addresses no earlier run used (Redis keeps meters up to 15 minutes).
RUN=$(printf '%04x' $((RANDOM)))
OWNER=owner$RUN$RANDOM
PASSWORD='owner passphrase 7'
started=$SECONDS

# login FROM PASSWORD [DEVICE_COOKIE] -> prints the status; keeps Set-Cookie in $WORK/set
login() {
    local from=$1 password=$2 device=${3:-} args=()
    (( SECONDS - started < DEADLINE_S )) || die "deadline of ${DEADLINE_S}s reached"
    [[ -n $device ]] && args=(-H "cookie: herd_device=$device")
    curl -sS --max-time 10 -o /dev/null -D "$WORK/set" -w '%{http_code}' \
        -H 'content-type: application/json' -H "x-forwarded-for: $from" "${args[@]}" \
        -d "{\"username\":\"$OWNER\",\"password\":\"$password\",\"cookies\":true}" \
        "$BASE/v1/auth/login"
}

# hammer N ADDRESS... -> prints "checked refused" for N wrong passwords from each address
hammer() {
    local n=$1 checked=0 refused=0 code
    shift
    for from in "$@"; do
        for _ in $(seq 1 "$n"); do
            code=$(login "$from" 'not the password')
            case $code in
                401) checked=$((checked + 1)) ;;
                429) refused=$((refused + 1)) ;;
                *) die "a wrong password got $code" ;;
            esac
        done
    done
    echo "$checked $refused"
}

status=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d "{\"username\":\"$OWNER\",\"password\":\"$PASSWORD\"}" "$BASE/v1/auth/signup")
[[ $status == 201 ]] || die "signup answered $status"

# The owner logs in once from home: the browser keeps its device cookie.
[[ $(login "fd00:$RUN:ffff::1" "$PASSWORD") == 200 ]] || die "the owner's first login failed"
DEVICE=$(grep -i '^set-cookie: herd_device=' "$WORK/set" | sed 's/^[^=]*=\([^;]*\).*/\1/' | tr -d '\r')
[[ -n $DEVICE ]] || die "no device cookie was set"

t0=$SECONDS
read -r checked refused < <(hammer "$SINGLE" "fd00:$RUN:a::1")
[[ -n ${refused:-} ]] || die "the attack from one address stopped early"
owner_new=$(login "fd00:$RUN:b::1" "$PASSWORD")
printf 'one address, %d wrong passwords: %d checked, %d refused (429) in %ds\n' \
    "$SINGLE" "$checked" "$refused" $((SECONDS - t0))
printf '  owner from another address, no device cookie, first try: %s\n' "$owner_new"

t0=$SECONDS
addresses=()
for i in $(seq 1 "$ADDRESSES"); do addresses+=("fd00:$RUN:$(printf '%x' "$((i + 16))")::1"); done
checked= refused=
read -r checked refused < <(hammer "$PER_ADDRESS" "${addresses[@]}")
[[ -n ${refused:-} ]] || die "the spread attack stopped early"
owner_device=$(login "fd00:$RUN:c::1" "$PASSWORD" "$DEVICE")
owner_bare=$(login "fd00:$RUN:d::1" "$PASSWORD")
printf '%d addresses x %d wrong passwords: %d checked, %d refused (429) in %ds\n' \
    "$ADDRESSES" "$PER_ADDRESS" "$checked" "$refused" $((SECONDS - t0))
printf '  owner from a new address with its device cookie, first try: %s\n' "$owner_device"
printf '  owner from a new address without it (a new browser):       %s\n' "$owner_bare"
# The promise: the owner got in at the first try, both times.
[[ $owner_new == 200 && $owner_device == 200 ]] || die "the owner was locked out"
