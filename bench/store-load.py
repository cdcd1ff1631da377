#!/usr/bin/env python3
"""What herd asks of PostgreSQL and Redis per 1,000 requests of each kind.

Runs one `herd serve` on a PostgreSQL database of its own and a redis-server of its own
(so no other client's work is counted), sends a fixed number of requests of one kind,
stops the replica, and reads the database's transaction count (pg_stat_database) and
Redis's per-command call counts (INFO commandstats) before and after. A replica's
background work (start-up, the upkeep tick that reads the key ring and the revocation
log) is measured by an idle run and reported apart, per replica per second; the
per-request figures have the start-up subtracted and the upkeep of their run's length
too. Counts, not speed: they do not depend on the build or the machine's load, so a
debug build will do (HERD_BENCH_PROFILE=release, or PROFILE=release, for a release one).

Writes its section of docs/benchmarks.md (HERD_BENCH_DOCS names another file) between
<!-- store-load:begin/end --> markers. Fails when a run counted nothing: a message posted
without a transaction, or a shared-session login without a Redis call, means the
counting is broken, not that herd got cheaper.

    bench/store-load.py                     # PG_ADMIN defaults to HERD_TEST_POSTGRES
    N=2000 bench/store-load.py
    HERD_BIN=target/debug/herd bench/store-load.py   # that binary, not built here
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.environ.get("HERD_BENCH_DOCS") or os.path.join(ROOT, "docs", "benchmarks.md")
N = int(os.environ.get("N", "1000"))
# Logins and refreshes cost an argon2 hash or a store transaction each: fewer of them.
N_SLOW = int(os.environ.get("N_SLOW", "200"))
IDLE_S = float(os.environ.get("IDLE_S", "20"))
# How long the database's transaction count must stay still to be read as final.
STABLE_S = float(os.environ.get("STABLE_S", "1.5"))
PROFILE = os.environ.get("HERD_BENCH_PROFILE") or os.environ.get("PROFILE", "debug")
# The directory cargo puts a profile's binaries in.
PROFILE_DIR = {"dev": "debug", "test": "debug", "bench": "release"}.get(PROFILE, PROFILE)
PG_ADMIN = os.environ.get(
    "PG_ADMIN",
    os.environ.get("HERD_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test"),
)


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql, database_url=PG_ADMIN):
    out = subprocess.run(
        ["psql", database_url, "-Atqc", sql], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def with_database(url, name):
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    server = rest.split("/", 1)[0]
    return f"{scheme}://{server}/{name}" + (f"?{query}" if query else "")


class Redis:
    def __init__(self, workdir):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}"
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        sys.exit("redis-server did not start")

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def calls(self):
        """Calls per command since start, connection set-up and INFO itself left out."""
        counts = {}
        for line in self.cli("INFO", "commandstats").splitlines():
            m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            # A replica's connections (CLIENT, HELLO, SELECT) and its bus subscription
            # (SUBSCRIBE, UNSUBSCRIBE) come once per process, not per request.
            if m and m.group(1) not in ("info", "ping", "config", "client", "hello",
                                        "select", "subscribe", "unsubscribe",
                                        "psubscribe", "punsubscribe"):
                counts[m.group(1)] = int(m.group(2))
        return counts

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Database:
    def __init__(self):
        self.name = f"herd_store_load_{os.getpid()}"
        psql(f"CREATE DATABASE {self.name}")
        self.url = with_database(PG_ADMIN, self.name)

    def transactions(self):
        """Committed plus rolled-back transactions, once the counts stop moving (a
        backend flushes its statistics when it exits, and the replica has stopped)."""
        last, stable_since = None, time.time()
        while True:
            now = int(psql(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                f"WHERE datname = '{self.name}'"
            ))
            if now != last:
                last, stable_since = now, time.time()
            elif time.time() - stable_since > STABLE_S:
                # Our own psql sessions are counted too: one transaction each, not on
                # this database (they connect to the admin one), so none here.
                return now
            time.sleep(0.25)

    def drop(self):
        psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class Replica:
    def __init__(self, herd, db, redis, sessions, logfile):
        self.log = open(logfile, "w")
        args = [herd, "--log-format", "json", "serve", "--listen", "127.0.0.1:0",
                "--database", db.url, "--redis-url", redis.url, "--bus", "redis",
                "--sessions", sessions, "--access-ttl", "1h", "--signup-limit-address", "off",
                # One address logs one account in, one session refreshes, N_SLOW times,
                # and one user posts N times: the limits stay on (their Redis calls and
                # store reads are part of the load) with room for them.
                "--login-limit-address", "1000000/1m", "--login-limit-account", "1000000/15m",
                "--refresh-limit-session", "1000000/5m", "--ws-sends-per-second", "1000000",
                "--argon2-memory-kib", "64", "--argon2-iterations", "1"]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        self.addr = None
        for line in self.proc.stderr:
            self.log.write(line)
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "herd is serving":
                self.addr = fields["listen"]
                break
        if not self.addr:
            sys.exit(f"herd serve did not start; see {logfile}")
        self.started = time.time()
        host, port = self.addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(self, method, path, body=None, token=None):
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)

    def stop(self):
        """SIGTERM, then waits: the pool closes, and the backends flush their stats."""
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.stopped = time.time()
        self.log.close()


def main():
    for tool in ("psql", "redis-server", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is required")
    herd = os.environ.get("HERD_BIN")
    if herd:
        log(f"using {herd} (HERD_BIN; not built here)")
    else:
        log(f"building herd ({PROFILE})")
        profile = "dev" if PROFILE == "debug" else PROFILE
        cmd = ["cargo", "build", "--quiet", "-p", "herd", "--profile", profile]
        subprocess.run(cmd, check=True, cwd=ROOT)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        herd = os.path.join(target, PROFILE_DIR, "herd")
    work = tempfile.mkdtemp(prefix="herd-store-load.")
    redis = Redis(work)
    db = Database()
    try:
        subprocess.run([herd, "migrate", "--database", db.url], check=True,
                       stderr=subprocess.DEVNULL)
        results = run_all(herd, db, redis, work)
    finally:
        redis.stop()
        db.drop()
        shutil.rmtree(work, ignore_errors=True)
    check_counted(results)
    write_section(results)


def check_counted(results):
    """Exits with a message when a run that must touch a store counted nothing."""
    post = results[("POST /v1/rooms/{id}/messages", "token")]
    shared_login = results[("POST /v1/auth/login", "shared")]
    problems = []
    if post["tx"] <= 0:
        problems.append(f"posting {post['n']} messages counted {post['tx']:.3f} PostgreSQL "
                        "transactions each: no row written")
    if not shared_login["redis"]:
        problems.append(f"{shared_login['n']} shared-session logins counted no Redis call")
    if results["baseline"]["startup_tx"] <= 0:
        problems.append("a replica's start-up counted no PostgreSQL transaction")
    if problems:
        sys.exit("store-load measured nothing: " + "; ".join(problems))


def measure(herd, db, redis, work, sessions, scenario, idle=0.0):
    """Starts a replica, runs `scenario(replica)` (which returns how many requests it
    sent), stops it; returns (requests, seconds alive, transactions, redis calls)."""
    pg0, rd0 = db.transactions(), redis.calls()
    replica = Replica(herd, db, redis, sessions, os.path.join(work, "herd.log"))
    try:
        sent = scenario(replica)
        if idle:
            time.sleep(idle)
    finally:
        # A failed scenario (an assertion) must not leave its replica running.
        replica.stop()
    pg1, rd1 = db.transactions(), redis.calls()
    calls = {k: rd1.get(k, 0) - rd0.get(k, 0) for k in set(rd0) | set(rd1)}
    return sent, replica.stopped - replica.started, pg1 - pg0, {k: v for k, v in calls.items() if v}


def run_all(herd, db, redis, work):
    counter = iter(range(10**9))

    def user():
        return {"username": f"u{next(counter)}_{os.getpid()}", "password": "correct horse battery"}

    def signed_up(replica):
        creds = user()
        status, _ = replica.call("POST", "/v1/auth/signup", creds)
        assert status == 201, status
        return creds

    def logged_in(replica):
        creds = signed_up(replica)
        status, body = replica.call("POST", "/v1/auth/login", creds)
        assert status == 200, (status, body)
        return body

    results = {}
    log("idle replica: start-up and upkeep")
    _, start_s, start_tx, start_rd = measure(herd, db, redis, work, "token", lambda r: 0)
    _, idle_s, idle_tx, idle_rd = measure(herd, db, redis, work, "token", lambda r: 0, IDLE_S)
    upkeep_rate = (idle_tx - start_tx) / max(idle_s - start_s, 1e-9)
    results["baseline"] = {
        "startup_tx": start_tx, "startup_redis": start_rd, "upkeep_tx_per_s": upkeep_rate,
        "idle_s": idle_s, "upkeep_redis": {k: v - start_rd.get(k, 0) for k, v in idle_rd.items()},
    }

    def per_request(kind, sessions, prepare, one, n):
        """`prepare(replica)` runs first and is measured apart, then `one(replica, state, i)` n times."""
        log(f"{kind} ({sessions}): {n} requests")
        _, p_s, p_tx, p_rd = measure(herd, db, redis, work, sessions, lambda r: prepare(r) and 0)

        def scenario(replica):
            state = prepare(replica)
            for i in range(n):
                one(replica, state, i)
            return n

        sent, s, tx, rd = measure(herd, db, redis, work, sessions, scenario)
        tx_req = (tx - p_tx - upkeep_rate * max(s - p_s, 0)) / sent
        rd_req = {k: (v - p_rd.get(k, 0)) / sent for k, v in rd.items() if v - p_rd.get(k, 0) > 0}
        results[(kind, sessions)] = {"n": sent, "tx": tx_req, "redis": rd_req}

    def me(replica, state, i):
        status, _ = replica.call("GET", "/v1/me", token=state["access_token"])
        assert status == 200, status

    def login(replica, state, i):
        status, _ = replica.call("POST", "/v1/auth/login", state)
        assert status == 200, status

    def refresh(replica, state, i):
        status, body = replica.call("POST", "/v1/auth/refresh", {"refresh_token": state["refresh_token"]})
        assert status == 200, (status, body)
        state["refresh_token"] = body["refresh_token"]

    def logout_prepare(replica):
        return [logged_in(replica)["access_token"] for _ in range(N_SLOW)]

    def logout(replica, tokens, i):
        status, _ = replica.call("POST", "/v1/auth/logout", token=tokens[i])
        assert status == 204, status

    def room(replica):
        body = logged_in(replica)
        status, created = replica.call("POST", "/v1/rooms", {"name": "load"}, token=body["access_token"])
        assert status == 201, status
        return {"token": body["access_token"], "room": created["id"]}

    def rooms(replica, state, i):
        status, _ = replica.call("GET", "/v1/rooms", token=state["token"])
        assert status == 200, status

    def post(replica, state, i):
        status, _ = replica.call("POST", f"/v1/rooms/{state['room']}/messages",
                                 {"body": "hello", "client_id": f"c{i}"}, token=state["token"])
        assert status == 201, status

    def history(replica, state, i):
        status, _ = replica.call("GET", f"/v1/rooms/{state['room']}/messages?limit=50", token=state["token"])
        assert status == 200, status

    per_request("GET /v1/me", "token", logged_in, me, N)
    per_request("POST /v1/auth/login", "token", signed_up, login, N_SLOW)
    per_request("POST /v1/auth/refresh", "token", logged_in, refresh, N_SLOW)
    per_request("POST /v1/auth/logout", "token", logout_prepare, logout, N_SLOW)
    per_request("GET /v1/rooms", "token", room, rooms, N)
    per_request("POST /v1/rooms/{id}/messages", "token", room, post, N)
    per_request("GET /v1/rooms/{id}/messages", "token", room, history, N)
    per_request("GET /v1/me", "shared", logged_in, me, N)
    per_request("POST /v1/auth/login", "shared", signed_up, login, N_SLOW)
    return results


def write_section(results):
    base = results.pop("baseline")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    rows = []
    for (kind, sessions), r in results.items():
        redis = ", ".join(f"{k.upper()} {v * 1000:,.0f}" for k, v in sorted(r["redis"].items())) or "0"
        rows.append(f"| `{kind}` | `{sessions}` | {r['n']:,} | {max(r['tx'], 0) * 1000:,.0f} | {redis} |")
    upkeep_redis = ", ".join(
        f"{k.upper()} {v / base['idle_s']:.2f}/s" for k, v in sorted(base["upkeep_redis"].items()) if v > 0
    ) or "none"
    section = f"""<!-- store-load:begin -->
## PostgreSQL and Redis load per 1,000 requests (store-load)

One `herd serve` (`--bus redis`) on a PostgreSQL database and a redis-server of its own,
so nothing else is counted. For each kind of request: a replica is started, does the
setup the kind needs (sign up, log in, create a room), sends the requests one after
another, and is stopped; the database's transactions (`xact_commit + xact_rollback` in
`pg_stat_database`, read once the replica's backends have exited and flushed them) and
Redis's calls per command (`INFO commandstats`) are read before and after. The same
setup alone, in a replica of its own, is subtracted, and so is the upkeep of the run's
length. A transaction is one round of work for PostgreSQL: a single statement outside
a transaction, or a `BEGIN ... COMMIT` of several. These are counts, independent of
the machine's speed.

| request | `--sessions` | sent | PostgreSQL transactions per 1,000 | Redis calls per 1,000 |
|---|---|---:|---:|---|
{chr(10).join(rows)}

Every replica, whatever it serves: {base['upkeep_tx_per_s']:.2f} transactions a second of upkeep
(the key ring and the revocation log, every `--upkeep-interval` = 5 s), Redis {upkeep_redis}
({base['idle_s']:.0f} s idle run); start-up costs {base['startup_tx']} transactions (migrations
checked, keys loaded). The bus's live traffic is one `PUBLISH` per logout, key rotation
or chat message, whichever replica it reaches.

- Script: `bench/store-load.py` (N={N}, N_SLOW={N_SLOW}, IDLE_S={IDLE_S:g}, {'HERD_BIN=' + os.path.basename(os.environ['HERD_BIN']) + ', a release build' if os.environ.get('HERD_BIN') else 'PROFILE=' + PROFILE})
- Date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; commit {commit}
<!-- store-load:end -->
"""
    text = open(DOCS, encoding="utf-8").read()
    begin, end = "<!-- store-load:begin -->", "<!-- store-load:end -->"
    s, e = text.find(begin), text.find(end)
    if s != -1 and e != -1:
        text = text[:s] + section + text[e + len(end):].removeprefix("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(DOCS + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(DOCS + ".tmp", DOCS)
    print(section)


if __name__ == "__main__":
    main()
