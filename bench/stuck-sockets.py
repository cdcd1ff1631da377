#!/usr/bin/env python3
"""Sockets that never read, under a flood: are they dropped, and is a reader served?

STUCK WebSocket connections subscribe to one room and then never read again (their
receive buffers are made small, so they fill at once), while a flooder posts
FLOOD_S seconds of BODY_CHARS-character messages into the room over HTTP and one reading
subscriber reads everything. Reports:

- for each stuck socket, when the replica closed it, from the flood's start (the
  replica's side of the connection leaving ESTABLISHED in /proc/net/tcp): a replica
  drops a socket whose write waited --ws-write-timeout (10 s by default);
- the replica's resident memory (VmRSS of /proc/PID/status) before the sockets, with
  them, at its peak during the flood, and after;
- whether the reader received every message posted, in order, exactly once.

What a stuck socket holds first is the kernel's: on loopback the replica's send buffer
grows to tcp_wmem's maximum (4 MiB by default; 64 KiB segments get it there at once),
and only then do its writes block, its queue fill and the write deadline start. So the
flood must carry more than that per socket (about 1,300 messages of 3,900 characters)
before anything is closed; a debug build fanning out to 200 sockets posts a few a
second, hence FLOOD_S.

Against a replica it starts (a debug build by default, PROFILE=release for a release
one, on a SQLite file of its own, with --ws-sends-per-second high enough for one user's
flood; EXTRA_ARGS adds flags):

    bench/stuck-sockets.py
    STUCK=200 FLOOD_S=20 bench/stuck-sockets.py

Against a running replica on this host (its per-user limits apply to the flood, and
STUCK_USERS users must be able to sign up):

    HERD_URL=http://127.0.0.1:8080 HERD_PID=1234 bench/stuck-sockets.py
"""

import base64
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUCK = int(os.environ.get("STUCK", "200"))
STUCK_USERS = int(os.environ.get("STUCK_USERS", "8"))
FLOOD_S = float(os.environ.get("FLOOD_S", "20"))
BODY_CHARS = int(os.environ.get("BODY_CHARS", "3900"))
SETTLE_S = float(os.environ.get("SETTLE_S", "15"))
POSTERS = int(os.environ.get("POSTERS", "4"))
# The replica's SQLite file goes here: on tmpfs a commit costs no disk sync, so a debug
# build posts fast enough to flood.
WORKDIR = os.environ.get("WORKDIR", "/dev/shm" if os.path.isdir("/dev/shm") else None)
PROFILE = os.environ.get("PROFILE", "debug")
PASSWORD = "correct horse battery staple"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Api:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def call(self, method, path, body=None, token=None):
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        payload = json.dumps(body) if body is not None else None
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            # The server may close a kept-alive connection between requests: once more
            # on a fresh one.
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)

    def user(self, name):
        self.call("POST", "/v1/auth/signup", {"username": name, "password": PASSWORD})
        status, body = self.call("POST", "/v1/auth/login",
                                 {"username": name, "password": PASSWORD})
        if status != 200:
            sys.exit(f"login of {name}: {status} {body}")
        return body["access_token"]


class WebSocket:
    """Just enough of RFC 6455 for JSON text frames."""

    def __init__(self, host, port, token, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                sys.exit("the upgrade was cut off")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            sys.exit(f"upgrade refused: {head.decode(errors='replace')}")

    def port(self):
        return self.sock.getsockname()[1]

    def send(self, frame):
        data = json.dumps(frame).encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next text frame as JSON; ("close", code) for a close frame."""
        payload = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            data = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                return ("close", struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005)
            if opcode in (0x9, 0xA):
                continue
            payload += data
            if b0 & 0x80:
                return json.loads(payload)

    def next_of(self, kind):
        while True:
            frame = self.recv()
            if isinstance(frame, tuple):
                sys.exit(f"closed {frame[1]} while waiting for {kind}")
            if frame.get("type") == kind:
                return frame


def rss_kib(pid, field="VmRSS"):
    """A memory figure of /proc/PID/status in KiB: VmRSS, or its part RssAnon (the heap,
    without file pages such as a SQLite file's)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def established(server_port, client_ports):
    """Of `client_ports`, those whose server side is still ESTABLISHED."""
    alive = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            lport = int(local.rsplit(":", 1)[1], 16)
            rport = int(remote.rsplit(":", 1)[1], 16)
            if lport == server_port and rport in client_ports and state == "01":
                alive.add(rport)
    return alive


def start_replica(work):
    log(f"building herd ({PROFILE})")
    cmd = ["cargo", "build", "--quiet", "-p", "herd"] + (
        ["--release"] if PROFILE == "release" else [])
    subprocess.run(cmd, check=True, cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    herd = os.path.join(target, PROFILE, "herd")
    db = f"sqlite://{work}/herd.db"
    subprocess.run([herd, "migrate", "--database", db], check=True, stderr=subprocess.DEVNULL)
    logfile = open(os.path.join(work, "herd.log"), "w")
    args = [herd, "--log-format", "json", "serve", "--listen", "127.0.0.1:0",
            "--database", db, "--access-ttl", "1h", "--argon2-memory-kib", "64",
            "--argon2-iterations", "1", "--ws-sends-per-second", "100000",
            "--ws-max-connections-per-user", str(max(32, STUCK))]
    args += os.environ.get("EXTRA_ARGS", "").split()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        logfile.write(line)
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("message") == "herd is serving":
            addr = fields["listen"]
            # Keep draining its log, so it never blocks on a full pipe.
            threading.Thread(target=lambda: [logfile.write(l) for l in proc.stderr],
                             daemon=True).start()
            return proc, addr
    sys.exit(f"herd serve did not start; see {work}/herd.log")


def main():
    work = tempfile.mkdtemp(prefix="herd-stuck.", dir=WORKDIR)
    proc = None
    if os.environ.get("HERD_URL"):
        addr = os.environ["HERD_URL"].split("://", 1)[-1].rstrip("/")
        pid = int(os.environ["HERD_PID"])
    else:
        proc, addr = start_replica(work)
        pid = proc.pid
    try:
        ok = run(addr, pid)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


def run(addr, pid):
    """The attack against the replica at `addr` (process `pid`); true if it held."""
    host, port = addr.rsplit(":", 1)
    port = int(port)
    api = Api(host, port)
    tag = os.urandom(3).hex()
    flooder = api.user(f"flooder-{tag}")
    reader_token = api.user(f"reader-{tag}")
    stuck_tokens = [api.user(f"stuck-{tag}-{i}") for i in range(STUCK_USERS)]
    status, room = api.call("POST", "/v1/rooms", {"name": "flood"}, flooder)
    room = room["id"]
    for token in [reader_token] + stuck_tokens:
        api.call("POST", f"/v1/rooms/{room}/join", {}, token)

    rss = {"before": rss_kib(pid)}
    stuck = []
    for i in range(STUCK):
        ws = WebSocket(host, port, stuck_tokens[i % STUCK_USERS], rcvbuf=4096)
        ws.next_of("ready")
        ws.send({"type": "subscribe", "room": room, "since": 0})
        ws.next_of("subscribed")
        stuck.append(ws)
    ports = {ws.port() for ws in stuck}
    rss["with_sockets"] = rss_kib(pid)
    log(f"{STUCK} sockets subscribed and no longer reading")

    reader = WebSocket(host, port, reader_token)
    reader.next_of("ready")
    reader.send({"type": "subscribe", "room": room, "since": 0})
    reader.next_of("subscribed")
    # The reader waits as long as it takes: a quiet room is not a failure.
    reader.sock.settimeout(None)
    received = []
    reader_end = []

    def read():
        try:
            while True:
                frame = reader.recv()
                if isinstance(frame, tuple):
                    reader_end.append(f"closed {frame[1]}")
                    return
                if frame.get("type") == "message":
                    received.append(frame["seq"])
        except (EOFError, OSError) as e:
            reader_end.append(repr(e))

    threading.Thread(target=read, daemon=True).start()

    closed_at = {}
    peak = [0]
    stop = threading.Event()
    started = time.time()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            alive = established(port, ports)
            now = time.time() - started
            for p in ports - alive:
                closed_at.setdefault(p, now)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    body = "x" * BODY_CHARS
    counts = {"posted": 0, "refused": 0}
    lock = threading.Lock()

    def flood(poster):
        own = Api(host, port)
        i = 0
        while time.time() - started < FLOOD_S:
            i += 1
            status, _ = own.call("POST", f"/v1/rooms/{room}/messages",
                                 {"body": body, "client_id": f"f{poster}-{i}"}, flooder)
            with lock:
                counts["posted" if status == 201 else "refused"] += 1

    posters = [threading.Thread(target=flood, args=(p,)) for p in range(POSTERS)]
    for t in posters:
        t.start()
    for t in posters:
        t.join()
    posted, refused = counts["posted"], counts["refused"]
    flood_s = time.time() - started
    log(f"flood: {posted} posted, {refused} refused in {flood_s:.1f} s")
    deadline = time.time() + SETTLE_S
    while time.time() < deadline and (len(closed_at) < STUCK or len(received) < posted):
        time.sleep(0.2)
    stop.set()
    watcher.join()
    rss["peak_during"] = peak[0]
    rss["after"] = rss_kib(pid)
    rss["after_anon"] = rss_kib(pid, "RssAnon")
    rss["after_file"] = rss_kib(pid, "RssFile")

    times = sorted(closed_at.values())
    missed = [s for s in range(1, posted + 1) if s not in set(received)]
    result = {
        "stuck_sockets": STUCK,
        "closed_by_replica": len(times),
        "close_s_from_flood_start": {
            "first": round(times[0], 1) if times else None,
            "median": round(times[len(times) // 2], 1) if times else None,
            "last": round(times[-1], 1) if times else None,
        },
        "flood": {"posted": posted, "refused": refused, "seconds": round(flood_s, 1),
                  "body_chars": BODY_CHARS},
        "rss_mib": {k: round(v / 1024, 1) for k, v in rss.items()},
        "reader": {"received": len(received), "in_order_once": received == list(
            range(1, posted + 1)), "missed": len(missed), "ended": reader_end or None},
    }
    print(json.dumps(result, indent=2))
    for ws in stuck:
        ws.sock.close()
    reader.sock.close()
    return len(times) == STUCK and not missed and not reader_end


if __name__ == "__main__":
    main()
