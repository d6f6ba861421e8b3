//! An independent canonicaliser (lxml / libxml2, in the test venv) as the oracle for two claims:
//! - `src/saml/xml.rs`: flexgate *writes* XML already in exclusive-c14n form, so the bytes it
//!   digests are the bytes lxml produces from the signed fixture (for the Response with its own
//!   signature removed — the enveloped transform —, for the Assertion, for SignedInfo, and for
//!   the whole signed document);
//! - `src/saml/c14n.rs`: flexgate's verifier canonicalises third-party-shaped XML exactly as
//!   libxml2 does (default namespaces, `xmlns=""`, InclusiveNamespaces PrefixList, namespaced
//!   attribute order, comments, character references, excluded signature subtrees, ...).
//!
//! The venv comes from `scripts/install-test-deps`; without it these tests fail (never skip).

mod fixtures_tool;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use fixtures_tool as fx;
use flexgate::saml::c14n::{canonicalize, Options};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

const ORACLE: &str = r#"
import sys, json, base64
from lxml import etree

DS = "http://www.w3.org/2000/09/xmldsig#"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"

def parse(text):
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False,
                             strip_cdata=True, huge_tree=False)
    return etree.fromstring(text.encode("utf-8"), parser)

def c14n(el, prefixes=None, comments=False):
    out = etree.tostring(el, method="c14n", exclusive=True, with_comments=comments,
                         inclusive_ns_prefixes=prefixes or None)
    return base64.b64encode(out).decode()

def remove(el):
    # The enveloped-signature transform drops the element but keeps the text after it
    # (lxml's remove() would drop its tail with it).
    parent, prev, tail = el.getparent(), el.getprevious(), el.tail
    if tail:
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)

def elements(root):
    return [e for e in root.iter() if isinstance(e.tag, str)]

def golden(xml):
    out = {}
    root = parse(xml)
    out["whole"] = c14n(root)
    for name, find in (("response", lambda r: r),
                       ("assertion", lambda r: r.find("{%s}Assertion" % SAML))):
        r = parse(xml)
        el = find(r)
        sig = el.find("{%s}Signature" % DS)
        if sig is not None:
            out[name + "_signed_info"] = c14n(sig.find("{%s}SignedInfo" % DS))
            remove(sig)
        out[name + "_digested"] = c14n(el)
    r = parse(xml)
    for sig in list(r.iter("{%s}Signature" % DS)):
        remove(sig)
    out["unsigned"] = c14n(r)
    return out

def case(c):
    root = parse(c["xml"])
    els = elements(root)
    if c.get("exclude") is not None:
        remove(els[c["exclude"]])
    return c14n(els[c["index"]], c.get("prefixes"), c.get("comments", False))

req = json.load(sys.stdin)
if req["mode"] == "golden":
    json.dump([golden(x) for x in req["docs"]], sys.stdout)
else:
    json.dump([case(c) for c in req["cases"]], sys.stdout)
"#;

fn oracle(request: &Value) -> Value {
    let python = fx::repo().join(".peers/venv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fx::missing_peer(&format!("{} (with lxml)", python.display()), e));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named") {
            fx::missing_peer("lxml in .peers/venv", err);
        }
        panic!("the lxml oracle failed:\n{err}");
    }
    serde_json::from_slice(&out.stdout).expect("oracle prints JSON")
}

fn b64s(v: &Value) -> String {
    String::from_utf8(B64.decode(v.as_str().expect("base64 string")).unwrap()).unwrap()
}

/// `xml` without the `<ds:Signature>` that starts at byte `at`.
fn without_signature_at(xml: &str, at: usize) -> String {
    assert!(
        xml[at..].starts_with("<ds:Signature"),
        "no Signature at {at}"
    );
    let end = at + xml[at..].find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    format!("{}{}", &xml[..at], &xml[end..])
}

/// The SignedInfo flexgate signed: the one in the Signature starting at `at`, declaring `ds`
/// itself (exclusive c14n of SignedInfo alone).
fn signed_info_signed(xml: &str, at: usize) -> String {
    let start = at + xml[at..].find("<ds:SignedInfo>").unwrap();
    let end = start + xml[start..].find("</ds:SignedInfo>").unwrap() + "</ds:SignedInfo>".len();
    xml[start..end].replacen(
        "<ds:SignedInfo>",
        "<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">",
        1,
    )
}

fn diff(what: &str, expected: &str, got: &str) -> Option<String> {
    if expected == got {
        return None;
    }
    let at = expected
        .bytes()
        .zip(got.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    let ctx = |s: &str| {
        let mut lo = at.saturating_sub(80);
        while !s.is_char_boundary(lo) {
            lo -= 1;
        }
        let mut hi = (at + 80).min(s.len());
        while !s.is_char_boundary(hi) {
            hi += 1;
        }
        s[lo..hi].to_string()
    };
    Some(format!(
        "{what}: differs at byte {at}\n  flexgate: …{}…\n  lxml:     …{}…",
        ctx(expected),
        ctx(got)
    ))
}

#[test]
fn flexgate_writes_what_lxml_canonicalises() {
    let signer = fx::signer("idp");
    let scenarios = fx::scenarios();
    let docs: Vec<String> = scenarios.iter().map(|s| s.signed(&signer)).collect();
    let answer = oracle(&json!({"mode": "golden", "docs": docs}));
    let mut failures = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let lx = &answer[i];
        let r = s.unsigned();
        let signed = &docs[i];
        let mut check = |what: &str, expected: &str, key: &str| {
            if let Some(d) = diff(&format!("{} {what}", s.name), expected, &b64s(&lx[key])) {
                failures.push(d);
            }
        };
        // The whole signed document is canonical: signatures are inserted in canonical form.
        check("whole signed document", signed, "whole");
        // Without any signature: exactly what build() wrote.
        check("unsigned Response", &r.xml, "unsigned");
        // The Assertion as its signature digests it (and, unsigned, as it sits in build()'s output).
        check(
            "Assertion without its signature",
            &r.xml[r.assertion.clone()],
            "assertion_digested",
        );
        if s.sign.signs_response() {
            let digested = without_signature_at(signed, r.response_signature_at);
            check(
                "Response without its own signature",
                &digested,
                "response_digested",
            );
            check(
                "Response SignedInfo",
                &signed_info_signed(signed, r.response_signature_at),
                "response_signed_info",
            );
        }
        if s.sign.signs_assertion() {
            let shift = if s.sign.signs_response() {
                signed.len() - without_signature_at(signed, r.response_signature_at).len()
            } else {
                0
            };
            let at = r.assertion_signature_at + shift;
            check(
                "Assertion SignedInfo",
                &signed_info_signed(signed, at),
                "assertion_signed_info",
            );
        }

        // flexgate's own verifier c14n agrees on the same node-sets.
        let doc = roxmltree::Document::parse(signed).unwrap();
        let root = doc.root_element();
        let own_sig = root
            .children()
            .find(|c| c.tag_name().name() == "Signature")
            .map(|n| n.id());
        let ours = canonicalize(
            root,
            &Options {
                exclude: own_sig,
                ..Options::default()
            },
        );
        if let Some(d) = diff(
            &format!("{} c14n.rs Response", s.name),
            &ours,
            &b64s(&lx["response_digested"]),
        ) {
            failures.push(d);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ------------------------------------------------------------------ third-party-shaped XML

struct Case {
    name: &'static str,
    xml: &'static str,
    /// The apex: index among the document's elements in document order.
    index: usize,
    comments: bool,
    /// InclusiveNamespaces PrefixList entries (`#default` for the default namespace).
    prefixes: &'static [&'static str],
    /// An element left out (the enveloped signature), by the same index.
    exclude: Option<usize>,
}

const fn case(name: &'static str, xml: &'static str, index: usize) -> Case {
    Case {
        name,
        xml,
        index,
        comments: false,
        prefixes: &[],
        exclude: None,
    }
}

const DEFAULT_NS_SAML: &str = r#"<Response xmlns="urn:oasis:names:tc:SAML:2.0:protocol" ID="r1" Version="2.0"><Issuer xmlns="urn:oasis:names:tc:SAML:2.0:assertion">idp</Issuer><Assertion xmlns="urn:oasis:names:tc:SAML:2.0:assertion" ID="a1"><Subject><NameID Format="f">x@example.com</NameID></Subject></Assertion></Response>"#;
const UNDECLARE: &str =
    r#"<a xmlns="urn:a"><b xmlns=""><c xmlns="urn:c"><d xmlns=""><e/></d></c></b></a>"#;
const PREFIX_LIST: &str = r#"<r xmlns="urn:d" xmlns:a="urn:a" xmlns:b="urn:b" xmlns:unused="urn:u"><s a:x="1"><t>v</t></s></r>"#;
const ATTR_ORDER: &str = r#"<e xmlns:z="urn:a" xmlns:y="urn:b" xmlns:a="urn:c" y:k="1" z:k="2" a:a="0" b="3" a="4" xml:lang="en" z:a="5"/>"#;
const COMMENTS: &str =
    "<!-- before --><r><!-- in r --><x>a<!--mid-->b</x><!----><y/></r><!-- after -->";
const ENTITIES: &str = "<r a=\"&#xD;&#xA;&#x9;x&gt;&lt;&amp;&quot;'\" b='\"q\"' c=\"lit\ttab\nnl\r\ncrlf\"  d = \" sp \">t&#xD;u&#x9;v&#xA;w&gt;&lt;&amp;&quot;&apos;\r\nline\rcr<![CDATA[<cdata> & ]]>]]&gt;&#233;&#x1F600;</r>";
const REDECLARE: &str =
    r#"<p:a xmlns:p="urn:1"><p:b xmlns:p="urn:2"><p:c/></p:b><p:d xmlns:p="urn:1"/></p:a>"#;
const XSI_TYPE: &str = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="r"><saml:Assertion ID="a"><saml:AttributeStatement><saml:Attribute Name="roles"><saml:AttributeValue xsi:type="xs:string">agent</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion></samlp:Response>"#;
const ENVELOPED: &str = "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"r\">\n  <saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">idp</saml:Issuer>\n  <ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\n    <ds:SignedInfo><ds:Reference URI=\"#r\"/></ds:SignedInfo>\n  </ds:Signature>\n  <samlp:Status>\n    <samlp:StatusCode Value=\"ok\"/>\n  </samlp:Status>\n</samlp:Response>";
const ENVELOPED_FIRST: &str = "<r xmlns=\"urn:r\"><ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo/></ds:Signature>after<x/></r>";
const PIS: &str = "<r><?pi some data?><?pi2?><s>t<?inner?></s></r>";
const ATTR_ONLY_NS: &str =
    r#"<r xmlns:q="urn:q" xmlns:w="urn:w"><s><t q:attr="v" w:z="1">x</t></s></r>"#;
const SAME_URI: &str = r#"<r xmlns:a="urn:x" xmlns:b="urn:x"><a:s b:at="1"><b:t/></a:s></r>"#;
const DEFAULT_INHERITED: &str = r#"<p:r xmlns:p="urn:p" xmlns="urn:d"><c><p:d>1</p:d></c></p:r>"#;
const EMPTY_DEFAULT_PREFIXLIST: &str = r#"<r xmlns="urn:d"><s xmlns=""><t/></s></r>"#;
const XML_ATTRS: &str =
    r#"<r xml:lang="en" xml:space="preserve"><s xml:lang="fr">t</s><u>v</u></r>"#;
const NON_ASCII: &str = "<ñ:é xmlns:ñ=\"urn:n\" xmlns:ß=\"urn:s\"\n   ñ:ü=\"1\"\n\tb=\"2\"><ß:x ß:y=\"3\"/><ñ:z/></ñ:é>";
const WHITESPACE: &str = "<r>\n\t<a   x = 'y'   />\n  <b>  spaced  </b>\n</r>";

fn cases() -> Vec<Case> {
    vec![
        case("default namespace: whole Response", DEFAULT_NS_SAML, 0),
        case("default namespace: Assertion subtree", DEFAULT_NS_SAML, 2),
        case("default namespace: NameID leaf", DEFAULT_NS_SAML, 4),
        case("xmlns=\"\": from the top", UNDECLARE, 0),
        case("xmlns=\"\": apex undeclares", UNDECLARE, 1),
        case("xmlns=\"\": apex redeclares", UNDECLARE, 2),
        case("xmlns=\"\": apex in no namespace", UNDECLARE, 3),
        case("prefix list: none", PREFIX_LIST, 1),
        Case {
            prefixes: &["b", "#default"],
            ..case("prefix list: b #default", PREFIX_LIST, 1)
        },
        Case {
            prefixes: &["unused", "a"],
            ..case("prefix list: unused a", PREFIX_LIST, 1)
        },
        Case {
            prefixes: &["zz"],
            ..case("prefix list: prefix not in scope", PREFIX_LIST, 2)
        },
        Case {
            prefixes: &["b"],
            ..case("prefix list: leaf", PREFIX_LIST, 2)
        },
        case(
            "attributes sorted by namespace URI then name",
            ATTR_ORDER,
            0,
        ),
        case("comments dropped", COMMENTS, 0),
        Case {
            comments: true,
            ..case("comments kept", COMMENTS, 0)
        },
        Case {
            comments: true,
            ..case("comments kept in a subtree", COMMENTS, 1)
        },
        case("character references and normalisation", ENTITIES, 0),
        case("prefix redeclared: top", REDECLARE, 0),
        case("prefix redeclared: inner", REDECLARE, 1),
        case("prefix redeclared back", REDECLARE, 3),
        case("xsi:type QName value: no PrefixList", XSI_TYPE, 1),
        Case {
            prefixes: &["xs"],
            ..case("xsi:type QName value: PrefixList xs", XSI_TYPE, 1)
        },
        Case {
            prefixes: &["xs", "xsi", "saml"],
            ..case("xsi:type: PrefixList on a leaf", XSI_TYPE, 4)
        },
        Case {
            exclude: Some(2),
            ..case("enveloped signature, pretty-printed", ENVELOPED, 0)
        },
        Case {
            exclude: Some(1),
            ..case(
                "enveloped signature first, text after it",
                ENVELOPED_FIRST,
                0,
            )
        },
        case("processing instructions", PIS, 0),
        case("namespaces used by attributes only", ATTR_ONLY_NS, 1),
        case("namespaces used by attributes only: leaf", ATTR_ONLY_NS, 2),
        case("two prefixes for one URI", SAME_URI, 1),
        case(
            "default namespace inherited by a child",
            DEFAULT_INHERITED,
            0,
        ),
        case("default namespace: subtree", DEFAULT_INHERITED, 1),
        Case {
            prefixes: &["#default"],
            ..case(
                "#default when the default is empty",
                EMPTY_DEFAULT_PREFIXLIST,
                1,
            )
        },
        Case {
            prefixes: &["#default"],
            ..case(
                "#default when the default is set",
                EMPTY_DEFAULT_PREFIXLIST,
                0,
            )
        },
        case("xml: attributes on the apex", XML_ATTRS, 0),
        case("xml: attributes not inherited", XML_ATTRS, 1),
        case("xml: attributes not inherited (none)", XML_ATTRS, 2),
        case("whitespace and empty elements", WHITESPACE, 0),
        case(
            "non-ASCII names and newlines between attributes",
            NON_ASCII,
            0,
        ),
        case("non-ASCII names: subtree", NON_ASCII, 1),
        Case {
            comments: true,
            exclude: Some(2),
            ..case("enveloped signature with comments kept", ENVELOPED, 0)
        },
    ]
}

#[test]
fn verifier_c14n_matches_lxml_on_third_party_shapes() {
    let cases = cases();
    let request: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({"xml": c.xml, "index": c.index, "comments": c.comments,
                   "prefixes": c.prefixes, "exclude": c.exclude})
        })
        .collect();
    let answer = oracle(&json!({"mode": "cases", "cases": request}));
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let doc = roxmltree::Document::parse(c.xml)
            .unwrap_or_else(|e| panic!("{}: roxmltree cannot parse it: {e}", c.name));
        let els: Vec<roxmltree::Node> = doc.descendants().filter(|n| n.is_element()).collect();
        let prefixes: Vec<String> = c
            .prefixes
            .iter()
            .map(|p| {
                if *p == "#default" {
                    String::new()
                } else {
                    p.to_string()
                }
            })
            .collect();
        let ours = canonicalize(
            els[c.index],
            &Options {
                with_comments: c.comments,
                inclusive_prefixes: &prefixes,
                exclude: c.exclude.map(|x| els[x].id()),
            },
        );
        if let Some(d) = diff(c.name, &ours, &b64s(&answer[i])) {
            failures.push(d);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from lxml:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
