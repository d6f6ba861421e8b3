"""Validate a SAML Response the way a python3-saml (OneLogin) service provider in STRICT mode would.

    .peers/venv/bin/python tests/peers/validate_py.py < request.json

stdin, one JSON object:
  {"saml_response": "<base64>", "idp_cert_pem": "-----BEGIN CERTIFICATE-----...", "idp_entity_id": "...",
   "sp_entity_id": "<audience>", "acs_url": "<full ACS URL, query allowed>", "request_id": "<id>" | null,
   "want_messages_signed": true, "want_assertions_signed": false, "now": "2026-01-01T00:00:00Z" | null}
stdout, one JSON line:
  ok:   {"ok": true, "nameid", "nameid_format", "session_index", "attributes": {name: [values]},
         "issuers": [...], "audiences": [...], "in_response_to", "destination"}        exit 0
  fail: {"ok": false, "error": "<message>", "reason": "<OneLogin error constant or one of ours>"}   exit 1
  bad input (not JSON, missing key): {"ok": false, "error": ..., "reason": "BAD_INPUT"}           exit 2

Only `idp_cert_pem` is trusted; a certificate inside the response is never used (python3-saml verifies with
the settings' x509cert). The "current URL" python3-saml compares with is scheme://host[:port]/path of acs_url.
python3-saml alone is lenient where flexgate's contract is not, so these are checked on top, after it passed:
  DESTINATION_NOT_EXACT  Response/@Destination must equal acs_url exactly (python3-saml: startswith, no query)
  RECIPIENT_NOT_EXACT    a bearer SubjectConfirmationData/@Recipient must equal acs_url (python3-saml: substring)
  MISSING_IN_RESPONSE_TO request_id given but Response has no InResponseTo (python3-saml accepts that)
  UNEXPECTED_IN_RESPONSE_TO request_id null (IdP-initiated) but Response or SubjectConfirmationData has one
"""
import calendar
import datetime
import json
import sys
from urllib.parse import urlsplit


def out(obj, code):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def fail(error, reason, code=1):
    out({"ok": False, "error": error, "reason": reason}, code)


try:
    from onelogin.saml2.errors import OneLogin_Saml2_ValidationError
    from onelogin.saml2.response import OneLogin_Saml2_Response
    from onelogin.saml2.settings import OneLogin_Saml2_Settings
    from onelogin.saml2.utils import OneLogin_Saml2_Utils
except ImportError as e:  # wrong interpreter: say so loudly
    fail(f"python3-saml not importable ({e}); run scripts/install-test-deps and use .peers/venv/bin/python",
         "BAD_INPUT", 2)

REASONS = {v: k for k, v in vars(OneLogin_Saml2_ValidationError).items() if k.isupper() and isinstance(v, int)}


def main():
    try:
        req = json.loads(sys.stdin.read())
        b64 = req["saml_response"]
        cert = req["idp_cert_pem"]
        idp_entity_id = req["idp_entity_id"]
        sp_entity_id = req["sp_entity_id"]
        acs_url = req["acs_url"]
        request_id = req.get("request_id")
        now = req.get("now")
        acs = urlsplit(acs_url)
        if acs.scheme not in ("http", "https") or not acs.netloc:
            raise ValueError(f"acs_url is not an absolute http(s) URL: {acs_url!r}")
        if now:
            ts = calendar.timegm(datetime.datetime.fromisoformat(now.replace("Z", "+00:00")).utctimetuple())
            OneLogin_Saml2_Utils.now = staticmethod(lambda: ts)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        fail(f"bad input: {type(e).__name__}: {e}", "BAD_INPUT", 2)

    settings = OneLogin_Saml2_Settings({
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": sp_entity_id,
            "assertionConsumerService": {"url": acs_url,
                                         "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
            "NameIDFormat": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        },
        "idp": {
            "entityId": idp_entity_id,
            "singleSignOnService": {"url": "https://idp.invalid/sso",
                                    "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
            "x509cert": cert,
        },
        "security": {
            "wantMessagesSigned": bool(req.get("want_messages_signed", True)),
            "wantAssertionsSigned": bool(req.get("want_assertions_signed", False)),
            "wantAssertionsEncrypted": False,
            "wantNameId": True,
            "wantAttributeStatement": True,
            "rejectDeprecatedAlgorithm": True,
            "requestedAuthnContext": False,
        },
    })
    request_data = {
        "https": "on" if acs.scheme == "https" else "off",
        "http_host": acs.netloc,
        "script_name": acs.path,
        "get_data": {},
        "post_data": {"SAMLResponse": b64},
    }
    try:
        resp = OneLogin_Saml2_Response(settings, b64)
        resp.is_valid(request_data, request_id, raise_exceptions=True)
    except OneLogin_Saml2_ValidationError as e:
        fail(str(e), REASONS.get(e.code, str(e.code)))
    except Exception as e:  # undecodable base64, broken XML, xmlsec errors, ...
        fail(f"{type(e).__name__}: {e}", "EXCEPTION")

    # Stricter checks (see docstring). The document's signature has been verified at this point.
    destination = resp.document.get("Destination")
    if destination != acs_url:
        fail(f"Destination {destination!r} is not exactly {acs_url!r}", "DESTINATION_NOT_EXACT")
    scds = resp._query_assertion(
        "/saml:Subject/saml:SubjectConfirmation[@Method='urn:oasis:names:tc:SAML:2.0:cm:bearer']"
        "/saml:SubjectConfirmationData")
    if not any(s.get("Recipient") == acs_url for s in scds):
        fail(f"no bearer SubjectConfirmationData with Recipient exactly {acs_url!r}", "RECIPIENT_NOT_EXACT")
    irt = resp.document.get("InResponseTo")
    if request_id is not None and irt is None:
        fail(f"Response has no InResponseTo, expected {request_id!r}", "MISSING_IN_RESPONSE_TO")
    if request_id is None and (irt is not None or any(s.get("InResponseTo") is not None for s in scds)):
        fail("IdP-initiated (request_id null) but the response carries InResponseTo", "UNEXPECTED_IN_RESPONSE_TO")

    out({
        "ok": True,
        "nameid": resp.get_nameid(),
        "nameid_format": resp.get_nameid_format(),
        "session_index": resp.get_session_index(),
        "attributes": resp.get_attributes(),
        "issuers": resp.get_issuers(),
        "audiences": resp.get_audiences(),
        "in_response_to": irt,
        "destination": destination,
    }, 0)


if __name__ == "__main__":
    main()
