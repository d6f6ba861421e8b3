// The tenant-configuration part of the Auth0 Management API stand-in (imported by auth0_mgmt.mjs):
// applications (clients), Actions and trigger bindings, as `flexgate init` uses them. Shapes follow
// Auth0's Management API v2 reference (auth0.com/docs/api/management/v2: "Get clients", "Create a client",
// "Update a client", "Get actions", "Create an action", "Update an action", "Deploy an action",
// "Get trigger bindings", "Update trigger bindings") and auth0/go-auth0 management/actions.go
// (Action, ActionVersion, ActionBinding{ref:{type,value},display_name}, statuses pending|building|packaged|
// built|retrying|failed) and management/client.go (Client, ClientList with start/limit/length/total).
//
//   GET   /api/v2/clients?fields=a,b&include_fields=true&page=N&per_page=M&include_totals=true
//         -> 200 {"start","limit","length","total","clients":[…]}   (without include_totals: a bare array)
//         `client_secret` only with the read:client_keys scope (else 403 insufficient_scope when asked for)
//   GET   /api/v2/clients/{id}                         -> 200 client | 404
//   POST  /api/v2/clients {name, app_type, callbacks, grant_types, token_endpoint_auth_method, …}
//         -> 201 client with a new client_id and client_secret
//   PATCH /api/v2/clients/{id} {…}                     -> 200 client (top-level keys replaced)
//   GET   /api/v2/actions/actions?actionName=&triggerId=&page=&per_page=
//         -> 200 {"actions":[…],"total","page","per_page"}
//   GET   /api/v2/actions/actions/{id}                 -> 200 action | 404
//   POST  /api/v2/actions/actions {name, supported_triggers:[{id,version}], code, runtime}
//         -> 201 action, status "pending"; it becomes "built" after cfg.build_ms (default 200)
//   PATCH /api/v2/actions/actions/{id} {code, runtime, …} -> 200 action, status "pending" again
//   POST  /api/v2/actions/actions/{id}/deploy          -> 200 ActionVersion {id, action_id, code, deployed,
//         number, status:"built"}; 400 while the action is not built (terraform-provider-auth0 waits for
//         "built" before deploying for this reason)
//   GET   /api/v2/actions/triggers/post-login/bindings?page=&per_page=
//         -> 200 {"bindings":[{id,trigger_id,display_name,action:{…}}],"total","page","per_page"}
//   PATCH /api/v2/actions/triggers/post-login/bindings {"bindings":[{"ref":{"type":"action_id"|"action_name",
//         "value"},"display_name"}]} -> 200 {"bindings":[…]}: REPLACES the whole list (what is left out is
//         unbound); a ref to an unknown or never-deployed action -> 400 and nothing changes.
// Errors: {"statusCode","error","message","errorCode"}; a missing scope -> 403 with
// "Insufficient scope, expected any of: SCOPE" and errorCode "insufficient_scope" (the shape go-auth0's
// management tests decode).
//
// CONFIG keys used here: "scope" (the tokens' scopes, space-separated; default: every scope below),
// "build_ms", "build_fails" (every build ends "failed"), "bindings_per_page_max" (default 50), "clients":[{…}], "actions":[{name, code, runtime,
// deployed}], "bindings":["action name", …] (bound in that order; their actions are created deployed),
// "edit_bindings_after_get": {"after": N, "add": "name"} (a colleague in the dashboard: right after the Nth
// GET of the bindings is answered, an Action of that name is created, deployed and bound last).
import { randomBytes, randomUUID } from 'node:crypto';

export const ALL_SCOPES = 'read:clients create:clients update:clients read:client_keys read:actions create:actions update:actions';

const now = () => new Date().toISOString();

function err(status, error, message, errorCode) {
  return { status, body: { statusCode: status, error, message, ...(errorCode ? { errorCode } : {}) } };
}
const notFound = (m) => err(404, 'Not Found', m, 'inexistent_resource');
const badRequest = (m) => err(400, 'Bad Request', m, 'invalid_body');

function pick(obj, fields, include) {
  if (!fields) return obj;
  const set = new Set(fields.split(','));
  return Object.fromEntries(Object.entries(obj).filter(([k]) => set.has(k) === include));
}

function page(list, q, max = 100) {
  const p = Number(q.get('page') || 0);
  const per = Math.min(Number(q.get('per_page') || 50), max);
  return { items: list.slice(p * per, p * per + per), page: p, per_page: per, total: list.length };
}

export function tenantRoutes(cfg) {
  const scopes = new Set((cfg.scope ?? ALL_SCOPES).split(' '));
  const buildMs = cfg.build_ms ?? 200;
  const clients = [];
  const actions = new Map();
  let bindings = [];

  function newClient(body) {
    const c = {
      client_id: randomBytes(16).toString('hex'), client_secret: randomBytes(32).toString('base64url'),
      name: body.name, app_type: body.app_type ?? 'regular_web', callbacks: body.callbacks ?? [],
      grant_types: body.grant_types ?? ['authorization_code', 'implicit', 'refresh_token', 'client_credentials'],
      token_endpoint_auth_method: body.token_endpoint_auth_method ?? 'client_secret_post',
      is_first_party: true, oidc_conformant: body.oidc_conformant ?? true,
    };
    clients.push(c);
    return c;
  }

  function startBuild(a) {
    a.status = 'pending';
    a.all_changes_deployed = false;
    const version = a.updated_at = now();
    setTimeout(() => { if (a.updated_at === version) a.status = cfg.build_fails ? 'failed' : 'built'; }, buildMs);
  }

  function newAction(body) {
    const a = {
      id: randomUUID(), name: body.name, supported_triggers: body.supported_triggers ?? [],
      code: body.code ?? '', runtime: body.runtime ?? 'node22', dependencies: body.dependencies ?? [],
      secrets: [], created_at: now(), deployed_version: undefined, versions: 0,
    };
    actions.set(a.id, a);
    startBuild(a);
    return a;
  }

  function deploy(a) {
    a.versions += 1;
    a.deployed_version = { id: randomUUID(), action_id: a.id, code: a.code, runtime: a.runtime, dependencies: a.dependencies,
      deployed: true, number: a.versions, status: 'built', created_at: now(), updated_at: now() };
    a.all_changes_deployed = true;
    return a.deployed_version;
  }

  const view = (a) => { const { versions, ...rest } = a; return rest; };
  const bindingView = (b) => ({ id: b.id, trigger_id: 'post-login', display_name: b.display_name, action: view(actions.get(b.action_id)),
    created_at: b.created_at, updated_at: b.updated_at });

  for (const c of cfg.clients ?? []) Object.assign(newClient(c), c);
  for (const spec of cfg.actions ?? []) {
    const a = newAction({ supported_triggers: [{ id: 'post-login', version: 'v3' }], ...spec });
    a.status = 'built';
    if (spec.deployed !== false) deploy(a);
  }
  function bindLast(name) {
    let a = [...actions.values()].find((x) => x.name === name);
    if (!a) { a = newAction({ name, supported_triggers: [{ id: 'post-login', version: 'v3' }], code: `// ${name}` }); a.status = 'built'; deploy(a); }
    bindings.push({ id: randomUUID(), action_id: a.id, display_name: name, created_at: now(), updated_at: now() });
  }
  for (const name of cfg.bindings ?? []) bindLast(name);
  let bindingGets = 0;

  function patchBindings(body) {
    if (!Array.isArray(body.bindings)) return badRequest('Payload validation error: bindings is required');
    const next = [];
    for (const b of body.bindings) {
      const ref = b.ref || {};
      const a = ref.type === 'action_id' ? actions.get(ref.value)
        : ref.type === 'action_name' ? [...actions.values()].find((x) => x.name === ref.value) : undefined;
      if (!a) return badRequest(`Action not found: ${ref.type}=${ref.value}`);
      if (!a.deployed_version) return badRequest(`The action ${a.name} has not been deployed; only deployed actions can be bound`);
      const old = bindings.find((x) => x.action_id === a.id);
      next.push({ id: old?.id ?? randomUUID(), action_id: a.id, display_name: b.display_name ?? a.name,
        created_at: old?.created_at ?? now(), updated_at: now() });
    }
    bindings = next;
    return { status: 200, body: { bindings: bindings.map(bindingView) } };
  }

  // [method, path regex, required scope, the query parameters the endpoint knows (any other -> 400, as
  // Auth0 validates queries), handler(match, query, body) -> {status, body}]
  const routes = [
    ['GET', /^\/api\/v2\/clients$/, 'read:clients', ['fields', 'include_fields', 'page', 'per_page', 'include_totals', 'from', 'take', 'is_global', 'is_first_party', 'app_type', 'q'], (m, q) => {
      const fields = q.get('fields');
      const include = q.get('include_fields') !== 'false';
      const wantsSecret = !fields ? true : fields.split(',').includes('client_secret') === include;
      if (fields && wantsSecret && !scopes.has('read:client_keys')) return err(403, 'Forbidden', 'Insufficient scope, expected any of: read:client_keys', 'insufficient_scope');
      const all = clients.map((c) => pick(scopes.has('read:client_keys') ? c : { ...c, client_secret: undefined }, fields, include));
      const pg = page(all, q);
      if (q.get('include_totals') !== 'true') return { status: 200, body: pg.items };
      return { status: 200, body: { start: pg.page * pg.per_page, limit: pg.per_page, length: pg.items.length, total: pg.total, clients: pg.items } };
    }],
    ['GET', /^\/api\/v2\/clients\/([^/]+)$/, 'read:clients', ['fields', 'include_fields'], (m, q) => {
      const c = clients.find((x) => x.client_id === m[1]);
      if (!c) return notFound('The client does not exist');
      const fields = q.get('fields');
      if (fields && fields.split(',').includes('client_secret') && !scopes.has('read:client_keys')) return err(403, 'Forbidden', 'Insufficient scope, expected any of: read:client_keys', 'insufficient_scope');
      return { status: 200, body: pick(c, fields, q.get('include_fields') !== 'false') };
    }],
    ['POST', /^\/api\/v2\/clients$/, 'create:clients', [], (m, q, body) => {
      if (!body.name) return badRequest('Payload validation error: Missing required property: name');
      return { status: 201, body: newClient(body) };
    }],
    ['PATCH', /^\/api\/v2\/clients\/([^/]+)$/, 'update:clients', [], (m, q, body) => {
      const c = clients.find((x) => x.client_id === m[1]);
      if (!c) return notFound('The client does not exist');
      Object.assign(c, body);
      return { status: 200, body: c };
    }],
    ['GET', /^\/api\/v2\/actions\/actions$/, 'read:actions', ['triggerId', 'actionName', 'deployed', 'page', 'per_page', 'installed'], (m, q) => {
      let list = [...actions.values()];
      if (q.get('actionName')) list = list.filter((a) => a.name === q.get('actionName'));
      if (q.get('triggerId')) list = list.filter((a) => a.supported_triggers.some((t) => t.id === q.get('triggerId')));
      const pg = page(list.map(view), q);
      return { status: 200, body: { actions: pg.items, total: pg.total, page: pg.page, per_page: pg.per_page } };
    }],
    ['GET', /^\/api\/v2\/actions\/actions\/([^/]+)$/, 'read:actions', [], (m) => {
      const a = actions.get(m[1]);
      return a ? { status: 200, body: view(a) } : notFound('The action does not exist');
    }],
    ['POST', /^\/api\/v2\/actions\/actions$/, 'create:actions', [], (m, q, body) => {
      if (!body.name || !Array.isArray(body.supported_triggers)) return badRequest('Payload validation error: name and supported_triggers are required');
      if ([...actions.values()].some((a) => a.name === body.name)) return err(409, 'Conflict', `An action named ${body.name} already exists`, 'already_exists');
      return { status: 201, body: view(newAction(body)) };
    }],
    ['PATCH', /^\/api\/v2\/actions\/actions\/([^/]+)$/, 'update:actions', [], (m, q, body) => {
      const a = actions.get(m[1]);
      if (!a) return notFound('The action does not exist');
      for (const k of ['name', 'code', 'runtime', 'dependencies', 'supported_triggers']) if (k in body) a[k] = body[k];
      startBuild(a);
      return { status: 200, body: view(a) };
    }],
    ['POST', /^\/api\/v2\/actions\/actions\/([^/]+)\/deploy$/, 'create:actions', [], (m) => {
      const a = actions.get(m[1]);
      if (!a) return notFound('The action does not exist');
      if (a.status !== 'built') return badRequest(`The action cannot be deployed: its build status is ${a.status}, not built`);
      return { status: 200, body: deploy(a) };
    }],
    ['GET', /^\/api\/v2\/actions\/triggers\/post-login\/bindings$/, 'read:actions', ['page', 'per_page'], (m, q) => {
      const pg = page(bindings.map(bindingView), q, cfg.bindings_per_page_max ?? 50);
      bindingGets += 1;
      const edit = cfg.edit_bindings_after_get;
      if (edit && bindingGets === edit.after) bindLast(edit.add);
      return { status: 200, body: { bindings: pg.items, total: pg.total, page: pg.page, per_page: pg.per_page } };
    }],
    ['PATCH', /^\/api\/v2\/actions\/triggers\/post-login\/bindings$/, 'update:actions', [], (m, q, body) => patchBindings(body)],
  ];

  // Returns false when no route matches (the caller answers 404). `authorized(req)` checks the bearer token.
  async function handle(req, res, url, { send, readBody, authorized }) {
    for (const [method, re, scope, params, fn] of routes) {
      const m = url.pathname.match(re);
      if (!m || req.method !== method) continue;
      if (!authorized(req)) { send(res, 401, { statusCode: 401, error: 'Unauthorized', message: 'Invalid token' }); return true; }
      if (!scopes.has(scope)) {
        const e = err(403, 'Forbidden', `Insufficient scope, expected any of: ${scope}`, 'insufficient_scope');
        send(res, e.status, e.body);
        return true;
      }
      const unknown = [...url.searchParams.keys()].filter((k) => !params.includes(k));
      if (unknown.length) {
        send(res, 400, { statusCode: 400, error: 'Bad Request', message: `Query validation error: 'Additional properties not allowed: ${unknown.join(',')}'`, errorCode: 'invalid_query_string' });
        return true;
      }
      const body = method === 'GET' ? {} : await readBody(req);
      const r = fn(m, url.searchParams, body);
      send(res, r.status, r.body);
      return true;
    }
    return false;
  }

  return { handle, scope: [...scopes].join(' ') };
}
