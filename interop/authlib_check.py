"""herd as an OAuth 2.0 authorization server, seen by Authlib, a client nobody here wrote.

    python3 authlib_check.py refresh ISSUER REFRESH_TOKEN
        reads the endpoints from ISSUER/.well-known/oauth-authorization-server, refreshes
        with Authlib's OAuth2Session (public client `herd`, form-encoded) and prints the
        new token response as JSON; exits 1 with the OAuth error when refused.
    python3 authlib_check.py revoke ISSUER TOKEN HINT
        revokes TOKEN (RFC 7009) with OAuth2Session.revoke_token and prints the status.

crates/herd/tests/it/security/interop.rs runs both.
"""

import json
import sys
import urllib.request

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session


def metadata(issuer):
    with urllib.request.urlopen(
        issuer.rstrip("/") + "/.well-known/oauth-authorization-server", timeout=5
    ) as r:
        meta = json.load(r)
    if meta["issuer"] != issuer:
        raise SystemExit("the metadata names another issuer")
    if "password" in meta.get("grant_types_supported", []):
        raise SystemExit("the password grant is advertised")
    return meta


def session(meta):
    return OAuth2Session(
        client_id="herd",
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
    )


def refresh(issuer, refresh_token):
    meta = metadata(issuer)
    try:
        token = session(meta).refresh_token(
            meta["token_endpoint"], refresh_token=refresh_token
        )
    except AuthlibBaseError as e:
        raise SystemExit("%s: %s" % (e.error, e.description))
    print(json.dumps(dict(token)))


def revoke(issuer, token, hint):
    meta = metadata(issuer)
    response = session(meta).revoke_token(
        meta["revocation_endpoint"], token=token, token_type_hint=hint
    )
    print(response.status_code)
    if response.status_code != 200:
        raise SystemExit(response.text)


def main(argv):
    command = argv[1]
    if command == "refresh":
        refresh(argv[2], argv[3])
    elif command == "revoke":
        revoke(argv[2], argv[3], argv[4])
    else:
        raise SystemExit("unknown command %r" % command)


if __name__ == "__main__":
    main(sys.argv)
