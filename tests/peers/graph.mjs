// A stand-in for the two Microsoft cloud APIs flexgate's groups-overage lookup calls, which cannot run here:
// the Microsoft identity platform's v2.0 token endpoint (client-credentials grant) and Microsoft Graph v1.0
// `transitiveMemberOf`. Written from Microsoft's documented shapes:
//
// Token ("Microsoft identity platform and the OAuth 2.0 client credentials flow", "Microsoft Entra
// authentication and authorization error codes"):
//   POST /{tenant}/oauth2/v2.0/token   Content-Type: application/x-www-form-urlencoded
//        client_id, client_secret, grant_type=client_credentials, scope=https://graph.microsoft.com/.default
//     -> 200 {"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"…"}
//     -> 401 {"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. …",
//             "error_codes":[7000215],"timestamp","trace_id","correlation_id","error_uri"}
//     -> 400 unauthorized_client (AADSTS700016, unknown application), invalid_scope (AADSTS1002012),
//            unsupported_grant_type (AADSTS70003), invalid_request (AADSTS900144: a missing field,
//            or a body that is not a form)
// Graph ("List a user's memberships (direct and transitive)", "Microsoft Graph error responses and resource
// types", "Microsoft Graph throttling guidance", "Paging Microsoft Graph data in your app"):
//   GET /v1.0/users/{id}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$top=N&$count=true  (N ≤ 999)
//     Authorization: Bearer {token}
//     ConsistencyLevel: eventual   (the OData cast is an advanced query: "Advanced query capabilities on Microsoft
//                                   Entra ID objects"; without the header and $count=true -> 400 Request_UnsupportedQuery)
//     -> 200 {"@odata.context":"…/v1.0/$metadata#groups(id,displayName)","@odata.count":n,"value":[{"id","displayName"}…],
//             "@odata.nextLink":"{graph}/v1.0/users/{id}/transitiveMemberOf/microsoft.graph.group?…&$skiptoken=…"}
//     -> 401 {"error":{"code":"InvalidAuthenticationToken","message":"Access token is empty."|"…validation failure…",
//             "innerError":{"date","request-id","client-request-id"}}}
//     -> 403 {"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.",…}}
//     -> 404 {"error":{"code":"Request_ResourceNotFound","message":"Resource '{id}' does not exist or one of its
//             queried reference-property objects are not present.",…}}
//     -> 429 {"error":{"code":"TooManyRequests","message":"Too many requests."…}} with Retry-After (seconds)
//     -> 503 {"error":{"code":"serviceNotAvailable",…}} with Retry-After
//
//   node tests/peers/graph.mjs CONFIG.json  -> prints `READY http://127.0.0.1:PORT`, runs until stdin closes/SIGTERM
// CONFIG: {"port":0, "tenant":"contoso", "client_id":"app", "client_secret":"s",
//          "token_ttl":3600,             // how long issued tokens are accepted
//          "token_expires_in": 3599,     // the token answer's expires_in, as given (any JSON value); default token_ttl-1
//          "page_size": 999,             // the most groups per page (also bounded by $top)
//          "users": {"{oid}": {"groups":[{"id","displayName"}…]} | {"generate": N}, "page_size": n},
//          "forbidden": false,           // answer every Graph call 403 Authorization_RequestDenied
//          "throttle_first": 0,          // answer the first N Graph calls with throttle_status and Retry-After
//          "throttle_status": 429, "retry_after": 1,   // retry_after null: no Retry-After header
//          "graph_delay_ms": 0, "token_delay_ms": 0,   // slow answers
//          "next_link_base": null,       // write nextLinks on this base instead of this server (foreign origin)
//          "garbage": false,             // answer Graph calls 200 with a body that is not JSON
//          "reject_tokens": false}       // answer every Graph call 401 InvalidAuthenticationToken (e.g. another cloud's token)
// GET /__stats -> {"token_requests","graph_requests","throttled","unsupported_query","last_top","last_select"}
// (test-only, not Microsoft's)
import { createServer } from 'node:http';
import { readFileSync, fstatSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const tenant = cfg.tenant ?? 'contoso';
const tokens = new Map(); // token -> expiry (ms)
const stats = { token_requests: 0, graph_requests: 0, throttled: 0, unsupported_query: 0, last_top: null, last_select: null };
let base = '';

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function entraError(res, status, error, code, description) {
  const trace = randomUUID();
  const correlation = randomUUID();
  const ts = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return send(res, status, {
    error,
    error_description: `AADSTS${code}: ${description}\r\nTrace ID: ${trace}\r\nCorrelation ID: ${correlation}\r\nTimestamp: ${ts}`,
    error_codes: [code],
    timestamp: ts,
    trace_id: trace,
    correlation_id: correlation,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  });
}

function graphError(res, status, code, message, headers = {}) {
  return send(res, status, {
    error: {
      code,
      message,
      innerError: { date: new Date().toISOString().replace(/\.\d+Z$/, ''), 'request-id': randomUUID(), 'client-request-id': randomUUID() },
    },
  }, headers);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

async function token(req, res) {
  stats.token_requests++;
  const raw = await readBody(req);
  if (cfg.token_delay_ms) await sleep(cfg.token_delay_ms);
  if (!(req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) {
    return entraError(res, 400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'.");
  }
  const b = Object.fromEntries(new URLSearchParams(raw));
  for (const k of ['client_id', 'grant_type', 'scope', 'client_secret']) {
    if (!b[k]) return entraError(res, 400, 'invalid_request', 900144, `The request body must contain the following parameter: '${k}'.`);
  }
  if (b.grant_type !== 'client_credentials') return entraError(res, 400, 'unsupported_grant_type', 70003, 'The app requested an unsupported grant type.');
  if (b.client_id !== cfg.client_id) {
    return entraError(res, 400, 'unauthorized_client', 700016, `Application with identifier '${b.client_id}' was not found in the directory '${tenant}'.`);
  }
  if (b.client_secret !== cfg.client_secret) {
    return entraError(res, 401, 'invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${cfg.client_id}'.`);
  }
  if (b.scope !== 'https://graph.microsoft.com/.default') {
    return entraError(res, 400, 'invalid_scope', 1002012, `The provided value for scope ${b.scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
  }
  const ttl = cfg.token_ttl ?? 3600;
  const t = 'eyJ0eXAiOiJKV1QifQ.' + randomBytes(32).toString('base64url');
  tokens.set(t, Date.now() + ttl * 1000);
  const expiresIn = 'token_expires_in' in cfg ? cfg.token_expires_in : ttl - 1;
  return send(res, 200, { token_type: 'Bearer', expires_in: expiresIn, ext_expires_in: expiresIn, access_token: t });
}

function groupsOf(user) {
  if (Array.isArray(user.groups)) return user.groups;
  const n = user.generate ?? 0;
  const out = [];
  for (let i = 0; i < n; i++) {
    const hex = i.toString(16).padStart(12, '0');
    out.push({ id: `00000000-0000-4000-8000-${hex}`, displayName: `Group ${i}` });
  }
  return out;
}

async function transitiveMemberOf(req, res, url, oid) {
  stats.graph_requests++;
  if (cfg.graph_delay_ms) await sleep(cfg.graph_delay_ms);
  const auth = req.headers.authorization || '';
  if (!auth.startsWith('Bearer ')) return graphError(res, 401, 'InvalidAuthenticationToken', 'Access token is empty.');
  const exp = tokens.get(auth.slice(7));
  if (!exp) return graphError(res, 401, 'InvalidAuthenticationToken', 'Access token validation failure. Invalid audience.');
  if (exp < Date.now()) return graphError(res, 401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.');
  if (cfg.reject_tokens) return graphError(res, 401, 'InvalidAuthenticationToken', 'Access token validation failure. Invalid audience.');
  if (stats.throttled < (cfg.throttle_first ?? 0)) {
    stats.throttled++;
    const status = cfg.throttle_status ?? 429;
    const ra = cfg.retry_after === undefined ? 1 : cfg.retry_after;
    const headers = ra === null ? {} : { 'retry-after': String(ra) };
    return status === 429
      ? graphError(res, 429, 'TooManyRequests', 'Too many requests.', headers)
      : graphError(res, status, 'serviceNotAvailable', 'Service is temporarily unavailable.', headers);
  }
  if (cfg.forbidden) return graphError(res, 403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.');
  const user = (cfg.users || {})[oid];
  if (!user) {
    return graphError(res, 404, 'Request_ResourceNotFound', `Resource '${oid}' does not exist or one of its queried reference-property objects are not present.`);
  }
  const q = url.searchParams;
  const top = q.has('$top') ? Number(q.get('$top')) : 100;
  if (!Number.isInteger(top) || top < 1 || top > 999) {
    return graphError(res, 400, 'Request_UnsupportedQuery', `Invalid page size specified: '${q.get('$top')}'. Must be between 1 and 999 inclusive.`);
  }
  if (req.headers.consistencylevel !== 'eventual' || q.get('$count') !== 'true') {
    stats.unsupported_query++;
    return graphError(res, 400, 'Request_UnsupportedQuery', "The OData cast on transitiveMemberOf is an advanced query: it needs the header 'ConsistencyLevel: eventual' and $count=true.");
  }
  stats.last_top = top;
  stats.last_select = q.get('$select');
  if (cfg.garbage) return send(res, 200, '<html><body>Sign in to your proxy</body></html>', { 'content-type': 'text/html' });
  const all = groupsOf(user);
  const size = Math.min(top, user.page_size ?? cfg.page_size ?? 999);
  const skip = q.has('$skiptoken') ? Number(Buffer.from(q.get('$skiptoken'), 'base64url').toString('utf8')) : 0;
  const select = (q.get('$select') || '').split(',').filter(Boolean);
  const pick = (g) => (select.length ? Object.fromEntries(select.filter((k) => k in g).map((k) => [k, g[k]])) : { '@odata.type': '#microsoft.graph.group', ...g });
  const body = {
    '@odata.context': `${base}/v1.0/$metadata#groups(${select.join(',')})`,
    '@odata.count': all.length,
    value: all.slice(skip, skip + size).map(pick),
  };
  if (skip + size < all.length) {
    const next = new URL(`${cfg.next_link_base ?? base}/v1.0/users/${oid}/transitiveMemberOf/microsoft.graph.group`);
    for (const [k, v] of q) if (k !== '$skiptoken') next.searchParams.set(k, v);
    next.searchParams.set('$skiptoken', Buffer.from(String(skip + size)).toString('base64url'));
    body['@odata.nextLink'] = next.toString().replace(/%24/g, '$').replace(/%2C/g, ',');
  }
  return send(res, 200, body);
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, base);
    if (req.method === 'GET' && url.pathname === '/__stats') return send(res, 200, stats);
    if (req.method === 'POST' && url.pathname === `/${tenant}/oauth2/v2.0/token`) return await token(req, res);
    const m = url.pathname.match(/^\/v1\.0\/users\/([^/]+)\/transitiveMemberOf\/microsoft\.graph\.group$/);
    if (req.method === 'GET' && m) return await transitiveMemberOf(req, res, url, decodeURIComponent(m[1]));
    return graphError(res, 400, 'BadRequest', `Resource not found for the segment '${url.pathname.split('/').pop()}'.`);
  } catch (e) {
    if (!res.headersSent) graphError(res, 500, 'generalException', String(e));
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
