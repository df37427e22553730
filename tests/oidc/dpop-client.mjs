#!/usr/bin/env node
// A DPoP client for jwtgate's interop tests, made with panva's `dpop` package (RFC 9449): it
// holds one key pair and makes a proof for each request it is asked about.
//
// Usage: node dpop-client.mjs <ES256|Ed25519|RS256|PS256>
//
// stdout: first `READY <jkt>` (the RFC 7638 thumbprint of the public key), then one proof per
// line of stdin. Each stdin line is JSON: {"htm": "GET", "htu": "https://...", "ath": true|false,
// "accessToken": "..."}; the proof covers the access token (its `ath`) when one is given.
// Exits when stdin closes.
import { createInterface } from 'node:readline';
import * as DPoP from 'dpop';

const [alg] = process.argv.slice(2);
if (!['ES256', 'Ed25519', 'RS256', 'PS256'].includes(alg)) {
  process.stderr.write('usage: node dpop-client.mjs <ES256|Ed25519|RS256|PS256>\n');
  process.exit(2);
}
const keypair = await DPoP.generateKeyPair(alg);
process.stdout.write(`READY ${await DPoP.calculateThumbprint(keypair.publicKey)}\n`);
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { htm, htu, accessToken } = JSON.parse(line);
  process.stdout.write(`${await DPoP.generateProof(keypair, htu, htm, undefined, accessToken ?? undefined)}\n`);
}
