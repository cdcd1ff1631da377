#!/usr/bin/env python3
"""Writes the seed corpora: real tokens signed with the token target's fixed key, one
frame of each kind, and each endpoint's body, with a few near misses of each.

Run once from fuzz/ (needs the `cryptography` package); the fuzzer grows the corpora
from these. Token seeds are valid at the target's NOW, 1_800_000_000.
"""

import base64
import hashlib
import json
import pathlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

NOW = 1_800_000_000
KEY = Ed25519PrivateKey.from_private_bytes(bytes([42] * 32))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header=None, claims=None, raw_payload=None) -> str:
    h = {"alg": "EdDSA", "typ": "at+jwt", "kid": "fuzz-key"} if header is None else header
    c = {
        "iss": "https://herd.test", "aud": "herd", "sub": "u1", "sid": "s1", "jti": "j1",
        "iat": NOW - 10, "exp": NOW + 290, "preferred_username": "alice",
        "client_id": "herd",
    } if claims is None else claims
    payload = raw_payload if raw_payload is not None else json.dumps(c, separators=(",", ":"))
    signing_input = b64(json.dumps(h, separators=(",", ":")).encode()) + "." + b64(payload.encode())
    return signing_input + "." + b64(KEY.sign(signing_input.encode()))


def claims(**changes):
    c = {
        "iss": "https://herd.test", "aud": "herd", "sub": "u1", "sid": "s1", "jti": "j1",
        "iat": NOW - 10, "exp": NOW + 290, "preferred_username": "alice",
        "client_id": "herd",
    }
    c.update(changes)
    return c


good = token()
tokens = [
    good,
    token(claims=claims(nbf=NOW)),
    token(header={"alg": "EdDSA", "typ": "application/at+jwt", "kid": "fuzz-key"}),
    token(claims=claims(exp=NOW - 100)),
    token(header={"alg": "none", "typ": "at+jwt", "kid": "fuzz-key"}),
    token(header={"alg": "EdDSA", "typ": "at+jwt", "kid": "fuzz-key", "jku": "http://x/"}),
    token(raw_payload=json.dumps(claims()).replace('"exp": %d' % (NOW + 290), '"exp": 1e400')),
    token(raw_payload='{"sub":"admin",' + json.dumps(claims(), separators=(",", ":"))[1:]),
    good + ".x",
    good.split(".")[0] + "=." + good.split(".", 1)[1],
    b64(hashlib.sha256(b"refresh").digest()),
    # Header and claims spelled as JSON arrays, which serde would take for structs.
    token(header=["EdDSA", "at+jwt", "fuzz-key"]),
    token(raw_payload=json.dumps(list(claims().values())[:7] + [None] + list(claims().values())[7:])),
]
frames = [
    {"type": "auth", "token": good},
    {"type": "reauth", "token": good},
    {"type": "subscribe", "room": "r1", "since": 0},
    {"type": "unsubscribe", "room": "r1"},
    {"type": "send", "room": "r1", "body": "hello \u00e9\u2603", "client_id": "c-1"},
    {"type": "send", "room": "r1", "body": "", "client_id": "c 1", "extra": 1},
    {"type": "subscribe", "room": "r1", "since": -1.5},
    {"type": "nope"},
]
bodies = [
    {"username": "alice", "password": "correct horse battery"},
    {"username": "alice", "password": "correct horse battery", "cookies": True},
    {"refresh_token": b64(bytes(32))},
    {"name": "general"},
    {"body": "hello", "client_id": "c-1"},
    {"username": 1, "password": None, "cookies": "yes"},
    [1, 2, 3],
]

out = pathlib.Path(__file__).parent / "corpus"
for target, seeds in [
    ("token", [t.encode() for t in tokens]),
    ("ws_frame", [json.dumps(f).encode() for f in frames] + [b'{"type":"send"']),
    ("body", [json.dumps(b).encode() for b in bodies] + [b'{"a":1} trailing', b"\xff{}"]),
]:
    (out / target).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (out / target / ("seed-" + hashlib.sha1(seed).hexdigest())).write_bytes(seed)
