// A stand-in for the one part of Auth0 that cannot run here: the Management API v2, as far as flexgate
// uses it. This file is the server: token endpoint, bearer tokens and scopes, the tenant rate limit, test
// statistics, and a routes table. The endpoints themselves live in `auth0_mgmt_*.mjs` modules next to it,
// loaded in name order; each exports `routes(ctx)` → [{method, path: RegExp, name, scope, handler}].
//
// Shapes (Auth0 docs: "Management API Access Tokens", "Rate Limit Policy", "Management API Rate Limits"):
//   POST /oauth/token  (Content-Type: application/json or form)
//        {"grant_type":"client_credentials","client_id","client_secret","audience":"https://{tenant}/api/v2/"}
//     -> 200 {"access_token","token_type":"Bearer","expires_in","scope":"read:users update:users"}
//     -> 401 {"error":"access_denied","error_description":"Unauthorized"} on a wrong client
//     -> 403 {"error":"access_denied","error_description":"Service not enabled within domain: …"} on a wrong audience
//   Every /api/v2 request: Authorization: Bearer …
//     -> 401 {"statusCode":401,"error":"Unauthorized","message":"Invalid token"}
//     -> 403 {"statusCode":403,"error":"Forbidden","message":"Insufficient scope, expected any of: update:users","errorCode":"insufficient_scope"}
//   Every /api/v2 response carries X-RateLimit-Limit (bucket size), X-RateLimit-Remaining and
//   X-RateLimit-Reset (epoch seconds when the bucket is full again); over the limit:
//     -> 429 {"statusCode":429,"error":"Too Many Requests","message":"Global limit has been reached","errorCode":"too_many_requests"}
//   Auth0's limit is a token bucket per tenant: 2 requests/s sustained on free production tenants, 16/s on
//   paid and enterprise production tenants, with a burst allowance (node-auth0 retries 429s by
//   X-RateLimit-Reset: src/lib/retry.ts; go-auth0 management/management.go reads the same headers).
//
//   node tests/peers/auth0_mgmt.mjs CONFIG.json  -> prints `READY http://127.0.0.1:PORT`, runs until stdin closes/SIGTERM
// CONFIG: {"port":0,"client_id":"mgmt","client_secret":"s","token_ttl":86400,
//          "audience": "…/api/v2/",     // default: {this server}/api/v2/
//          "scope": "read:users update:users",   // scopes granted to client-credentials tokens
//          "static_tokens": ["t"],     // tokens accepted as they are (AUTH0_MGMT_TOKEN), all scopes
//          "static_token": "t",        // the same, one token
//          "users":{"auth0|1":{"email":"…","app_metadata":{"flex":{"roles":["agent"]}}}},
//          "rate": {"per_sec": 16, "burst": 50},  // the tenant limit; absent: unlimited (headers still sent)
//          "rate_limit_first":0,      // answer the first N GET /api/v2/users/{id} with 429
//          "retry_after":1,           // Retry-After / reset seconds on those 429s
//          "user_delay_ms":0,         // delay GET /api/v2/users/{id} (timeout tests)
//          "search_unavailable":0,    // answer the first N users searches with 503 (outage tests)
//          "export_delay_ms":200,     // how long a users-export job takes
//          "rate_headers":{"x-ratelimit-limit":"4294967296"},  // hostile X-RateLimit-* values sent on
//                                     // every /api/v2 answer (a broken tenant or a proxy); null removes one
//          "throttle":{"route":"users_by_email","first":1,"reset_in":3600},  // answer the first N requests
//                                     // of that route with 429 and X-RateLimit-Reset that far ahead
//          "token_expires_in": -5}    // the token answer's expires_in, as given (any JSON value)
// GET /__stats -> {"token_requests","user_requests","requests","writes","rate_limited","by_route":{name:n}}
// (test-only introspection, not an Auth0 endpoint; `user_requests` counts GET /api/v2/users/{id}).
// GET /__requests -> [{"method","path"}…], every request received so far in order (test-only; tests assert
// "no write call" with it).
// Applications, Actions and trigger bindings: auth0_tenant.mjs (its CONFIG keys are listed there); users and
// users-export jobs: auth0_mgmt_users.mjs. Both sit behind the same tokens and rate limit.
import { createServer } from 'node:http';
import { readFileSync, readdirSync, fstatSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tenantRoutes } from './auth0_tenant.mjs';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const tokens = new Map(); // token -> {exp, scope:Set|null}
for (const t of [...(cfg.static_tokens || []), ...(cfg.static_token ? [cfg.static_token] : [])]) tokens.set(t, { exp: Infinity, scope: null });
const stats = { token_requests: 0, user_requests: 0, requests: 0, writes: 0, rate_limited: 0, by_route: {} };
const requests = [];
const tenant = tenantRoutes(cfg);
const grantedScope = cfg.scope ?? `read:users update:users ${tenant.scope}`;

export function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

export function apiError(res, status, error, message, errorCode) {
  return send(res, status, { statusCode: status, error, message, ...(errorCode ? { errorCode } : {}) });
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] || '').includes('application/json')) return JSON.parse(raw || '{}');
  return Object.fromEntries(new URLSearchParams(raw));
}

// The tenant's token bucket.
const rate = cfg.rate ? { per: cfg.rate.per_sec, burst: cfg.rate.burst ?? cfg.rate.per_sec } : null;
let bucket = rate ? rate.burst : 0;
let filled = Date.now();
function refill() {
  const now = Date.now();
  bucket = Math.min(rate.burst, bucket + ((now - filled) / 1000) * rate.per);
  filled = now;
}
function rateHeaders() {
  const h = saneRateHeaders();
  for (const [k, v] of Object.entries(cfg.rate_headers ?? {})) {
    if (v === null) delete h[k]; else h[k] = String(v);
  }
  return h;
}
function saneRateHeaders() {
  if (!rate) return { 'x-ratelimit-limit': '1000', 'x-ratelimit-remaining': '999', 'x-ratelimit-reset': String(Math.ceil(Date.now() / 1000)) };
  const full = Date.now() + ((rate.burst - bucket) / rate.per) * 1000;
  return {
    'x-ratelimit-limit': String(rate.burst),
    'x-ratelimit-remaining': String(Math.max(0, Math.floor(bucket))),
    'x-ratelimit-reset': String(Math.ceil(full / 1000)),
  };
}
/// Takes one request from the bucket; false when empty.
function admit() {
  if (!rate) return true;
  refill();
  if (bucket < 1) return false;
  bucket -= 1;
  return true;
}

function issueToken(req, res, b) {
  if (b.grant_type !== 'client_credentials') return send(res, 400, { error: 'unsupported_grant_type', error_description: 'Unsupported grant type' });
  if (b.client_id !== cfg.client_id || b.client_secret !== cfg.client_secret) return send(res, 401, { error: 'access_denied', error_description: 'Unauthorized' });
  const audience = cfg.audience ?? `${ctx.base}/api/v2/`;
  if (b.audience !== audience) return send(res, 403, { error: 'access_denied', error_description: `Service not enabled within domain: ${b.audience}` });
  const t = randomBytes(24).toString('base64url');
  const ttl = cfg.token_ttl ?? 86400;
  tokens.set(t, { exp: Date.now() + ttl * 1000, scope: new Set(grantedScope.split(' ').filter(Boolean)) });
  const expiresIn = 'token_expires_in' in cfg ? cfg.token_expires_in : ttl;
  return send(res, 200, { access_token: t, token_type: 'Bearer', expires_in: expiresIn, scope: grantedScope });
}

// Shared with the route modules.
const ctx = { cfg, stats, base: '', send, apiError, rateHeaders };
const here = dirname(fileURLToPath(import.meta.url));
const routes = [];
for (const f of readdirSync(here).filter((f) => /^auth0_mgmt_.+\.mjs$/.test(f)).sort()) {
  const mod = await import(join(here, f));
  routes.push(...mod.routes(ctx));
}

function tokenOf(req) {
  const auth = req.headers.authorization || '';
  const tok = tokens.get(auth.startsWith('Bearer ') ? auth.slice(7) : '');
  return tok && tok.exp >= Date.now() ? tok : null;
}

async function api(req, res, url) {
  const route = routes.find((r) => r.method === req.method && r.path.test(url.pathname));
  stats.requests++;
  const name = route ? route.name : 'tenant';
  stats.by_route[name] = (stats.by_route[name] || 0) + 1;
  const tok = tokenOf(req);
  if (!tok) return apiError(res, 401, 'Unauthorized', 'Invalid token');
  if (cfg.throttle && cfg.throttle.route === name && (stats.throttled ?? 0) < (cfg.throttle.first ?? 1)) {
    stats.throttled = (stats.throttled ?? 0) + 1;
    stats.rate_limited++;
    const reset = Math.floor(Date.now() / 1000) + (cfg.throttle.reset_in ?? 3600);
    res.setHeader('x-ratelimit-limit', '50');
    res.setHeader('x-ratelimit-remaining', '0');
    res.setHeader('x-ratelimit-reset', String(reset));
    return apiError(res, 429, 'Too Many Requests', 'Global limit has been reached', 'too_many_requests');
  }
  if (!admit()) {
    stats.rate_limited++;
    res.setHeader('retry-after', String(Math.max(1, Number(rateHeaders()['x-ratelimit-reset']) - Math.floor(Date.now() / 1000))));
    for (const [k, v] of Object.entries(rateHeaders())) res.setHeader(k, v);
    return apiError(res, 429, 'Too Many Requests', 'Global limit has been reached', 'too_many_requests');
  }
  for (const [k, v] of Object.entries(rateHeaders())) res.setHeader(k, v);
  if (req.method !== 'GET') stats.writes++;
  if (!route) {
    const authorized = (r) => tokenOf(r) !== null;
    if (await tenant.handle(req, res, url, { send, readBody, authorized })) return;
    return apiError(res, 404, 'Not Found', 'Not Found');
  }
  if (route.scope && tok.scope && !tok.scope.has(route.scope)) {
    return apiError(res, 403, 'Forbidden', `Insufficient scope, expected any of: ${route.scope}`, 'insufficient_scope');
  }
  const body = ['POST', 'PATCH', 'PUT'].includes(req.method) ? await readBody(req) : undefined;
  return route.handler({ req, res, url, body, params: url.pathname.match(route.path).slice(1).map(decodeURIComponent) });
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, ctx.base);
    if (!url.pathname.startsWith('/__')) requests.push({ method: req.method, path: url.pathname });
    if (req.method === 'POST' && url.pathname === '/oauth/token') {
      stats.token_requests++;
      return issueToken(req, res, await readBody(req));
    }
    if (req.method === 'GET' && url.pathname === '/__stats') return send(res, 200, stats);
    if (req.method === 'GET' && url.pathname === '/__requests') return send(res, 200, requests);
    if (url.pathname.startsWith('/api/v2/')) return await api(req, res, url);
    const extra = routes.find((r) => r.method === req.method && r.path.test(url.pathname) && r.public);
    if (extra) return extra.handler({ req, res, url, params: url.pathname.match(extra.path).slice(1) });
    apiError(res, 404, 'Not Found', 'Not Found');
  } catch (e) {
    if (!res.headersSent) apiError(res, 500, 'Internal Server Error', String(e));
  }
});

server.listen(cfg.port || 0, '127.0.0.1', () => {
  ctx.base = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`READY ${ctx.base}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
try { if (fstatSync(0).isFIFO()) { process.stdin.on('end', stop); process.stdin.resume(); } } catch { /* no stdin */ }
