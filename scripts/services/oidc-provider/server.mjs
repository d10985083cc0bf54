// A loopback OpenID Connect provider standing in for EGI Check-in and CILogon in tests.
//
// The protocol is npm `oidc-provider` (a certified implementation); this script adds only what a
// real identity provider adds around it: a login page, a consent page, test users whose claims
// look like EGI Check-in (`eduperson_entitlement`, `voperson_id`) and CILogon (`isMemberOf`,
// `idp`), and three confidential clients: one per hub configuration style, and a Check-in style one
// whose access tokens are JWTs for Rucio (below).
//
// Tokens for Rucio: the client `gateway-rucio` gets JWT access tokens with the audience
// OIDC_RUCIO_AUDIENCE (`rucio`, what a Rucio server expects by default) and the OIDC scopes it
// was granted, signed with the provider's key (RFC 8707 resource indicators: its default resource
// is OIDC_RUCIO_RESOURCE). A Rucio server that trusts this issuer validates them itself (signature
// from the JWKS, expiry, audience, scope). oidc-provider refuses such audience-bound tokens at its
// userinfo endpoint; the IdPs this stands in for (Check-in, INDIGO IAM, Keycloak) accept their
// JWT access tokens there, so this script answers userinfo for them itself (userinfoForJwt).
// The other two clients keep opaque access tokens, unchanged.
//
// Usage:
//   node server.mjs init STATE_DIR      create STATE_DIR/provider.json (secrets, keys) once
//   node server.mjs env STATE_DIR       print KEY=VALUE facts for oidc.env
//   node server.mjs serve STATE_DIR     serve on OIDC_HOST:OIDC_PORT (127.0.0.1:19080)
//
// Environment: OIDC_HOST, OIDC_PORT, OIDC_ISSUER (defaults to http://OIDC_HOST:OIDC_PORT),
// OIDC_ACCESS_TOKEN_TTL (seconds, default 3600; the test service runs with 30),
// OIDC_GENERATED_USERS=PREFIX:COUNT (e.g. `sgbench:50`: users sgbench01 ... sgbench50, numbered
// with at least two digits, each a member of the astro VO like alice, for load tests; the test
// service leaves it unset, so its users are only the named ones below). A generated user's
// password is derived from the state's secret, so `env` prints it without a new `init`.
//
// Plain HTTP on loopback only: oidc-provider serves it (it warns once), and oauthenticator talks
// to it with `validate_server_cert` unchanged because no TLS is involved.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import Provider, { errors } from 'oidc-provider';

const CLIENT_IDS = { checkin: 'gateway-checkin', cilogon: 'gateway-cilogon', rucio: 'gateway-rucio' };
//: the resource indicator (RFC 8707) and the audience of the JWT access tokens issued to gateway-rucio
const RUCIO_RESOURCE = process.env.OIDC_RUCIO_RESOURCE || 'urn:science-gateway:rucio';
const RUCIO_AUDIENCE = process.env.OIDC_RUCIO_AUDIENCE || 'rucio';
//: the OIDC scopes a Rucio token may carry (what the client was granted of these)
const RUCIO_SCOPES = ['openid', 'profile', 'email', 'eduperson_entitlement', 'voperson_id'];
const CHECKIN_AUTHORITY = 'aai.egi.eu';
const CILOGON_IDP = 'https://idp.university.example/idp/shibboleth';

// Test users. Entitlements follow urn:mace:egi.eu:group:<vo>[:<subgroup>][:role=<role>]#<authority>.
const USERS = {
  alice: {
    name: 'Alice Astro',
    voperson_id: 'alice.astro@egi.eu',
    eduperson_entitlement: [
      `urn:mace:egi.eu:group:vo.astro.example:role=member#${CHECKIN_AUTHORITY}`,
      `urn:mace:egi.eu:group:vo.astro.example:analysis:role=member#${CHECKIN_AUTHORITY}`,
      // the admin role, but from an authority the gateway does not list: must not make her admin
      'urn:mace:egi.eu:group:vo.gateway.example:role=admin#rogue-aai.example',
    ],
    isMemberOf: ['CO:COU:astro:members:active'],
  },
  bob: {
    name: 'Bob Admin',
    voperson_id: 'bob.admin@egi.eu',
    eduperson_entitlement: [
      `urn:mace:egi.eu:group:vo.astro.example:role=member#${CHECKIN_AUTHORITY}`,
      `urn:mace:egi.eu:group:vo.gateway.example:role=admin#${CHECKIN_AUTHORITY}`,
    ],
    isMemberOf: ['CO:COU:astro:members:active', 'CO:COU:gateway-admins:members:active'],
  },
  // Member of a VO the gateway does not allow: refused with the 403 page.
  carol: {
    name: 'Carol Other',
    voperson_id: 'carol.other@egi.eu',
    eduperson_entitlement: [`urn:mace:egi.eu:group:vo.other.example:role=member#${CHECKIN_AUTHORITY}`],
    isMemberOf: ['CO:COU:other:members:active'],
  },
  // Claims the allowed VO and the admin role, but from an authority the gateway does not list.
  mallory: {
    name: 'Mallory Rogue',
    voperson_id: 'mallory.rogue@egi.eu',
    eduperson_entitlement: [
      'urn:mace:egi.eu:group:vo.astro.example:role=member#rogue-aai.example',
      'urn:mace:egi.eu:group:vo.gateway.example:role=admin#rogue-aai.example',
    ],
    isMemberOf: [],
  },
};

// Users made by the pattern in OIDC_GENERATED_USERS ({} when it is unset).
function generatedUsers(spec) {
  if (!spec) return {};
  const match = /^([a-z][a-z0-9]{0,20}):([0-9]{1,4})$/.exec(spec);
  const count = match ? Number(match[2]) : 0;
  if (!match || count < 1 || count > 1000) {
    throw new Error(`OIDC_GENERATED_USERS must be PREFIX:COUNT (PREFIX [a-z][a-z0-9]*, COUNT 1-1000), not ${JSON.stringify(spec.slice(0, 40))}`);
  }
  const users = {};
  for (let i = 1; i <= count; i += 1) {
    const name = `${match[1]}${String(i).padStart(2, '0')}`;
    users[name] = {
      name: `Generated ${name}`,
      voperson_id: `${name}@egi.eu`,
      eduperson_entitlement: [`urn:mace:egi.eu:group:vo.astro.example:role=member#${CHECKIN_AUTHORITY}`],
      isMemberOf: ['CO:COU:astro:members:active'],
    };
  }
  return users;
}

let ACCOUNTS = USERS;

//: the claims each scope releases (userinfo, ID tokens)
const CLAIMS = {
  openid: ['sub'],
  profile: ['name', 'given_name', 'family_name', 'preferred_username'],
  email: ['email', 'email_verified'],
  eduperson_entitlement: ['eduperson_entitlement'],
  voperson_id: ['voperson_id'],
  'org.cilogon.userinfo': ['idp', 'idp_name', 'eppn', 'isMemberOf'],
};

function userClaims(username) {
  const u = ACCOUNTS[username];
  const [given, family] = u.name.split(' ');
  return {
    name: u.name,
    given_name: given,
    family_name: family,
    preferred_username: username,
    email: `${username}@university.example`,
    email_verified: true,
    voperson_id: u.voperson_id,
    eduperson_entitlement: u.eduperson_entitlement,
    isMemberOf: u.isMemberOf,
    idp: CILOGON_IDP,
    idp_name: 'University of Examples',
    eppn: `${username}@university.example`,
  };
}

function settings() {
  const host = process.env.OIDC_HOST || '127.0.0.1';
  const port = Number(process.env.OIDC_PORT || 19080);
  return {
    host,
    port,
    issuer: process.env.OIDC_ISSUER || `http://${host}:${port}`,
    accessTokenTTL: Number(process.env.OIDC_ACCESS_TOKEN_TTL || 3600),
  };
}

const stateFile = (dir) => path.join(dir, 'provider.json');
const secret = () => crypto.randomBytes(24).toString('base64url');

function init(dir) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (fs.existsSync(stateFile(dir))) return;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: secret().slice(0, 12) };
  const state = {
    cookieKeys: [secret(), secret()],
    jwks: { keys: [jwk] },
    clients: Object.fromEntries(Object.values(CLIENT_IDS).map((id) => [id, secret()])),
    passwords: Object.fromEntries(Object.keys(USERS).map((name) => [name, secret().slice(0, 16)])),
  };
  fs.writeFileSync(stateFile(dir), JSON.stringify(state, null, 2), { mode: 0o600 });
}

// The named users' passwords are stored at init; a generated user's is derived from the state's
// first cookie key (secret, per state dir), so a state made before the user existed still works.
function load(dir) {
  const state = JSON.parse(fs.readFileSync(stateFile(dir), 'utf8'));
  for (const id of Object.values(CLIENT_IDS)) {  // a client added after the state was made
    if (state.clients[id] === undefined) {
      state.clients[id] = crypto.createHmac('sha256', state.cookieKeys[0]).update(`client:${id}`).digest('base64url');
    }
  }
  for (const name of Object.keys(ACCOUNTS)) {
    if (state.passwords[name] === undefined) {
      state.passwords[name] = crypto.createHmac('sha256', state.cookieKeys[0]).update(`password:${name}`)
        .digest('base64url').slice(0, 16);
    }
  }
  return state;
}

function printEnv(dir) {
  const s = settings();
  const state = load(dir);
  const lines = [
    `OIDC_ISSUER=${s.issuer}`,
    `OIDC_DISCOVERY_URL=${s.issuer}/.well-known/openid-configuration`,
    `OIDC_INTROSPECTION_URL=${s.issuer}/token/introspection`,
    `OIDC_ACCESS_TOKEN_TTL=${s.accessTokenTTL}`,
    `OIDC_CHECKIN_CLIENT_ID=${CLIENT_IDS.checkin}`,
    `OIDC_CHECKIN_CLIENT_SECRET=${state.clients[CLIENT_IDS.checkin]}`,
    `OIDC_CHECKIN_AUTHORITY=${CHECKIN_AUTHORITY}`,
    `OIDC_CILOGON_CLIENT_ID=${CLIENT_IDS.cilogon}`,
    `OIDC_CILOGON_CLIENT_SECRET=${state.clients[CLIENT_IDS.cilogon]}`,
    `OIDC_CILOGON_IDP=${CILOGON_IDP}`,
    `OIDC_RUCIO_CLIENT_ID=${CLIENT_IDS.rucio}`,
    `OIDC_RUCIO_CLIENT_SECRET=${state.clients[CLIENT_IDS.rucio]}`,
    `OIDC_RUCIO_RESOURCE=${RUCIO_RESOURCE}`,
    `OIDC_RUCIO_AUDIENCE=${RUCIO_AUDIENCE}`,
    `OIDC_USERINFO_URL=${s.issuer}/me`,
    `OIDC_USERS=${Object.keys(ACCOUNTS).join(',')}`,
    ...Object.entries(state.passwords).map(([name, pw]) => `OIDC_PASSWORD_${name.toUpperCase()}=${pw}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:sans-serif;max-width:32em;margin:4em auto}label,input,button{display:block;margin:.5em 0}
.error{color:#a00}</style></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

function send(res, status, html) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(html);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function loginPage(uid, clientId, error) {
  return page(
    'Sign in to the Test Identity Provider',
    `<p>Application <b>${escapeHtml(clientId)}</b> asks you to sign in.</p>
${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label>Username <input name="username" id="username" required autofocus></label>
<label>Password <input name="password" id="password" type="password" required></label>
<button type="submit" id="sign-in">Sign in</button></form>`,
  );
}

function consentPage(uid, clientId, scopes, claims) {
  const items = [...scopes, ...claims].map((s) => `<li>${escapeHtml(s)}</li>`).join('');
  return page(
    'Authorize access',
    `<p>Application <b>${escapeHtml(clientId)}</b> asks for:</p><ul>${items}</ul>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
<button type="submit" id="allow">Allow</button></form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
<button type="submit" id="deny">Deny</button></form>`,
  );
}

function buildProvider(dir) {
  const s = settings();
  const state = load(dir);
  const client = (id, name) => ({
    client_id: id,
    client_secret: state.clients[id],
    client_name: name,
    // Native clients may use any port on a loopback redirect URI (RFC 8252 section 7.3): tests
    // start hubs on random free ports.
    application_type: 'native',
    redirect_uris: ['http://127.0.0.1/hub/oauth_callback', 'http://localhost/hub/oauth_callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  });
  const configuration = {
    clients: [
      client(CLIENT_IDS.checkin, 'Science Gateway (Check-in style)'),
      client(CLIENT_IDS.cilogon, 'Science Gateway (CILogon style)'),
      client(CLIENT_IDS.rucio, 'Science Gateway (Check-in style, JWT access tokens for Rucio)'),
    ],
    jwks: state.jwks,
    cookies: { keys: state.cookieKeys },
    clockTolerance: 0,
    scopes: ['openid', 'offline_access', 'profile', 'email', 'eduperson_entitlement', 'voperson_id', 'org.cilogon.userinfo'],
    claims: CLAIMS,
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      // JWT access tokens for Rucio, for the gateway-rucio client only (see the top of the file)
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, c, oneOf) => {
          if (oneOf) return oneOf;
          return c.clientId === CLIENT_IDS.rucio ? RUCIO_RESOURCE : undefined;
        },
        useGrantedResource: async (ctx) => ctx.oidc.client?.clientId === CLIENT_IDS.rucio,
        getResourceServerInfo: async (ctx, indicator, c) => {
          if (indicator !== RUCIO_RESOURCE || c.clientId !== CLIENT_IDS.rucio) throw new errors.InvalidTarget();
          return {
            scope: RUCIO_SCOPES.join(' '),
            audience: RUCIO_AUDIENCE,
            accessTokenFormat: 'jwt',
            accessTokenTTL: s.accessTokenTTL,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // Refresh tokens to every client allowed the grant, as Check-in and CILogon do for
    // registered clients (oidc-provider otherwise drops offline_access without prompt=consent).
    issueRefreshToken: async (ctx, c) => c.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: s.accessTokenTTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Grant: 24 * 3600,
      Session: 24 * 3600,
      Interaction: 600,
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, id) => {
      if (!ACCOUNTS[id]) return undefined;
      return { accountId: id, claims: async () => userClaims(id) };
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre>`);
    },
  };
  const provider = new Provider(s.issuer, configuration);
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return { provider, state, s };
}

async function handleInteraction(provider, state, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<p>Interaction mismatch.</p>'));
    return;
  }
  const { prompt, params } = details;
  if (req.method === 'GET') {
    if (prompt.name === 'login') {
      send(res, 200, loginPage(uid, params.client_id));
    } else {
      const scopes = prompt.details.missingOIDCScope || [];
      const claims = prompt.details.missingOIDCClaims || [];
      send(res, 200, consentPage(uid, params.client_id, scopes, claims));
    }
    return;
  }
  const form = await readForm(req);
  if (action === 'login') {
    const username = (form.get('username') || '').trim();
    const expected = Object.hasOwn(state.passwords, username) ? state.passwords[username] : undefined;
    const given = form.get('password') || '';
    const ok = expected !== undefined && given.length === expected.length
      && crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected));
    if (!ok) {
      console.log(`login refused for ${JSON.stringify(username)}`);
      send(res, 200, loginPage(uid, params.client_id, 'Wrong username or password.'));
      return;
    }
    console.log(`login ${username} for ${params.client_id}`);
    await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
  } else if (action === 'confirm') {
    const { accountId } = details.session;
    let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
    if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    console.log(`consent ${accountId} for ${params.client_id}`);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } else if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'The user denied access.',
    }, { mergeWithLastSubmission: false });
  } else {
    send(res, 404, page('Not found', ''));
  }
}

const b64json = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));

// The claims of a JWT access token this provider issued to gateway-rucio, or an error string.
// The checks a resource server makes: signature with our key, issuer, expiry (no tolerance),
// audience; then the client and the account must still exist.
function verifyRucioJwt(token, publicKey, issuer) {
  const parts = token.split('.');
  if (parts.length !== 3) return 'not a JWT';
  let header;
  let payload;
  try {
    header = b64json(parts[0]);
    payload = b64json(parts[1]);
  } catch {
    return 'malformed JWT';
  }
  if (header.alg !== 'RS256') return 'unexpected JWS algorithm';
  const signed = crypto.verify('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), publicKey,
    Buffer.from(parts[2], 'base64url'));
  if (!signed) return 'bad signature';
  if (payload.iss !== issuer) return 'wrong issuer';
  if (typeof payload.exp !== 'number' || payload.exp <= Date.now() / 1000) return 'token expired';
  const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  if (!aud.includes(RUCIO_AUDIENCE) || payload.client_id !== CLIENT_IDS.rucio) return 'not a token of this provider\'s Rucio client';
  if (!ACCOUNTS[payload.sub]) return 'unknown account';
  return payload;
}

// Userinfo for the JWT access tokens of gateway-rucio (oidc-provider's own userinfo refuses
// audience-bound tokens): the claims of the scopes the token carries, as userinfo would give them.
function userinfoForJwt(req, res, token, publicKey, issuer) {
  const payload = verifyRucioJwt(token, publicKey, issuer);
  if (typeof payload === 'string') {
    res.writeHead(401, {
      'Content-Type': 'application/json', 'Cache-Control': 'no-store',
      'WWW-Authenticate': `Bearer error="invalid_token", error_description="${payload}"`,
    });
    res.end(JSON.stringify({ error: 'invalid_token', error_description: payload }));
    return;
  }
  const scopes = String(payload.scope || '').split(' ');
  if (!scopes.includes('openid')) {
    res.writeHead(403, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(JSON.stringify({ error: 'insufficient_scope', error_description: 'access token missing openid scope' }));
    return;
  }
  const all = userClaims(payload.sub);
  const body = { sub: payload.sub };
  for (const scope of scopes) {
    for (const claim of CLAIMS[scope] || []) {
      if (claim !== 'sub' && all[claim] !== undefined) body[claim] = all[claim];
    }
  }
  res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(JSON.stringify(body));
}

function serve(dir) {
  const { provider, state, s } = buildProvider(dir);
  const callback = provider.callback();
  const publicKey = crypto.createPublicKey(crypto.createPrivateKey({ key: state.jwks.keys[0], format: 'jwk' }));
  const server = http.createServer(async (req, res) => {
    const bearer = /^Bearer ([\w-]+\.[\w-]+\.[\w-]+)$/.exec(req.headers.authorization || '');
    if (bearer && req.url.split('?')[0] === '/me' && ['GET', 'POST'].includes(req.method)) {
      userinfoForJwt(req, res, bearer[1], publicKey, s.issuer);
      return;
    }
    const match = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?\/?$/.exec(req.url.split('?')[0]);
    if (!match) {
      callback(req, res);
      return;
    }
    try {
      await handleInteraction(provider, state, req, res, match[1], match[2]);
    } catch (err) {
      console.error('interaction error', err.name, err.message);
      if (!res.headersSent) send(res, 400, page('Error', `<p>${escapeHtml(err.message)}</p>`));
    }
  });
  server.listen(s.port, s.host, () => {
    console.log(`oidc-provider ${s.issuer} listening on ${s.host}:${s.port}, access tokens live ${s.accessTokenTTL}s`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const [command, dir] = process.argv.slice(2);
if (!dir || !['init', 'env', 'serve'].includes(command)) {
  console.error('usage: node server.mjs init|env|serve STATE_DIR');
  process.exit(2);
}
try {
  ACCOUNTS = { ...USERS, ...generatedUsers(process.env.OIDC_GENERATED_USERS) };
} catch (err) {
  console.error(err.message);
  process.exit(2);
}
if (command === 'init') init(dir);
else if (command === 'env') printEnv(dir);
else serve(dir);
