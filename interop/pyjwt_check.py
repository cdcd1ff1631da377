"""herd's access tokens seen by PyJWT, an independent JOSE library.

    python3 pyjwt_check.py verify BASE_URL ISSUER AUDIENCE TOKEN
        fetches herd's JWKS from BASE_URL/.well-known/jwks.json, verifies TOKEN
        (EdDSA only, iss, aud, exp, typ at+jwt) and prints its claims as JSON;
        exits 1 with the reason when PyJWT refuses it.
    python3 pyjwt_check.py forge BASE_URL TOKEN
        prints, as one JSON object, tokens forged from TOKEN's claims that a careless
        verifier would accept: "alg": "none", and HS256 keyed with herd's public key.

crates/herd/tests/it/security/interop.rs runs both.
"""

import base64
import json
import sys
import time
import urllib.request

import jwt


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(base, issuer, audience, token):
    client = jwt.PyJWKClient(base + "/.well-known/jwks.json")
    key = client.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
        raise SystemExit("typ is %r, not at+jwt" % header.get("typ"))
    claims = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    print(json.dumps(claims))


def public_key_pem(jwk):
    """The published key as PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def unchecked_hs256(claims, secret, headers):
    """HS256 over any bytes: PyJWT's own HS256 with its key check left out."""

    class Unchecked(jwt.algorithms.HMACAlgorithm):
        def prepare_key(self, key):
            return key

    jws = jwt.PyJWS(algorithms=[])
    jws.register_algorithm("HS256", Unchecked(Unchecked.SHA256))
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return jws.encode(payload, secret, algorithm="HS256", headers=headers)


def forge(base, token):
    with urllib.request.urlopen(base + "/.well-known/jwks.json") as response:
        jwks = json.load(response)
    claims = json.loads(b64url_decode(token.split(".")[1]))
    claims["iat"] = int(time.time())
    claims["exp"] = claims["iat"] + 300
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    headers = {"kid": jwk["kid"], "typ": "at+jwt"}
    forged = {
        # The token with no signature at all.
        "none": jwt.encode(claims, None, algorithm="none", headers=headers),
        # The key confusion attack: HMAC keyed with what the verifier publishes. PyJWT
        # refuses a PEM, DER or JWK public key as an HMAC secret, but not the raw key.
        "hs256-public-key-raw": jwt.encode(
            claims, b64url_decode(jwk["x"]), algorithm="HS256", headers=headers
        ),
        # The classic form, keyed with the PEM a confused verifier would load, signed
        # past PyJWT's refusal by an HS256 that does not look at its key.
        "hs256-public-key-pem": unchecked_hs256(claims, public_key_pem(jwk), headers),
    }
    print(json.dumps(forged))


def main(argv):
    if len(argv) == 6 and argv[1] == "verify":
        verify(*argv[2:])
    elif len(argv) == 4 and argv[1] == "forge":
        forge(*argv[2:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except jwt.PyJWTError as error:
        raise SystemExit("PyJWT refused the token: %s: %s" % (type(error).__name__, error))
