// Validate a SAML Response the way a @node-saml/node-saml 5 service provider (passport-saml's core) would.
//
//   node tests/peers/validate_node.mjs < request.json
//
// stdin: the same JSON object as validate_py.py:
//   {"saml_response": "<base64>", "idp_cert_pem": "...", "idp_entity_id": "...", "sp_entity_id": "<audience>",
//    "acs_url": "<full ACS URL>", "request_id": "<id>" | null, "want_messages_signed": true,
//    "want_assertions_signed": false, "now": "2026-01-01T00:00:00Z" | null}
// stdout, one JSON line:
//   ok:   {"ok": true, "profile": {issuer, nameID, nameIDFormat, sessionIndex, inResponseTo, ...},
//          "attributes": {name: [values]}}                                   exit 0
//   fail: {"ok": false, "error": "<message>"}                                exit 1   (bad input: exit 2)
//
// node-saml options used: callbackUrl=acs_url, issuer=audience=sp_entity_id, idpCert (the ONLY trusted cert;
// node-saml never uses a certificate from the document), idpIssuer=idp_entity_id,
// wantAuthnResponseSigned=want_messages_signed, wantAssertionsSigned=want_assertions_signed,
// acceptedClockSkewMs 0 (its default).
// InResponseTo: node-saml checks Response/@InResponseTo against its cacheProvider.
//   request_id given -> validateInResponseTo "always", the cache seeded with request_id: the Response MUST carry
//                       InResponseTo == request_id (and a SubjectConfirmationData InResponseTo must match too).
//   request_id null  -> validateInResponseTo "ifPresent" with an EMPTY cache: an absent InResponseTo passes,
//                       a present one is looked up, not found, and rejected ("InResponseTo is not valid"). That
//                       is exactly "IdP-initiated: InResponseTo must be absent"; "never" would accept anything.
// node-saml 5 does not check Destination or Recipient at all, checks idpIssuer on LOGOUT messages only, and
// skips SubjectConfirmationData/@InResponseTo when the Response has none. So after node-saml accepted the
// response these are checked here: Response/@Destination and a bearer SubjectConfirmationData/@Recipient equal
// acs_url exactly; Response/Issuer (if any) and Assertion/Issuer equal idp_entity_id; with request_id null no
// SubjectConfirmationData carries InResponseTo.
// `now` fakes the clock (Date) for node-saml's time checks.
import { readFileSync } from 'node:fs';
import { SAML, ValidateInResponseTo } from '@node-saml/node-saml';
import { DOMParser } from '@xmldom/xmldom';
import xpath from 'xpath';

const out = (obj, code) => { process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code)); };
const fail = (error, code = 1) => out({ ok: false, error }, code);

let req;
try {
  req = JSON.parse(readFileSync(0, 'utf8'));
  for (const k of ['saml_response', 'idp_cert_pem', 'idp_entity_id', 'sp_entity_id', 'acs_url']) {
    if (typeof req[k] !== 'string') throw new Error(`missing string field ${k}`);
  }
  if (req.now) {
    const fixed = Date.parse(req.now);
    if (Number.isNaN(fixed)) throw new Error(`bad now: ${req.now}`);
    const RealDate = Date;
    globalThis.Date = class extends RealDate {
      constructor(...a) { if (a.length) super(...a); else super(fixed); }
      static now() { return fixed; }
    };
  }
} catch (e) {
  fail(`bad input: ${e.message}`, 2);
}

if (req) {
  try {
    const requestId = req.request_id ?? null;
    const cache = new Map();
    if (requestId !== null) cache.set(String(requestId), new Date().toISOString());
    const cacheProvider = {
      async saveAsync(key, value) { cache.set(key, value); return { createdAt: Date.now(), value }; },
      async getAsync(key) { return cache.get(key) ?? null; },
      async removeAsync(key) { const v = cache.get(key) ?? null; cache.delete(key); return v; },
    };
    const saml = new SAML({
      callbackUrl: req.acs_url,
      issuer: req.sp_entity_id,
      audience: req.sp_entity_id,
      idpCert: req.idp_cert_pem,
      idpIssuer: req.idp_entity_id,
      wantAuthnResponseSigned: req.want_messages_signed ?? true,
      wantAssertionsSigned: req.want_assertions_signed ?? false,
      validateInResponseTo: requestId !== null ? ValidateInResponseTo.always : ValidateInResponseTo.ifPresent,
      cacheProvider,
    });
    const { profile, loggedOut } = await saml.validatePostResponseAsync({ SAMLResponse: req.saml_response });
    if (loggedOut || !profile) throw new Error('not a login response');

    // Checks node-saml does not make (see above).
    const doc = new DOMParser().parseFromString(Buffer.from(req.saml_response, 'base64').toString('utf8'), 'text/xml');
    const destination = doc.documentElement.getAttribute('Destination');
    if (destination !== req.acs_url) throw new Error(`Destination ${JSON.stringify(destination)} is not exactly ${JSON.stringify(req.acs_url)}`);
    const issuers = xpath.select("/*[local-name()='Response']/*[local-name()='Issuer']"
      + " | /*[local-name()='Response']/*[local-name()='Assertion']/*[local-name()='Issuer']", doc);
    if (issuers.length < 1) throw new Error('no Issuer');
    for (const i of issuers) {
      const got = i.textContent;
      if (got !== req.idp_entity_id) throw new Error(`wrong Issuer: expected ${req.idp_entity_id}, got ${got}`);
    }
    const scds = xpath.select("/*[local-name()='Response']/*[local-name()='Assertion']/*[local-name()='Subject']"
      + "/*[local-name()='SubjectConfirmation'][@Method='urn:oasis:names:tc:SAML:2.0:cm:bearer']"
      + "/*[local-name()='SubjectConfirmationData']", doc);
    if (!scds.some((n) => n.getAttribute('Recipient') === req.acs_url)) {
      throw new Error(`no bearer SubjectConfirmationData with Recipient exactly ${JSON.stringify(req.acs_url)}`);
    }
    if (requestId === null && scds.some((n) => n.hasAttribute('InResponseTo'))) {
      throw new Error('IdP-initiated (request_id null) but SubjectConfirmationData carries InResponseTo');
    }

    const attributes = {};
    for (const [name, v] of Object.entries(profile.attributes || {})) attributes[name] = Array.isArray(v) ? v : [v];
    const plain = {};
    for (const [k, v] of Object.entries(profile)) if (typeof v !== 'function' && k !== 'attributes') plain[k] = v;
    out({ ok: true, profile: plain, attributes }, 0);
  } catch (e) {
    fail(e.message || String(e));
  }
}
