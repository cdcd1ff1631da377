"""A Python service's check of herd's access tokens: PyJWT against herd's JWKS, plus
herd's Token Status List (draft-ietf-oauth-status-list), so that a logged-out session's
tokens are refused within the list's ttl, with no call to herd per request.

docs/verifying.md walks through this file; crates/herd/tests/it/security/interop.rs runs
it (`python3 herd_verify.py ISSUER AUDIENCE TOKEN` prints the claims as JSON, or exits 1
with the reason).
"""

import base64
import json
import sys
import threading
import time
import urllib.request
import zlib

import jwt

# A list larger than this (decompressed) is refused rather than held: 16 MiB is 134
# million sessions, far past any herd deployment.
MAX_LIST_BYTES = 16 << 20


class Refused(Exception):
    """The token must not be accepted; the message says why."""


class HerdVerifier:
    def __init__(self, issuer, audience, leeway=5):
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        # The issuer's metadata (RFC 8414) names the key set.
        with urllib.request.urlopen(
            self.issuer + "/.well-known/oauth-authorization-server", timeout=5
        ) as r:
            meta = json.load(r)
        if meta["issuer"] != issuer:
            raise ValueError("the metadata names another issuer")
        # PyJWKClient caches the keys and refetches on an unknown kid.
        self.jwks = jwt.PyJWKClient(meta["jwks_uri"], cache_keys=True)
        self._lists = {}  # uri -> (bytes, fetched_at, ttl, exp)
        self._lock = threading.Lock()

    def verify(self, token):
        """The claims of `token`, or Refused."""
        try:
            header = jwt.get_unverified_header(token)
            # RFC 9068: an access token says so, which keeps other JWTs out.
            if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
                raise Refused("typ is not at+jwt")
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise Refused(str(e)) from e
        self._check_status(claims)
        return claims

    def _check_status(self, claims):
        ref = claims.get("status", {}).get("status_list")
        if ref is None:
            return  # a token from before herd published a list
        uri, idx = ref["uri"], ref["idx"]
        # The token is signed, but fetch only from herd: a URI elsewhere is refused.
        if not uri.startswith(self.issuer + "/"):
            raise Refused("the status list is not the issuer's")
        bits = self._list(uri)
        if idx // 8 >= len(bits):
            raise Refused("the token's index is outside the status list")
        if bits[idx // 8] >> (idx % 8) & 1:
            raise Refused("revoked")

    def _list(self, uri):
        """The status list at `uri`, fetched again once its ttl has passed."""
        now = time.time()
        with self._lock:
            cached = self._lists.get(uri)
            if cached and now < min(cached[1] + cached[2], cached[3]):
                return cached[0]
        req = urllib.request.Request(uri, headers={"Accept": "application/statuslist+jwt"})
        with urllib.request.urlopen(req, timeout=5) as r:
            list_token = r.read().decode()
        header = jwt.get_unverified_header(list_token)
        if header.get("typ") != "statuslist+jwt":
            raise Refused("the status list is not a statuslist+jwt")
        key = self.jwks.get_signing_key_from_jwt(list_token)
        claims = jwt.decode(
            list_token,
            key,
            algorithms=["EdDSA"],
            leeway=self.leeway,
            options={"require": ["iat", "sub", "exp"], "verify_aud": False},
        )
        if claims["sub"] != uri:
            raise Refused("the status list is for another URI")
        status_list = claims["status_list"]
        if status_list["bits"] != 1:
            raise Refused("unexpected bits per status")
        lst = status_list["lst"]
        compressed = base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))
        inflate = zlib.decompressobj()
        bits = inflate.decompress(compressed, MAX_LIST_BYTES)
        if inflate.unconsumed_tail:
            raise Refused("the status list is too large")
        with self._lock:
            self._lists[uri] = (bits, now, claims.get("ttl", 60), claims["exp"])
        return bits


def main(argv):
    issuer, audience, token = argv[1:4]
    try:
        claims = HerdVerifier(issuer, audience).verify(token)
    except Refused as e:
        raise SystemExit(str(e))
    print(json.dumps(claims))


if __name__ == "__main__":
    main(sys.argv)
