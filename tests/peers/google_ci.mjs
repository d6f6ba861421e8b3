// A stand-in for the two Google endpoints flexgate's Cloud Identity client calls, which cannot run here:
// Google's OAuth 2.0 token endpoint (JWT-bearer grant only) and Cloud Identity's
// groups.memberships.searchTransitiveGroups. Plain node, no dependencies.
//
// Shapes (Google docs: "Using OAuth 2.0 for Server to Server Applications"; Cloud Identity API v1 reference,
// groups.memberships/searchTransitiveGroups and GroupRelation; Cloud APIs "Errors" guide; RFC 7523, RFC 6749 §5.2):
//   POST /token   Content-Type: application/x-www-form-urlencoded
//        grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>
//     The JWT: header {"alg":"RS256","typ":"JWT"[, "kid"]}, claims {iss: service account email, scope, aud: this
//     endpoint's URL, iat, exp}, exp - iat ≤ 3600 s; signed RS256 with the service account's private key. Checked
//     here: the signature against the configured public key (node's crypto), iss, aud, scope, iat/exp.
//     -> 200 {"access_token","expires_in":3599,"token_type":"Bearer"}
//     -> 400 {"error":"invalid_grant","error_description":"Invalid JWT Signature."}          (wrong key)
//     -> 400 {"error":"invalid_grant","error_description":"Invalid grant: account not found"} (unknown iss)
//     -> 400 {"error":"invalid_grant","error_description":"Invalid JWT: Token must be a short-lived token (60 minutes)
//            and in a reasonable timeframe. Check your iat and exp values in the JWT claim."}
//     -> 400 {"error":"invalid_scope","error_description":"…"}, {"error":"unsupported_grant_type",…}
//   GET /v1/groups/-/memberships:searchTransitiveGroups?query=…&pageSize=…&pageToken=…   Authorization: Bearer
//     query: member_key_id == 'EMAIL' && 'cloudidentity.googleapis.com/groups.discussion_forum' in labels
//     -> 200 {"memberships":[GroupRelation…],"nextPageToken"?}, GroupRelation =
//            {"relationType":"DIRECT"|"INDIRECT","group":"groups/<id>","groupKey":{"id":"<group email>"},
//             "displayName","labels":{"cloudidentity.googleapis.com/groups.discussion_forum":""},
//             "roles":[{"role":"MEMBER"}]}
//     Errors: {"error":{"code","message","status"[, "details"]}}: 401 UNAUTHENTICATED, 400 INVALID_ARGUMENT,
//     403 PERMISSION_DENIED, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE.
//
//   node tests/peers/google_ci.mjs CONFIG.json  -> prints `READY http://127.0.0.1:PORT`, runs until stdin closes/SIGTERM
// CONFIG: {"port":0,
//          "client_email":"flexgate@proj.iam.gserviceaccount.com",
//          "public_key":"-----BEGIN PUBLIC KEY-----…",   // the service account's key that signatures must match
//          "memberships":{"ada@example.com":[{"id":"flex-agents@example.com","name":"Flex agents"}…]},
//          "page_size":200,          // the most this server puts on a page (the client's pageSize may ask less)
//          "expires_in":3599,        // the token answer's expires_in, as given (any JSON value)
//          "mode":null,              // "forbidden" | "service_disabled" | "rate_limited" | "unavailable" |
//                                    // "loop_token" (nextPageToken never changes) | "no_group_key"
//          "private_key_id":"…",     // when given, the JWT header's kid must name it
//          "revoke_after_searches":null, // after that many searches every token issued so far is revoked
//          "reject_tokens":false,    // answer every search with 401 (tokens never accepted)
//          "search_delay_ms":0, "token_delay_ms":0}
// GET /__stats -> {"token_requests","tokens_issued","token_refusals":[error_description…],"search_requests",
//                  "queries":[query…],"page_sizes":[…]}   (test-only, not a Google endpoint)
import { createServer } from 'node:http';
import { readFileSync, fstatSync } from 'node:fs';
import { createPublicKey, verify, randomBytes } from 'node:crypto';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const publicKey = createPublicKey(cfg.public_key);
const SCOPE = 'https://www.googleapis.com/auth/cloud-identity.groups.readonly';
const LABEL = 'cloudidentity.googleapis.com/groups.discussion_forum';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const tokens = new Map(); // token -> expiry (ms)
const stats = { token_requests: 0, tokens_issued: 0, token_refusals: [], search_requests: 0, queries: [], page_sizes: [] };
let base = '';

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', ...headers });
  res.end(JSON.stringify(body));
}
function googleError(res, code, status, message, details) {
  return send(res, code, { error: { code, message, status, ...(details ? { details } : {}) } });
}
function oauthError(res, error, description) {
  stats.token_refusals.push(description);
  return send(res, 400, { error, error_description: description });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

function b64json(part) {
  try { return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')); } catch { return null; }
}

async function token(req, res) {
  stats.token_requests++;
  if (cfg.token_delay_ms) await sleep(cfg.token_delay_ms);
  if (!(req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) {
    return oauthError(res, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
  }
  const form = new URLSearchParams(await readBody(req));
  if (form.get('grant_type') !== JWT_BEARER) return oauthError(res, 'unsupported_grant_type', 'Invalid grant_type: ' + form.get('grant_type'));
  const parts = (form.get('assertion') || '').split('.');
  if (parts.length !== 3) return oauthError(res, 'invalid_grant', 'Invalid JWT: not a JWS compact serialization');
  const [h, c, s] = parts;
  const header = b64json(h);
  const claims = b64json(c);
  if (!header || !claims) return oauthError(res, 'invalid_grant', 'Invalid JWT: unreadable header or claims');
  if (header.alg !== 'RS256') return oauthError(res, 'invalid_grant', 'Invalid JWT: alg must be RS256');
  if (cfg.private_key_id && header.kid !== cfg.private_key_id) return oauthError(res, 'invalid_grant', 'Invalid JWT Signature.');
  const ok = verify('RSA-SHA256', Buffer.from(`${h}.${c}`), publicKey, Buffer.from(s, 'base64url'));
  if (!ok) return oauthError(res, 'invalid_grant', 'Invalid JWT Signature.');
  if (claims.iss !== cfg.client_email) return oauthError(res, 'invalid_grant', 'Invalid grant: account not found');
  if (claims.aud !== `${base}/token`) return oauthError(res, 'invalid_grant', `Invalid JWT: audience ${JSON.stringify(claims.aud)} is not this token endpoint`);
  const scopes = String(claims.scope || '').split(' ');
  if (!scopes.includes(SCOPE)) return oauthError(res, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
  const now = Math.floor(Date.now() / 1000);
  const { iat, exp } = claims;
  if (!Number.isInteger(iat) || !Number.isInteger(exp) || exp - iat > 3600 || exp <= iat || iat > now + 60 || exp < now - 60) {
    return oauthError(res, 'invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
  }
  const t = 'ya29.' + randomBytes(24).toString('base64url');
  tokens.set(t, Date.now() + 3600 * 1000);
  stats.tokens_issued++;
  const expiresIn = 'expires_in' in cfg ? cfg.expires_in : 3599;
  return send(res, 200, { access_token: t, expires_in: expiresIn, token_type: 'Bearer' });
}

const QUERY = /^member_key_id == '([^'\\]*)' && '([^'\\]*)' in labels$/;

async function search(req, res, url) {
  stats.search_requests++;
  if (cfg.search_delay_ms) await sleep(cfg.search_delay_ms);
  if (cfg.revoke_after_searches != null && stats.search_requests === cfg.revoke_after_searches + 1) tokens.clear();
  const auth = req.headers.authorization || '';
  const exp = tokens.get(auth.startsWith('Bearer ') ? auth.slice(7) : '');
  if (!exp || exp < Date.now() || cfg.reject_tokens) {
    return googleError(res, 401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
  }
  switch (cfg.mode) {
    case 'forbidden':
      return googleError(res, 403, 'PERMISSION_DENIED', 'The caller does not have permission');
    case 'service_disabled':
      return googleError(res, 403, 'PERMISSION_DENIED', 'Cloud Identity API has not been used in project 123 before or it is disabled.', [
        { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'SERVICE_DISABLED', domain: 'googleapis.com', metadata: { service: 'cloudidentity.googleapis.com', consumer: 'projects/123' } },
      ]);
    case 'rate_limited':
      return send(res, 429, { error: { code: 429, message: "Quota exceeded for quota metric 'Read requests' of service 'cloudidentity.googleapis.com'.", status: 'RESOURCE_EXHAUSTED' } }, { 'retry-after': '30' });
    case 'unavailable':
      return googleError(res, 503, 'UNAVAILABLE', 'The service is currently unavailable.');
    default:
  }
  const query = url.searchParams.get('query') || '';
  stats.queries.push(query);
  const m = QUERY.exec(query);
  if (!m) return googleError(res, 400, 'INVALID_ARGUMENT', `Request contains an invalid argument: query ${JSON.stringify(query)}`);
  if (m[2] !== LABEL) return googleError(res, 400, 'INVALID_ARGUMENT', 'Request contains an invalid argument: unsupported label');
  const email = m[1];
  const asked = Number(url.searchParams.get('pageSize') || 200);
  if (!Number.isInteger(asked) || asked < 0) return googleError(res, 400, 'INVALID_ARGUMENT', 'Request contains an invalid argument: pageSize');
  stats.page_sizes.push(asked);
  const size = Math.max(1, Math.min(asked || 200, 1000, cfg.page_size ?? 1000));
  let offset = 0;
  const pt = url.searchParams.get('pageToken');
  if (pt) {
    const p = b64json(pt);
    if (!p || p.q !== query || !Number.isInteger(p.o)) return googleError(res, 400, 'INVALID_ARGUMENT', 'Request contains an invalid argument: page token');
    offset = p.o;
  }
  const all = (cfg.memberships || {})[email.toLowerCase()] || [];
  const page = all.slice(offset, offset + size).map((g, i) => cfg.mode === 'no_group_key'
    ? { group: `groups/${i}`, displayName: g.name }
    : {
      relationType: g.indirect ? 'INDIRECT' : 'DIRECT',
      group: `groups/${Buffer.from(g.id).toString('hex').slice(0, 15)}`,
      groupKey: { id: g.id },
      ...(g.name !== undefined ? { displayName: g.name } : {}),
      labels: { [LABEL]: '' },
      roles: [{ role: 'MEMBER' }],
    });
  const body = { memberships: page };
  if (cfg.mode === 'loop_token') body.nextPageToken = Buffer.from(JSON.stringify({ q: query, o: 0 })).toString('base64url');
  else if (offset + size < all.length) body.nextPageToken = Buffer.from(JSON.stringify({ q: query, o: offset + size })).toString('base64url');
  return send(res, 200, body);
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, base);
    if (req.method === 'POST' && url.pathname === '/token') return await token(req, res);
    if (req.method === 'GET' && url.pathname === '/v1/groups/-/memberships:searchTransitiveGroups') return await search(req, res, url);
    if (req.method === 'GET' && url.pathname === '/__stats') return send(res, 200, stats);
    googleError(res, 404, 'NOT_FOUND', `${req.method} ${url.pathname} not found`);
  } catch (e) {
    if (!res.headersSent) googleError(res, 500, 'INTERNAL', String(e));
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
