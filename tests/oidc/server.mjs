#!/usr/bin/env node
// Test-only OpenID Provider for jwtgate integration tests (panva/oidc-provider v8).
//
// Usage: node server.mjs --keys <jwks.json> [--port N] [--ttl SECONDS] [--exit-on-stdin-eof]
//
// stdout: exactly one line, `READY http://127.0.0.1:<port>`, once the provider is serving.
// Everything else (oidc-provider notices/warnings, errors) goes to stderr.
// The signing key for an alg is the FIRST key in --keys with that alg (see README.md).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

// oidc-provider prints its NOTICE lines with console.info (stdout). Keep stdout for the
// READY protocol only: route all console output to stderr *before* loading the library.
for (const m of ['log', 'info', 'debug']) console[m] = console.error;

// Exit 0 on SIGTERM/SIGINT, also while still starting up (replaced once the server listens).
let shutdown = () => process.exit(0);
process.on('SIGTERM', () => shutdown());
process.on('SIGINT', () => shutdown());

const { values: args } = parseArgs({
  options: {
    keys: { type: 'string' },
    port: { type: 'string', default: '0' },
    ttl: { type: 'string', default: '300' },
    'exit-on-stdin-eof': { type: 'boolean', default: false },
  },
});
if (!args.keys) {
  console.error('usage: node server.mjs --keys <jwks.json> [--port N] [--ttl SECONDS] [--exit-on-stdin-eof]');
  process.exit(2);
}
const ttl = Number.parseInt(args.ttl, 10);
const port = Number.parseInt(args.port, 10);
if (!(ttl > 0) || !(port >= 0 && port < 65536)) {
  console.error('invalid --ttl or --port');
  process.exit(2);
}
const { keys } = JSON.parse(readFileSync(args.keys, 'utf8'));

const { default: Provider, errors } = await import('oidc-provider');

// Resource indicator (= `aud` of the issued token) -> JWS alg used to sign its access tokens.
const RESOURCES = {
  'https://orders.example.com': 'RS256',
  'https://es.example.com': 'ES256',
  'https://ed.example.com': 'EdDSA',
  // extras, for the other algs genkey.mjs supports
  'https://ps.example.com': 'PS256',
  'https://es384.example.com': 'ES384',
};
const SCOPES = ['orders:read', 'orders:write', 'admin'];

let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys },
  clients: [{
    client_id: 'jwtgate-test',
    client_secret: 'secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    // a client_secret_basic client may also authenticate with client_secret_post
    token_endpoint_auth_method: 'client_secret_basic',
    scope: SCOPES.join(' '),
  }],
  scopes: ['openid', 'offline_access', ...SCOPES],
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: { AccessToken: ttl, ClientCredentials: ttl },
  // oidc-provider 8 knows Ed25519 proofs only as `EdDSA`; panva's `dpop` package 2.x signs them
  // as `Ed25519` (RFC 9864), so the token request of the interop tests uses ES256 or PS256 keys.
  enabledJWA: { dPoPSigningAlgValues: ['ES256', 'EdDSA', 'PS256'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // RFC 9449: a token request with a DPoP proof gets a token bound to the proof's key
    // (`token_type: DPoP`, `cnf.jkt` in the JWT access token); without one, a Bearer token.
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo(ctx, resource) {
        const alg = RESOURCES[resource];
        if (!alg) throw new errors.InvalidTarget();
        return {
          scope: SCOPES.join(' '),
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        };
      },
    },
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error:', err));

handler = provider.callback();

shutdown = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
if (args['exit-on-stdin-eof']) {
  process.stdin.on('end', () => shutdown()).on('error', () => shutdown()).resume();
}

process.stdout.write(`READY ${issuer}\n`);
