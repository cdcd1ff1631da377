#!/usr/bin/env bash
# What a client with no account can do to a normal client's requests at the edge, and
# how long a request waits around a paused replica: the figures in docs/deploy.md
# ("The edge under attack").
#
# Usage: bench/edge-attack.sh [HERD_BINARY]
#   HERD_BINARY      the herd to measure (default: $CARGO_TARGET_DIR/debug/herd, built
#                    if missing; the figures are counts, not speed, so debug will do)
# Knobs (environment):
#   NGINX_BIN=/usr/sbin/nginx   nginx for the nginx rows (skipped when there is none)
#   NGINX_CONF=deploy/nginx.conf   the configuration nginx runs (its upstreams and
#                    port substituted, as crates/herd/tests/it/nginx.rs does); to measure
#                    an older one: NGINX_CONF=<(git show REV:deploy/nginx.conf)
#   ATTACKERS=4      attacker connections at once
#   ATTACKS=20       requests each attacker sends (crowded GETs and 1 MiB POSTs), one
#                    every ATTACK_INTERVAL seconds
#   ATTACK_INTERVAL=0.5  pause between one attacker's requests (0: back to back)
#   NORMAL=40        a normal client's GET /healthz during the attack, 4 a second
#   PAUSED=10        GET /healthz while one replica is SIGSTOPped
#
# Everything runs on 127.0.0.1 (ports the kernel picks), with a throw-away SQLite file
# per setup, and is stopped on exit. Every request has a 60 s timeout, so a run is
# bounded: at most a few minutes even against a build that hangs.
#
# Before/after: run it once with the old binary and the old configuration, once with
# the new, e.g.
#   git worktree add /tmp/herd-before BASE && (cd /tmp/herd-before && cargo build -p herd)
#   NGINX_CONF=<(git show BASE:deploy/nginx.conf) bench/edge-attack.sh /tmp/herd-before/target/debug/herd
#   bench/edge-attack.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HERD=${1:-$CARGO_TARGET_DIR/debug/herd}
if [[ $# -eq 0 && ! -x $HERD ]]; then
    (cd "$ROOT" && cargo build --quiet -p herd)
fi
[[ -x $HERD ]] || { echo "error: no herd at $HERD" >&2; exit 1; }
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
NGINX_CONF=${NGINX_CONF:-$ROOT/deploy/nginx.conf}
export HERD NGINX_BIN ATTACK_INTERVAL=${ATTACK_INTERVAL:-0.5} ATTACKERS=${ATTACKERS:-4} ATTACKS=${ATTACKS:-20} NORMAL=${NORMAL:-40} PAUSED=${PAUSED:-10}
CONF_COPY=$(mktemp)
trap 'rm -f "$CONF_COPY"' EXIT
cat "$NGINX_CONF" >"$CONF_COPY"
export NGINX_CONF=$CONF_COPY

exec python3 - <<'PY'
import json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time
import urllib.request

HERD = os.environ["HERD"]
NGINX = os.environ["NGINX_BIN"]
ATTACKERS, ATTACKS = int(os.environ["ATTACKERS"]), int(os.environ["ATTACKS"])
NORMAL, PAUSED = int(os.environ["NORMAL"]), int(os.environ["PAUSED"])
INTERVAL = float(os.environ["ATTACK_INTERVAL"])
TIMEOUT = 60
CHEAP = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"]
env = {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}
procs = []


def start(args, message):
    """Starts herd with JSON logs; returns (process, the `listen` of the line `message`)."""
    p = subprocess.Popen([HERD, "--log-format", "json", *args], stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, env=env)
    procs.append(p)
    for line in p.stderr:
        try:
            fields = json.loads(line)["fields"]
        except (ValueError, KeyError):
            continue
        if fields.get("message") == message:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, fields["listen"]
    raise SystemExit(f"herd exited before {message!r}")


def get(url):
    """(status or error, seconds)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception as e:
        status = type(e).__name__
    return status, time.monotonic() - started


def wait_ok(url):
    for _ in range(300):
        if get(url)[0] == 200:
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} never answered 200")


def crowded(host):
    head = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"x-filler-{i}: {i}\r\n" for i in range(97))
    return (head + "content-length: 65000\r\n\r\n").encode() + b"a" * 65000


def huge(host):
    body = b'{"name":"' + b"x" * (1024 * 1024 - 11) + b'"}'
    return (f"POST /v1/rooms HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def send(addr, request):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
            try:
                s.sendall(request)
            except OSError:
                pass
            s.recv(64)
    except OSError:
        pass


def replicas_down(addr):
    """How many of the development balancer's replicas are not up right now."""
    try:
        table = json.load(urllib.request.urlopen(f"http://{addr}/_cluster/replicas", timeout=TIMEOUT))
    except Exception:
        return 0
    return sum(r["state"] != "up" for r in table["replicas"])


def under_attack(addr, watch_cluster):
    """A normal client's failures while attackers send crowded GETs and 1 MiB POSTs, and
    (with `watch_cluster`) how often the balancer had a replica out when asked."""
    stop = threading.Event()

    def attacker():
        for i in range(ATTACKS):
            if stop.is_set():
                return
            send(addr, crowded(addr) if i % 2 == 0 else huge(addr))
            time.sleep(INTERVAL)

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(ATTACKERS)]
    for t in threads:
        t.start()
    failed = outs = 0
    for _ in range(NORMAL):
        status, _ = get(f"http://{addr}/healthz")
        failed += status != 200
        if watch_cluster:
            outs += replicas_down(addr) > 0
        time.sleep(0.25)
    stop.set()
    for t in threads:
        t.join(TIMEOUT)
    return failed, outs


def around_pause(addr, pid):
    """The slowest of PAUSED requests, and how many failed, while `pid` is stopped."""
    os.kill(pid, signal.SIGSTOP)
    try:
        results = [get(f"http://{addr}/healthz") for _ in range(PAUSED)]
    finally:
        os.kill(pid, signal.SIGCONT)
    return max(s for _, s in results), sum(st != 200 for st, _ in results)


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    procs.clear()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


rows = []
work = tempfile.mkdtemp(prefix="edge-attack.")
try:
    # The development balancer: `herd cluster`, three replicas.
    _, addr = start(["cluster", "--replicas", "3", "--listen", "127.0.0.1:0", "--database",
                     f"sqlite://{work}/cluster.db", "--", *CHEAP], "cluster is serving")
    for _ in range(300):
        table = json.load(urllib.request.urlopen(f"http://{addr}/_cluster/replicas"))
        if sum(r["state"] == "up" for r in table["replicas"]) == 3:
            break
        time.sleep(0.1)
    failed, outs = under_attack(addr, True)
    time.sleep(1)  # let the health checks bring back whatever the attack took out
    table = json.load(urllib.request.urlopen(f"http://{addr}/_cluster/replicas"))
    pid = next(r["pid"] for r in table["replicas"] if r["id"] == "r1")
    slowest, paused_failed = around_pause(addr, pid)
    rows.append(("herd cluster (3 replicas)", failed, f"{outs} of {NORMAL} looks", slowest, paused_failed))
    stop_all()

    # nginx running the configuration in front of two `herd serve` replicas.
    if os.access(NGINX, os.X_OK):
        port = free_port()
        replicas = []
        for rid in ("r1", "r2"):
            p, listen = start(["serve", "--listen", "127.0.0.1:0", "--replica-id", rid,
                               "--database", f"sqlite://{work}/nginx.db", "--bus", "sql",
                               "--issuer", f"http://127.0.0.1:{port}", *CHEAP],
                              "herd is serving")
            replicas.append((p, listen))
        conf = open(os.environ["NGINX_CONF"]).read()
        conf = conf.replace("127.0.0.1:8081", replicas[0][1]).replace("127.0.0.1:8082", replicas[1][1])
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
        conf = conf.replace("worker_processes auto;", "worker_processes 2;")
        if os.geteuid() == 0:
            conf = "user root;\n" + conf
        prefix = os.path.join(work, "nginx")
        os.makedirs(prefix)
        with open(os.path.join(prefix, "nginx.conf"), "w") as f:
            f.write(conf)
        nginx = subprocess.Popen([NGINX, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"),
                                  "-e", os.path.join(prefix, "error.log"), "-g", "daemon off;"])
        procs.append(nginx)
        addr = f"127.0.0.1:{port}"
        wait_ok(f"http://{addr}/healthz")
        failed, _ = under_attack(addr, False)
        log = open(os.path.join(prefix, "error.log")).read()
        outs = log.count("upstream server temporarily disabled")
        time.sleep(6)  # fail_timeout: let nginx try the replicas it took out again
        slowest, paused_failed = around_pause(addr, replicas[0][0].pid)
        rows.append(("nginx, deploy/nginx.conf (2 replicas)", failed, f"{outs} times (error.log)", slowest, paused_failed))
        stop_all()
finally:
    stop_all()
    shutil.rmtree(work, ignore_errors=True)

print(f"herd: {HERD}")
print(f"attack: {ATTACKERS} attackers x {ATTACKS} requests, {INTERVAL} s apart (crowded GET /healthz, 1 MiB POST); "
      f"normal client: {NORMAL} GET /healthz at 4/s; paused: {PAUSED} GET /healthz, one replica SIGSTOPped")
print()
print("| balancer | normal requests failed under attack | a replica out during the attack | slowest request, paused replica | failed, paused replica |")
print("|---|---|---|---|---|")
for name, failed, outs, slowest, paused_failed in rows:
    print(f"| {name} | {failed} of {NORMAL} ({100 * failed // NORMAL}%) | {outs} | {slowest:.1f} s | {paused_failed} of {PAUSED} |")
PY
