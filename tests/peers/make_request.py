"""Signed AuthnRequests made by python3-saml (OneLogin), for flexgate's signed-request tests.

    .peers/venv/bin/python tests/peers/make_request.py < {"sso_url": "...", "sp_entity_id": "...",
        "acs_url": "...", "private_key_pem": "...", "cert_pem": "...", "relay_state": "...",
        "binding": "redirect"|"post", "sign_alg": "rsa-sha256"|"rsa-sha1"}

stdout: {"id": ..., "url": ...} for HTTP-Redirect (the query python3-saml builds and signs), or
{"id": ..., "saml_request": <base64 of the enveloped-signed XML>} for HTTP-POST.
"""
import base64
import json
import sys

from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.authn_request import OneLogin_Saml2_Authn_Request
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils


def strip_pem(pem):
    return "".join(l for l in pem.strip().splitlines() if not l.startswith("-----"))


p = json.load(sys.stdin)
alg = {"rsa-sha256": C.RSA_SHA256, "rsa-sha1": C.RSA_SHA1, "rsa-sha512": C.RSA_SHA512}[p.get("sign_alg", "rsa-sha256")]
digest = C.SHA1 if alg == C.RSA_SHA1 else C.SHA256
settings = {
    "strict": True,
    "sp": {
        "entityId": p["sp_entity_id"],
        "assertionConsumerService": {"url": p["acs_url"], "binding": C.BINDING_HTTP_POST},
        "NameIDFormat": C.NAMEID_EMAIL_ADDRESS,
        "x509cert": strip_pem(p["cert_pem"]),
        "privateKey": strip_pem(p["private_key_pem"]),
    },
    "idp": {
        "entityId": "https://idp.example.com/metadata",
        "singleSignOnService": {"url": p["sso_url"], "binding": C.BINDING_HTTP_REDIRECT},
        "x509cert": strip_pem(p["cert_pem"]),
    },
    "security": {
        "authnRequestsSigned": True,
        "signatureAlgorithm": alg,
        "digestAlgorithm": digest,
        "rejectDeprecatedAlgorithm": False,
        "requestedAuthnContext": False,
    },
}
if p.get("binding") == "post":
    s = OneLogin_Saml2_Settings(settings, sp_validation_only=True)
    req = OneLogin_Saml2_Authn_Request(s)
    xml = req.get_xml()
    signed = OneLogin_Saml2_Utils.add_sign(xml, settings["sp"]["privateKey"] and p["private_key_pem"], p["cert_pem"], sign_algorithm=alg, digest_algorithm=digest)
    if isinstance(signed, bytes):
        signed = signed.decode("utf-8")
    print(json.dumps({"id": req.get_id(), "saml_request": base64.b64encode(signed.encode("utf-8")).decode()}))
else:
    request_data = {"https": "on", "http_host": "sp.example.com", "script_name": "/", "get_data": {}, "post_data": {}}
    auth = OneLogin_Saml2_Auth(request_data, settings)
    url = auth.login(return_to=p.get("relay_state") or None)
    print(json.dumps({"id": auth.get_last_request_id(), "url": url}))
