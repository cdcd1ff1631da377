// herd's access tokens seen by `jose` (panva/jose), an independent JOSE library.
//
//   node jose_check.mjs verify BASE_URL ISSUER AUDIENCE TOKEN
//       fetches herd's JWKS from BASE_URL/.well-known/jwks.json, verifies TOKEN (EdDSA
//       only, iss, aud, exp, typ at+jwt) and prints its claims as JSON; exits 1 with the
//       reason when jose refuses it.
//   node jose_check.mjs forge BASE_URL TOKEN
//       prints, as one JSON object, tokens forged from TOKEN's claims: an unsecured JWT
//       ("alg": "none"), HS256 keyed with herd's public key, and EdDSA tokens signed by
//       the forger's own key under herd's kid, with and without that key embedded in
//       the header (`jwk`).
//
// crates/herd/tests/it/security/interop.rs runs both.

import {
  createRemoteJWKSet,
  jwtVerify,
  decodeJwt,
  decodeProtectedHeader,
  SignJWT,
  UnsecuredJWT,
  generateKeyPair,
  exportJWK,
  base64url,
} from 'jose';

async function verify(base, issuer, audience, token) {
  const jwks = createRemoteJWKSet(new URL('/.well-known/jwks.json', base));
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    typ: 'at+jwt',
    algorithms: ['EdDSA'],
    requiredClaims: ['exp', 'iat', 'sub'],
  });
  console.log(JSON.stringify(payload));
}

async function forge(base, token) {
  const response = await fetch(new URL('/.well-known/jwks.json', base));
  const { keys } = await response.json();
  const { kid } = decodeProtectedHeader(token);
  const jwk = keys.find((k) => k.kid === kid);
  const claims = decodeJwt(token);
  const now = Math.floor(Date.now() / 1000);
  claims.iat = now;
  claims.exp = now + 300;
  const attacker = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const forged = {
    none: new UnsecuredJWT(claims).encode(),
    'hs256-public-key-bytes': await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid })
      .sign(base64url.decode(jwk.x)),
    'eddsa-forger-key': await new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid })
      .sign(attacker.privateKey),
    'eddsa-embedded-jwk': await new SignJWT(claims)
      .setProtectedHeader({
        alg: 'EdDSA',
        typ: 'at+jwt',
        kid,
        jwk: await exportJWK(attacker.publicKey),
      })
      .sign(attacker.privateKey),
  };
  console.log(JSON.stringify(forged));
}

const [mode, ...rest] = process.argv.slice(2);
try {
  if (mode === 'verify' && rest.length === 4) {
    await verify(...rest);
  } else if (mode === 'forge' && rest.length === 2) {
    await forge(...rest);
  } else {
    console.error('usage: jose_check.mjs verify BASE ISSUER AUDIENCE TOKEN | forge BASE TOKEN');
    process.exit(2);
  }
} catch (error) {
  console.error(`jose refused the token: ${error.code ?? error.name}: ${error.message}`);
  process.exit(1);
}
