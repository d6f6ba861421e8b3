// Signed AuthnRequests made by @node-saml/node-saml 5 (an SP library nobody here wrote), for
// flexgate's signed-request tests.
//   node tests/peers/make_request.mjs < {"entry_point": "<flexgate SSO URL>", "issuer": "<SP entity id>",
//        "callback_url": "<ACS>", "private_key_pem": "...", "binding": "redirect"|"post",
//        "relay_state": "...", "signature_algorithm": "sha256"|"sha1"|"sha512"}
// stdout: {"id": "<AuthnRequest ID>", "url": "<redirect URL>"}                      (redirect)
//      or {"id": "<AuthnRequest ID>", "saml_request": "<base64>", "relay_state": "..."} (post)
import { SAML } from '@node-saml/node-saml';
import { readFileSync } from 'node:fs';
import { inflateRawSync } from 'node:zlib';

const p = JSON.parse(readFileSync(0, 'utf8'));
const saml = new SAML({
  entryPoint: p.entry_point,
  issuer: p.issuer,
  callbackUrl: p.callback_url,
  idpCert: 'unused-for-requests',
  privateKey: p.private_key_pem,
  signatureAlgorithm: p.signature_algorithm || 'sha256',
  digestAlgorithm: p.signature_algorithm === 'sha1' ? 'sha1' : 'sha256',
  authnRequestBinding: p.binding === 'post' ? 'HTTP-POST' : 'HTTP-Redirect',
  identifierFormat: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  wantAuthnResponseSigned: false,
});
const idOf = (xml) => /ID="([^"]+)"/.exec(xml)[1];
if (p.binding === 'post') {
  const html = await saml.getAuthorizeFormAsync(p.relay_state || '', undefined, {});
  const field = (name) => {
    const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
    return m ? m[1].replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&') : null;
  };
  // node-saml DEFLATEs the SAMLRequest even for HTTP-POST (SAMLBind says base64 only).
  const req = field('SAMLRequest');
  const raw = Buffer.from(req, 'base64');
  const xml = raw.toString('utf8').trimStart().startsWith('<') ? raw.toString('utf8') : inflateRawSync(raw).toString('utf8');
  process.stdout.write(JSON.stringify({ id: idOf(xml), saml_request: req, relay_state: field('RelayState') }) + '\n');
} else {
  const url = await saml.getAuthorizeUrlAsync(p.relay_state || '', undefined, {});
  const req = new URL(url).searchParams.get('SAMLRequest');
  const xml = inflateRawSync(Buffer.from(req, 'base64')).toString('utf8');
  process.stdout.write(JSON.stringify({ id: idOf(xml), url }) + '\n');
}
