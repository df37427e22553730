#!/usr/bin/env node
// Usage: node genkey.mjs <ALG> <KID>
// Prints one line: a private JWK (JSON) with kid, alg and use:"sig" set.
// ALG: RS256 | PS256 (RSA 2048) | ES256 (P-256) | ES384 (P-384) | EdDSA (Ed25519)
import { generateKeyPairSync } from 'node:crypto';

const [alg, kid] = process.argv.slice(2);
const params = {
  RS256: ['rsa', { modulusLength: 2048 }],
  PS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
  ES384: ['ec', { namedCurve: 'P-384' }],
  EdDSA: ['ed25519', {}],
}[alg];

if (!params || !kid) {
  process.stderr.write('usage: node genkey.mjs <RS256|PS256|ES256|ES384|EdDSA> <KID>\n');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync(...params);
const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
process.stdout.write(`${JSON.stringify(jwk)}\n`);
