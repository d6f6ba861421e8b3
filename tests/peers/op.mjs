// OpenID Provider for flexgate's integration tests, built on npm `oidc-provider` 9 (OpenID-certified).
//
//   node tests/peers/op.mjs CONFIG.json
//
// Listens on 127.0.0.1 only. Prints exactly one line `READY http://127.0.0.1:PORT` on stdout when it accepts
// connections (that URL is the issuer: no trailing slash), logs to stderr, and runs until SIGTERM/SIGINT, or
// until stdin closes when stdin is a pipe (so a test that dies does not leak it; stdin from /dev/null or a
// terminal is ignored).
//
// ---- CONFIG.json (unknown keys are ignored; all but `clients` and `users` optional) -------------------------
// {
//   "port": 0,                         // 0 = pick a free port
//   "clients": [ {                     // OIDC client metadata, passed to oidc-provider as is; defaults added:
//       "client_id": "flexgate",       //   grant_types [authorization_code], response_types [code],
//       "client_secret": "s3cret",     //   require_auth_time true (so auth_time is always in the ID token),
//       "redirect_uris": ["http://127.0.0.1:1234/oidc/callback"],   //   id_token_signed_response_alg RS256
//       "token_endpoint_auth_method": "client_secret_basic" } ],
//   "users": {                         // login name -> claims. `sub` defaults to the login name.
//     "agent1": { "email": "agent1@example.com", "email_verified": true, "name": "Ada Agent",
//                 "picture": "https://img.example.com/a.png",
//                 "https://flex.example.com/roles": ["agent"],      // any claim name, namespaced URLs too
//                 "app_metadata": { "flex": { "roles": ["agent"] } },  // nested objects are kept as they are
//                 "amr": ["pwd"],      // session property: put in the ID token from the login (optional)
//                 "acr": "urn:...",    // session property, optional; also listed in acr_values_supported
//                 "auth_time_offset_secs": -600 }  // optional: report auth_time this far off (ForceAuthn tests)
//   },
//   "token_delay_ms": 0,               // delay every POST /token by this much (timeout tests)
//   "client_extra": { "userinfo_signed_response_alg": "RS256" },  // merged into every client
//   "userinfo_only_claims": ["dept"],  // claims left out of the ID token (userinfo still has them)
//   "tamper_userinfo_signature": false, // misbehave: flip one character of a signed (application/jwt)
//                                      // userinfo answer's signature. A client with
//                                      // "userinfo_signed_response_alg": "RS256" gets signed userinfo
//                                      // (jwtUserinfo is enabled).
//   "ignore_prompt_none": false,       // misbehave: drop prompt=none from GET /auth, so a person with no
//                                      // session is asked to sign in (IsPassive tests)
//   "scopes": { "flex": ["app_metadata"] },  // optional extra scope -> claim names (see "Claims" below)
//   "pkce_optional_clients": ["satosa"]      // optional: client_ids allowed to omit PKCE (default: none).
//                                            // For peers that send no PKCE (SATOSA's OIDC backend), used by
//                                            // benches/run only; a PKCE request from such a client is still checked.
// }
//
// ---- Claims ---------------------------------------------------------------------------------------------------
// conformIdTokenClaims is false, so (as at Auth0) every claim released by the granted scopes is in the ID token,
// not only in userinfo. Standard OIDC claims sit under their standard scope (profile, email, phone, address);
// EVERY OTHER claim a user has (namespaced URLs, app_metadata, ...) plus amr/acr sits under `openid`, so it is
// always released, like claims an Auth0 Action adds. With scope `openid profile email` every configured claim
// of the user is therefore in BOTH the ID token and the userinfo response. ID token: RS256, with auth_time.
// PKCE is required for every client not listed in pkce_optional_clients, and only S256 exists in oidc-provider 9.
// Any password is accepted.
//
// ---- Login, as a client with ONE cookie jar and redirects NOT followed (observed with curl) -----------------
//  The jar must honour cookie paths: _interaction* cookies are scoped to /interaction/{uid}, _interaction_resume*
//  to /auth/{uid}, _session to /. Cookies are not Secure (plain http on 127.0.0.1).
//  1. GET  {issuer}/auth?client_id=flexgate&response_type=code&scope=openid%20profile%20email
//          &redirect_uri=...&state=S&nonce=N&code_challenge=C&code_challenge_method=S256
//       -> 303, Location: /interaction/{uid1}            (RELATIVE; sets _interaction, _interaction_resume)
//     (No PKCE, or code_challenge_method=plain -> 303 to redirect_uri?error=invalid_request&...&state=S&iss=...)
//  2. GET  {issuer}/interaction/{uid1}  -> 200 HTML login form          (optional: the POST works without it)
//  3. POST {issuer}/interaction/{uid1}   Content-Type: application/x-www-form-urlencoded
//          body: prompt=login&login=agent1&password=anything
//       -> 303, Location: http://127.0.0.1:PORT/auth/{uid1}   (ABSOLUTE)
//  4. GET  {issuer}/auth/{uid1}
//       -> 303, Location: /interaction/{uid2}            (RELATIVE; consent prompt, a NEW uid; sets _session)
//  5. POST {issuer}/interaction/{uid2}   body: prompt=consent
//       -> 303, Location: http://127.0.0.1:PORT/auth/{uid2}   (ABSOLUTE)
//  6. GET  {issuer}/auth/{uid2}
//       -> 303, Location: {redirect_uri}?code=...&state=S&iss=http%3A%2F%2F127.0.0.1%3APORT
//  Variants: an unknown login at step 3 -> step 4 answers 303 {redirect_uri}?error=access_denied
//  &error_description=unknown+user+NAME&state=S&iss=...; GET /interaction/{uid}/abort instead of step 3 or 5 ->
//  303 /auth/{uid} -> 303 {redirect_uri}?error=access_denied&error_description=End-User+aborted+interaction&...
//  A second /auth with the same jar (session + grant exist) answers step 1 with 303 straight to redirect_uri.
//  Token: POST {issuer}/token, Authorization: Basic base64(client_id:client_secret),
//         body grant_type=authorization_code&code=...&redirect_uri=...&code_verifier=V
//       -> 200 {"access_token":"…","expires_in":3600,"id_token":"…","scope":"openid profile email","token_type":"Bearer"}
//         (bad code -> 400 {"error":"invalid_grant","error_description":"grant request is invalid"})
//  Userinfo: GET {issuer}/me, Authorization: Bearer {access_token} -> 200 JSON with the same user claims.
//  Discovery: {issuer}/.well-known/openid-configuration; JWKS: {issuer}/jwks (one RSA key, new each start).
//
//  Observed ID token: header {"alg":"RS256","kid":"7f8453039c858740"} (no typ), payload:
//   {"sub":"agent1","amr":["pwd"],"https://flex.example.com/roles":["agent"],
//    "app_metadata":{"flex":{"roles":["agent"]}},"name":"Ada Agent","picture":"https://img.example.com/a.png",
//    "email":"agent1@example.com","email_verified":true,"auth_time":1795522931,"nonce":"N","aud":"flexgate",
//    "exp":1795526531,"iat":1795522931,"iss":"http://127.0.0.1:44973"}
//  Observed userinfo: {"sub":"agent1","amr":["pwd"],"https://flex.example.com/roles":["agent"],
//    "app_metadata":{"flex":{"roles":["agent"]}},"name":"Ada Agent","picture":"https://img.example.com/a.png",
//    "email":"agent1@example.com","email_verified":true}
//
//  Spawning from Rust: Stdio::piped() for stdin and keep the ChildStdin alive as long as the OP should run
//  (dropping it stops the OP), or Stdio::null(); read stdout lines until `READY `. oidc-provider prints a
//  "Unsupported runtime" warning on Node 20 to stderr: harmless.
import { createServer } from 'node:http';
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, fstatSync } from 'node:fs';
import Provider from 'oidc-provider';

const die = (msg) => { process.stderr.write(`op.mjs: ${msg}\n`); process.exit(2); };
if (process.argv.length !== 3) die('usage: node tests/peers/op.mjs CONFIG.json');
let cfg;
try { cfg = JSON.parse(readFileSync(process.argv[2], 'utf8')); } catch (e) { die(`cannot read config: ${e.message}`); }
if (!Array.isArray(cfg.clients) || !cfg.clients.length) die('config: "clients" must be a non-empty array');
if (!cfg.users || typeof cfg.users !== 'object') die('config: "users" must be an object');
const users = cfg.users;
// sub -> claims, built once (a scan per lookup costs ≈ 25 ms per login with 10,000 users).
const bySub = new Map();
for (const [login, u] of Object.entries(users)) if (!bySub.has(u.sub ?? login)) bySub.set(u.sub ?? login, u);
const tokenDelay = Number(cfg.token_delay_ms || 0);
const ignorePromptNone = cfg.ignore_prompt_none === true;
const userinfoOnly = new Set(Array.isArray(cfg.userinfo_only_claims) ? cfg.userinfo_only_claims : []);
const tamperUserinfo = cfg.tamper_userinfo_signature === true;
const pkceOptional = new Set(Array.isArray(cfg.pkce_optional_clients) ? cfg.pkce_optional_clients : []);

// ---- claims per scope -------------------------------------------------------------------------------------------
const STANDARD = {
  profile: ['name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username', 'profile',
    'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at'],
  email: ['email', 'email_verified'],
  phone: ['phone_number', 'phone_number_verified'],
  address: ['address'],
};
const standard = new Set(Object.values(STANDARD).flat());
const other = new Set(['amr', 'acr']);
const NOT_CLAIMS = new Set(['auth_time_offset_secs']);
for (const u of Object.values(users)) for (const k of Object.keys(u)) if (k !== 'sub' && !standard.has(k) && !NOT_CLAIMS.has(k)) other.add(k);
const claims = { openid: ['sub', ...other], ...STANDARD, ...(cfg.scopes || {}) };
const acrValues = [...new Set(Object.values(users).map((u) => u.acr).filter(Boolean))];

function findUser(login) {
  return Object.hasOwn(users, login) ? users[login] : undefined;
}

// ---- HTTP server first, so the issuer can carry the real port ---------------------------------------------------
const server = createServer();
await new Promise((ok, fail) => { server.once('error', fail); server.listen(Number(cfg.port || 0), '127.0.0.1', ok); });
const issuer = `http://127.0.0.1:${server.address().port}`;

// The key comes out as PEM and is imported again before the JWK export: exporting the key object
// generateKeyPairSync returns can deadlock in Node 20 (a GC during the export runs the key-generation
// job's destructor, which waits for the lock the export holds; seen as a test OP that never said READY).
const { privateKey: privatePem } = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  publicKeyEncoding: { type: 'spki', format: 'pem' },
});
const privateKey = createPrivateKey(privatePem);
const provider = new Provider(issuer, {
  clients: cfg.clients.map((c) => ({
    grant_types: ['authorization_code'], response_types: ['code'], require_auth_time: true,
    id_token_signed_response_alg: 'RS256', ...c, ...(cfg.client_extra || {}),
  })),
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: randomBytes(8).toString('hex') }] },
  claims,
  acrValues,
  conformIdTokenClaims: false,
  pkce: { required: (ctx, client) => !pkceOptional.has(client.clientId) },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: false }, jwtUserinfo: { enabled: true } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const user = bySub.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      claims: (use) => Object.fromEntries(Object.entries({ ...user, sub })
        .filter(([k]) => use !== 'id_token' || !userinfoOnly.has(k))),
    };
  },
  renderError(ctx, out, error) {
    process.stderr.write(`op.mjs: error page: ${JSON.stringify(out)} ${error?.stack || ''}\n`);
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><title>oops</title><pre>${JSON.stringify(out).replace(/</g, '&lt;')}</pre>`;
  },
});
provider.on('server_error', (ctx, err) => process.stderr.write(`op.mjs: server_error ${err.stack}\n`));

// ---- interactions: the same URLs and form fields as oidc-provider's devInteractions, but with users from the
// config (unknown login -> access_denied) and amr/acr taken into the session.
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>`;

async function readForm(req) {
  let body = '';
  for await (const chunk of req) { body += chunk; if (body.length > 65536) throw new Error('form too large'); }
  return Object.fromEntries(new URLSearchParams(body));
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction uid does not match the cookie');
  const { prompt, params, session, grantId } = details;
  if (action === 'abort') {
    return provider.interactionFinished(req, res,
      { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'GET') {
    const form = prompt.name === 'login'
      ? `<input type="hidden" name="prompt" value="login"><label>Login <input name="login" autofocus></label>
         <label>Password <input type="password" name="password"></label><button type="submit">Sign-in</button>`
      : `<input type="hidden" name="prompt" value="consent"><p>${esc(params.client_id)} asks for ${esc(params.scope)}</p>
         <button type="submit">Continue</button>`;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    return res.end(page(prompt.name === 'login' ? 'Sign-in' : 'Authorize',
      `<form method="post" action="/interaction/${esc(uid)}">${form}</form><a href="/interaction/${esc(uid)}/abort">Cancel</a>`));
  }
  const form = await readForm(req);
  if (form.prompt === 'login' && prompt.name === 'login') {
    const user = findUser(form.login);
    if (!user) {
      return provider.interactionFinished(req, res,
        { error: 'access_denied', error_description: `unknown user ${form.login}` }, { mergeWithLastSubmission: false });
    }
    const login = { accountId: user.sub ?? form.login };
    if (user.amr) login.amr = user.amr;
    if (user.acr) login.acr = user.acr;
    // An OP that reports an old authentication (for ForceAuthn tests): auth_time = now + offset.
    if (user.auth_time_offset_secs) login.ts = Math.floor(Date.now() / 1000) + Number(user.auth_time_offset_secs);
    return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
  }
  if (form.prompt === 'consent' && prompt.name === 'consent') {
    const grant = grantId ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scope] of Object.entries(d.missingResourceScopes || {})) grant.addResourceScope(indicator, scope.join(' '));
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }
  res.writeHead(400, { 'content-type': 'text/plain' });
  return res.end(`expected prompt=${prompt.name}, got prompt=${form.prompt}\n`);
}

// Flips the first character of the signature of an application/jwt body (same length, so the
// Content-Length oidc-provider set stays right).
function tamperSignedBody(res) {
  const end = res.end.bind(res);
  res.end = (chunk, ...rest) => {
    if (chunk && String(res.getHeader('content-type') || '').startsWith('application/jwt')) {
      const parts = String(chunk).split('.');
      parts[2] = (parts[2][0] === 'A' ? 'B' : 'A') + parts[2].slice(1);
      process.stderr.write('op.mjs: tampering with the signed userinfo answer\n');
      return end(parts.join('.'), ...rest);
    }
    return end(chunk, ...rest);
  };
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  try {
    const { pathname } = new URL(req.url, issuer);
    const m = /^\/interaction\/([^/]+)(\/abort)?$/.exec(pathname);
    if (m) return await interaction(req, res, m[1], m[2] ? 'abort' : req.method);
    if (ignorePromptNone && req.method === 'GET' && pathname === '/auth') {
      const u = new URL(req.url, issuer);
      if (u.searchParams.get('prompt') === 'none') {
        process.stderr.write('op.mjs: ignoring prompt=none\n');
        u.searchParams.delete('prompt');
        req.url = `${u.pathname}${u.search}`;
      }
    }
    if (tamperUserinfo && pathname === '/me') tamperSignedBody(res);
    if (tokenDelay > 0 && req.method === 'POST' && pathname === '/token') {
      process.stderr.write(`op.mjs: delaying POST /token by ${tokenDelay} ms\n`);
      await new Promise((ok) => setTimeout(ok, tokenDelay));
    }
    return callback(req, res);
  } catch (e) {
    process.stderr.write(`op.mjs: ${req.method} ${req.url}: ${e.stack}\n`);
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
    return res.end(`${e.message}\n`);
  }
});

const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); setTimeout(() => process.exit(0), 500).unref(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
try { if (fstatSync(0).isFIFO()) { process.stdin.on('end', stop).on('error', stop).resume(); } } catch { /* no stdin */ }
process.stdout.write(`READY ${issuer}\n`);
