// Users and users-export jobs of the Auth0 Management API stand-in (see auth0_mgmt.mjs).
// Shapes from Auth0's Management API v2 reference and the official SDKs:
//   GET   /api/v2/users/{id}[?fields=a,b&include_fields=true]         -> 200 user | 404 inexistent_user
//         (node-auth0 src/management/__generated/managers/users-manager.ts `get`; go-auth0 management/user.go `Read`)
//   PATCH /api/v2/users/{id}  {"app_metadata":{…}}                      -> 200 user
//         app_metadata and user_metadata are merged at their TOP level only: each key given replaces the old
//         value whole (a nested object is not merged), a null deletes the key (Auth0 docs "Metadata Field Names
//         and Data Types" / "Update a user"; go-auth0 management/user.go `Update` notes the same).
//   GET   /api/v2/users-by-email?email=…[&fields=…&include_fields=true] -> 200 [user, …] (case-insensitive;
//         several accounts may share an email) (node-auth0 users-by-email-manager.ts `getByEmail`)
//   GET   /api/v2/users?q=…&search_engine=v3&page=P&per_page=N&include_totals=true[&fields=…]
//         -> 200 {"start","limit","length","total","users":[…]} (without include_totals: the bare array);
//         per_page ≤ 100; only the first 1000 results can be paged through: beyond → 400
//         "You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation"
//         (go-auth0 management/user.go `List` + `UserList`; Auth0 docs "User Search Query Syntax").
//         Queries understood here: `_exists_:app_metadata.flex.roles`, `email:"x"` (others → 400 invalid_query_string).
//         Test-only: `search_delay_ms` (after `search_delay_after` searches) answers each search that
//         long after reading the users, so a bulk read can span a change made meanwhile.
//   POST  /api/v2/jobs/users-exports {"format":"json","fields":[{"name":"user_id"},{"name":"app_metadata.x","export_as":"x"}]}
//         -> 201 {"id":"job_…","type":"users_export","status":"pending","format","fields","created_at"}
//   GET   /api/v2/jobs/{id} -> 200 {…, "status":"pending"|"processing"|"completed", "location": URL when completed}
//         The location is a pre-signed download of gzip NDJSON (format json), one user per line with the
//         requested fields (export_as names them) (node-auth0 jobs-manager.ts `exportUsers`; go-auth0
//         management/job.go `ExportUsers`; Auth0 docs "Bulk User Exports"). Like Auth0's (an S3 pre-signed
//         URL), the location carries its credential in the query: X-Amz-Credential and X-Amz-Signature.
// CONFIG keys used here (besides users, search_unavailable, rate_limit_first, retry_after, user_delay_ms,
// export_delay_ms): "export_signature" (the X-Amz-Signature value, default random, so a test can look for it),
// "export_status" (answer the download with this HTTP status instead, e.g. 403 for an expired signature),
// "export_claims_bytes" (a Content-Length header this large on the download: a file too big to take).
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';

const SEARCH_LIMIT = 1000;

function pick(user, fields, include) {
  if (!fields) return user;
  const names = fields.split(',').map((s) => s.trim());
  return Object.fromEntries(Object.entries(user).filter(([k]) => (include === 'false') !== names.includes(k)));
}

function at(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

export function routes(ctx) {
  const { cfg, stats, send, apiError } = ctx;
  const users = cfg.users || {};
  const full = (id) => ({ user_id: id, ...users[id] });
  const sorted = () => Object.keys(users).sort().map(full);
  const jobs = new Map();

  function matches(q) {
    if (q === '_exists_:app_metadata.flex.roles') return (u) => at(u, 'app_metadata.flex.roles') !== undefined;
    const m = /^email:"([^"]*)"$/.exec(q || '');
    if (m) return (u) => (u.email || '').toLowerCase() === m[1].toLowerCase();
    return null;
  }

  let searchFailures = cfg.search_unavailable ?? 0;
  // Test-only slowdown: after the first `search_delay_after` searches, each search reads the
  // users at once and answers `search_delay_ms` later (stats: slow_searches_begun / _done).
  let searches = 0;
  function search({ res, url }) {
    const p = url.searchParams;
    // Test-only fault: the first N searches fail as an Auth0 outage does (503, Auth0's error body).
    if (searchFailures > 0) {
      searchFailures -= 1;
      return apiError(res, 503, 'Service Unavailable', 'The service is temporarily unavailable');
    }
    if (p.get('search_engine') !== 'v3') return apiError(res, 400, 'Bad Request', 'Only search_engine=v3 is supported here', 'invalid_query_string');
    const filter = matches(p.get('q'));
    if (!filter) return apiError(res, 400, 'Bad Request', `Unsupported query: ${p.get('q')}`, 'invalid_query_string');
    const page = Number(p.get('page') || 0);
    const perPage = Number(p.get('per_page') || 50);
    if (perPage > 100) return apiError(res, 400, 'Bad Request', 'Query validation error: per_page must be at most 100', 'invalid_query_string');
    if ((page + 1) * perPage > SEARCH_LIMIT) {
      return apiError(res, 400, 'Bad Request', 'You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation', 'invalid_paging');
    }
    // The users as they are now, answered now or (test-only slowdown) later: a slow search
    // answers with what it read when it began, as a bulk read spanning a change does.
    const hits = sorted().filter(filter);
    const slice = hits.slice(page * perPage, (page + 1) * perPage).map((u) => structuredClone(pick(u, p.get('fields'), p.get('include_fields'))));
    const body = p.get('include_totals') !== 'true' ? slice
      : { start: page * perPage, limit: perPage, length: slice.length, total: Math.min(hits.length, SEARCH_LIMIT), users: slice };
    searches += 1;
    if (cfg.search_delay_ms && searches > (cfg.search_delay_after ?? 0)) {
      stats.slow_searches_begun = (stats.slow_searches_begun || 0) + 1;
      return new Promise((r) => setTimeout(r, cfg.search_delay_ms)).then(() => {
        stats.slow_searches_done = (stats.slow_searches_done || 0) + 1;
        return send(res, 200, body);
      });
    }
    return send(res, 200, body);
  }

  function getUser({ res, url, params: [id] }) {
    stats.user_requests++;
    if (stats.user_requests <= (cfg.rate_limit_first ?? 0)) {
      const ra = cfg.retry_after ?? 1;
      return send(res, 429, { statusCode: 429, error: 'Too Many Requests', message: 'Global limit has been reached' },
        { 'retry-after': String(ra), 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + ra) });
    }
    const answer = () => {
      if (!users[id]) return apiError(res, 404, 'Not Found', 'The user does not exist.', 'inexistent_user');
      return send(res, 200, pick(full(id), url.searchParams.get('fields'), url.searchParams.get('include_fields')));
    };
    if (cfg.user_delay_ms) return new Promise((r) => setTimeout(r, cfg.user_delay_ms)).then(answer);
    return answer();
  }

  function patchUser({ res, body, params: [id] }) {
    if (!users[id]) return apiError(res, 404, 'Not Found', 'The user does not exist.', 'inexistent_user');
    const u = users[id];
    for (const field of ['app_metadata', 'user_metadata']) {
      if (body[field] === undefined) continue;
      if (body[field] === null || typeof body[field] !== 'object' || Array.isArray(body[field])) {
        return apiError(res, 400, 'Bad Request', `Payload validation error: '${field}' must be an object`, 'invalid_body');
      }
      const merged = { ...(u[field] || {}) };
      for (const [k, v] of Object.entries(body[field])) {
        if (v === null) delete merged[k];
        else merged[k] = v; // top level only: a nested object replaces the old one whole
      }
      u[field] = merged;
    }
    u.updated_at = new Date().toISOString();
    return send(res, 200, full(id));
  }

  function byEmail({ res, url }) {
    const email = (url.searchParams.get('email') || '').toLowerCase();
    if (!email) return apiError(res, 400, 'Bad Request', "Query validation error: 'email' is required", 'invalid_query_string');
    const hits = sorted().filter((u) => (u.email || '').toLowerCase() === email);
    return send(res, 200, hits.map((u) => pick(u, url.searchParams.get('fields'), url.searchParams.get('include_fields'))));
  }

  function createExport({ res, body }) {
    if (body.format && !['json', 'csv'].includes(body.format)) return apiError(res, 400, 'Bad Request', 'format must be json or csv', 'invalid_body');
    const id = `job_${randomBytes(8).toString('hex')}`;
    const job = { id, type: 'users_export', status: 'pending', format: body.format || 'csv', fields: body.fields || [], created_at: new Date().toISOString(), connection_id: body.connection_id };
    jobs.set(id, { job, done: Date.now() + (cfg.export_delay_ms ?? 200) });
    return send(res, 201, job);
  }

  function getJob({ res, params: [id] }) {
    const j = jobs.get(id);
    if (!j) return apiError(res, 404, 'Not Found', 'The job does not exist.', 'inexistent_job');
    if (Date.now() < j.done) return send(res, 200, { ...j.job, status: 'processing', percentage_done: 50, time_left_seconds: 1 });
    const sig = cfg.export_signature ?? randomBytes(32).toString('hex');
    const query = `X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA${randomBytes(8).toString('hex').toUpperCase()}&X-Amz-Expires=60&X-Amz-Signature=${sig}`;
    return send(res, 200, { ...j.job, status: 'completed', location: `${ctx.base}/__exports/${id}.json.gz?${query}` });
  }

  function download({ res, params: [id] }) {
    const j = jobs.get(id);
    if (!j || Date.now() < j.done) return send(res, 404, { message: 'NoSuchKey' });
    if (cfg.export_status) return send(res, cfg.export_status, { message: 'AccessDenied: Request has expired' });
    if (cfg.export_claims_bytes) {
      res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': String(cfg.export_claims_bytes) });
      return res.end();
    }
    const lines = sorted().map((u) => {
      const row = {};
      for (const f of j.job.fields) {
        const v = at(u, f.name);
        if (v !== undefined) row[f.export_as || f.name] = v;
      }
      return JSON.stringify(row);
    });
    res.writeHead(200, { 'content-type': 'application/gzip' });
    res.end(gzipSync(lines.join('\n') + '\n'));
  }

  return [
    { method: 'GET', path: /^\/api\/v2\/users$/, name: 'search_users', scope: 'read:users', handler: search },
    { method: 'GET', path: /^\/api\/v2\/users\/([^/]+)$/, name: 'get_user', scope: 'read:users', handler: getUser },
    { method: 'PATCH', path: /^\/api\/v2\/users\/([^/]+)$/, name: 'patch_user', scope: 'update:users', handler: patchUser },
    { method: 'GET', path: /^\/api\/v2\/users-by-email$/, name: 'users_by_email', scope: 'read:users', handler: byEmail },
    { method: 'POST', path: /^\/api\/v2\/jobs\/users-exports$/, name: 'create_users_export', scope: 'read:users', handler: createExport },
    { method: 'GET', path: /^\/api\/v2\/jobs\/([^/]+)$/, name: 'get_job', scope: 'read:users', handler: getJob },
    { method: 'GET', path: /^\/__exports\/([^/]+)\.json\.gz$/, name: 'export_download', public: true, handler: download },
  ];
}
