// A stand-in for the one part of Auth0 that cannot run here: the Management API v2, as far as flexgate
// uses it. It follows Auth0's documented shapes:
//   POST /oauth/token  (Content-Type: application/json or form)
//        {"grant_type":"client_credentials","client_id","client_secret","audience":"{base}/api/v2/"}
//     -> 200 {"access_token","token_type":"Bearer","expires_in","scope":"read:users"}
//     -> 401 {"error":"access_denied","error_description":"Unauthorized"} on a wrong client
//     -> 403 {"error":"access_denied","error_description":"Service not enabled within domain: …"} on a wrong audience
//   GET  /api/v2/users/{id}   Authorization: Bearer …  (id URL-encoded, e.g. auth0%7C123)
//     -> 200 {"user_id","email","app_metadata":{…},…}
//     -> 401 {"statusCode":401,"error":"Unauthorized","message":"Invalid token"}
//     -> 404 {"statusCode":404,"error":"Not Found","message":"The user does not exist.","errorCode":"inexistent_user"}
//     -> 429 {"statusCode":429,"error":"Too Many Requests","message":"Global limit has been reached"}
//        with Retry-After (seconds) and X-RateLimit-Limit/-Remaining/-Reset headers
// (Auth0 docs: "Management API Access Tokens", "Get a user" GET /api/v2/users/{id}, "Rate Limit Policy".)
//
//   node tests/peers/auth0_mgmt.mjs CONFIG.json  -> prints `READY http://127.0.0.1:PORT`, runs until stdin closes/SIGTERM
// CONFIG: {"port":0,"client_id":"mgmt","client_secret":"s","token_ttl":86400,
//          "users":{"agent1":{"email":"…","app_metadata":{"flex":{"roles":["agent"]}}}},
//          "rate_limit_first":0,      // answer the first N user requests with 429
//          "retry_after":1,           // Retry-After seconds on those 429s
//          "user_delay_ms":0}         // delay user responses (timeout tests)
// GET /__stats -> {"token_requests":n,"user_requests":n} (test-only introspection, not an Auth0 endpoint).
// GET /__requests -> [{"method","path"}…], every request received so far in order (test-only; tests assert
// "no write call" with it). CONFIG "static_token": a token accepted as is (AUTH0_MGMT_TOKEN); "audience":
// the token audience expected (default {base}/api/v2/; Auth0's is https://{tenant domain}/api/v2/, also
// when reached through a proxy).
// Applications, Actions and trigger bindings: auth0_tenant.mjs (its CONFIG keys are listed there).
import { createServer } from 'node:http';
import { readFileSync, fstatSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tenantRoutes } from './auth0_tenant.mjs';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const tokens = new Map();
const stats = { token_requests: 0, user_requests: 0 };
const requests = [];
const tenant = tenantRoutes(cfg);
let base = '';

function authorized(req) {
  const auth = req.headers.authorization || '';
  const t = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  if (cfg.static_token && t === cfg.static_token) return true;
  return tokens.has(t) && tokens.get(t) >= Date.now();
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] || '').includes('application/json')) return JSON.parse(raw || '{}');
  return Object.fromEntries(new URLSearchParams(raw));
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, base);
    if (!url.pathname.startsWith('/__')) requests.push({ method: req.method, path: url.pathname });
    if (req.method === 'POST' && url.pathname === '/oauth/token') {
      stats.token_requests++;
      const b = await readBody(req);
      if (b.grant_type !== 'client_credentials') return send(res, 400, { error: 'unsupported_grant_type', error_description: 'Unsupported grant type' });
      if (b.client_id !== cfg.client_id || b.client_secret !== cfg.client_secret) return send(res, 401, { error: 'access_denied', error_description: 'Unauthorized' });
      if (b.audience !== (cfg.audience ?? `${base}/api/v2/`)) return send(res, 403, { error: 'access_denied', error_description: `Service not enabled within domain: ${b.audience}` });
      const t = randomBytes(24).toString('base64url');
      const ttl = cfg.token_ttl ?? 86400;
      tokens.set(t, Date.now() + ttl * 1000);
      return send(res, 200, { access_token: t, token_type: 'Bearer', expires_in: ttl, scope: cfg.scope ?? `read:users ${tenant.scope}` });
    }
    if (req.method === 'GET' && url.pathname.startsWith('/api/v2/users/')) {
      stats.user_requests++;
      const auth = req.headers.authorization || '';
      const t = auth.startsWith('Bearer ') ? auth.slice(7) : '';
      if (!tokens.has(t) || tokens.get(t) < Date.now()) return send(res, 401, { statusCode: 401, error: 'Unauthorized', message: 'Invalid token' });
      if (stats.user_requests <= (cfg.rate_limit_first ?? 0)) {
        const ra = cfg.retry_after ?? 1;
        return send(res, 429, { statusCode: 429, error: 'Too Many Requests', message: 'Global limit has been reached' },
          { 'retry-after': String(ra), 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + ra) });
      }
      if (cfg.user_delay_ms) await new Promise((r) => setTimeout(r, cfg.user_delay_ms));
      const id = decodeURIComponent(url.pathname.slice('/api/v2/users/'.length));
      const u = (cfg.users || {})[id];
      if (!u) return send(res, 404, { statusCode: 404, error: 'Not Found', message: 'The user does not exist.', errorCode: 'inexistent_user' });
      return send(res, 200, { user_id: id, ...u });
    }
    if (await tenant.handle(req, res, url, { send, readBody, authorized })) return;
    if (req.method === 'GET' && url.pathname === '/__stats') return send(res, 200, stats);
    if (req.method === 'GET' && url.pathname === '/__requests') return send(res, 200, requests);
    send(res, 404, { statusCode: 404, error: 'Not Found', message: 'Not Found' });
  } catch (e) {
    send(res, 500, { statusCode: 500, error: 'Internal Server Error', message: String(e) });
  }
});

server.listen(cfg.port || 0, '127.0.0.1', () => {
  base = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`READY ${base}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
try { if (fstatSync(0).isFIFO()) { process.stdin.on('end', stop); process.stdin.resume(); } } catch { /* no stdin */ }
