"""An independent SAML 2.0 IdP for tests: writes a signed SAML Response built and signed by pysaml2
(its `saml2.saml`/`saml2.samlp` classes, signed by `saml2.sigver.SecurityContext` with the xmlsec1
backend). No flexgate code is involved, so `flexgate verify` is judged on a document it did not write.

    .peers/venv/bin/python tests/peers/make_response.py < params.json > response.xml

stdin, one JSON object (idp_entity_id, key_pem, cert_pem, sp_entity_id, acs_url, name_id are required):
  {"idp_entity_id": "https://idp.example.org/saml",
   "key_pem": "certs/test-other-key.pem", "cert_pem": "certs/test-other-cert.pem",   # paths
   "sp_entity_id": "urn:flex:JQ...", "acs_url": "https://login.flex.us1.twilio.com/login/callback?connection=JQ...",
   "in_response_to": "_abc" | null,           # null: IdP-initiated (no InResponseTo anywhere)
   "name_id": "agent1@example.com",
   "name_id_format": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
   "attributes": {"email": ["agent1@example.com"], "roles": ["agent", "supervisor"]},
   "sign": "response" | "assertion" | "both",  # default "response"
   "issue_instant": "2026-01-15T10:00:00Z",    # default: now (UTC, whole seconds)
   "not_before": "...",                        # default: issue_instant - 60 s
   "not_on_or_after": "...",                   # default: issue_instant + 300 s (Conditions and
                                               #   SubjectConfirmationData)
   "authn_instant": "...",                     # default: issue_instant
   "scd_not_before": "...",                    # default: none (SubjectConfirmationData/@NotBefore)
   "session_index": "_session-1",
   "response_id": "_r...", "assertion_id": "_a...",   # default: random
   "alg": "sha256" | "sha512" | "sha1"}        # RSA-SHAx signature and SHA-x digest; default sha256
stdout: the Response XML (UTF-8, with an XML declaration), exit 0. Bad input: a message on stderr, exit 2.
Batch: a JSON array of such objects on stdin gives a JSON array of XML strings on stdout (one Python
start-up for many responses).

Signatures: RSA-SHA256, SHA-256 digest (or as "alg" says), exclusive c14n, enveloped, the signer's certificate in KeyInfo,
the Signature right after the Issuer (pysaml2's element order). "both" signs the Assertion first, then the
Response around it.
"""
import datetime
import json
import secrets
import sys

try:
    from saml2 import saml, samlp, xmldsig
    from saml2.sigver import CryptoBackendXmlSec1, SecurityContext, get_xmlsec_binary, pre_signature_part
except ImportError as e:
    sys.stderr.write(f"pysaml2 not importable ({e}); run scripts/install-test-deps and use .peers/venv/bin/python\n")
    sys.exit(2)

EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(datetime.timezone.utc)


def fmt(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id():
    return "_" + secrets.token_hex(16)


def cert_body(pem_path):
    text = open(pem_path).read()
    return "".join(l for l in text.splitlines() if l and not l.startswith("-----"))


def build(p):
    issue = parse_time(p["issue_instant"]) if p.get("issue_instant") else \
        datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    not_before = p.get("not_before") or fmt(issue - datetime.timedelta(seconds=60))
    not_on_or_after = p.get("not_on_or_after") or fmt(issue + datetime.timedelta(seconds=300))
    authn_instant = p.get("authn_instant") or fmt(issue)
    irt = p.get("in_response_to")
    sign = p.get("sign", "response")
    if sign not in ("response", "assertion", "both"):
        raise ValueError(f"sign must be response, assertion or both, not {sign!r}")
    rid = p.get("response_id") or new_id()
    aid = p.get("assertion_id") or new_id()
    cert = cert_body(p["cert_pem"])
    algs = {"sha1": (xmldsig.SIG_RSA_SHA1, xmldsig.DIGEST_SHA1),
            "sha256": (xmldsig.SIG_RSA_SHA256, xmldsig.DIGEST_SHA256),
            "sha512": (xmldsig.SIG_RSA_SHA512, xmldsig.DIGEST_SHA512)}
    alg = p.get("alg", "sha256")
    if alg not in algs:
        raise ValueError(f"alg must be one of {sorted(algs)}, not {alg!r}")
    sig_args = dict(public_key=cert, sign_alg=algs[alg][0], digest_alg=algs[alg][1])

    scd = dict(recipient=p["acs_url"], not_on_or_after=not_on_or_after)
    if irt is not None:
        scd["in_response_to"] = irt
    if p.get("scd_not_before"):
        scd["not_before"] = p["scd_not_before"]
    attributes = [
        saml.Attribute(name=name, name_format=BASIC,
                       attribute_value=[saml.AttributeValue(text=v) for v in values])
        for name, values in p.get("attributes", {}).items()
    ]
    assertion = saml.Assertion(
        id=aid, version="2.0", issue_instant=fmt(issue),
        issuer=saml.Issuer(text=p["idp_entity_id"], format=saml.NAMEID_FORMAT_ENTITY),
        subject=saml.Subject(
            name_id=saml.NameID(text=p["name_id"], format=p.get("name_id_format", EMAIL)),
            subject_confirmation=[saml.SubjectConfirmation(
                method=BEARER, subject_confirmation_data=saml.SubjectConfirmationData(**scd))]),
        conditions=saml.Conditions(
            not_before=not_before, not_on_or_after=not_on_or_after,
            audience_restriction=[saml.AudienceRestriction(audience=[saml.Audience(text=p["sp_entity_id"])])]),
        authn_statement=[saml.AuthnStatement(
            authn_instant=authn_instant, session_index=p.get("session_index", "_session-1"),
            authn_context=saml.AuthnContext(authn_context_class_ref=saml.AuthnContextClassRef(text=PPT)))],
        attribute_statement=[saml.AttributeStatement(attribute=attributes)] if attributes else [],
    )
    if sign in ("assertion", "both"):
        assertion.signature = pre_signature_part(aid, **sig_args)
    resp_args = dict(
        id=rid, version="2.0", issue_instant=fmt(issue), destination=p["acs_url"],
        issuer=saml.Issuer(text=p["idp_entity_id"], format=saml.NAMEID_FORMAT_ENTITY),
        status=samlp.Status(status_code=samlp.StatusCode(value=SUCCESS)),
    )
    if irt is not None:
        resp_args["in_response_to"] = irt
    response = samlp.Response(**resp_args)
    if sign in ("response", "both"):
        response.signature = pre_signature_part(rid, **sig_args)

    sec = SecurityContext(CryptoBackendXmlSec1(get_xmlsec_binary()), key_file=p["key_pem"],
                          cert_file=p["cert_pem"])
    response.assertion = assertion
    xml = str(response)
    # Sign inside the whole document (as pysaml2's own signed_instance_factory does), the Assertion
    # first so that the Response signature covers the signed Assertion.
    if sign in ("assertion", "both"):
        xml = sec.sign_statement(xml, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion", node_id=aid)
    if sign in ("response", "both"):
        xml = sec.sign_statement(xml, "urn:oasis:names:tc:SAML:2.0:protocol:Response", node_id=rid)
    return xml


def main():
    try:
        params = json.loads(sys.stdin.read())
        batch = isinstance(params, list)
        results = []
        for one in (params if batch else [params]):
            for k in ("idp_entity_id", "key_pem", "cert_pem", "sp_entity_id", "acs_url"):
                if not one.get(k):
                    raise KeyError(k)
            xml = build(one)
            results.append(xml.decode("utf-8") if isinstance(xml, bytes) else xml)
    except (ValueError, KeyError, TypeError, OSError) as e:
        sys.stderr.write(f"make_response.py: bad input: {type(e).__name__}: {e}\n")
        sys.exit(2)
    sys.stdout.write(json.dumps(results) if batch else results[0])


if __name__ == "__main__":
    main()
