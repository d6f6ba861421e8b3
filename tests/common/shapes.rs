//! Request shapes an attacker can send to flexgate's public endpoints, for the cost and flood
//! tests (`tests/cost.rs`, `tests/flood.rs`) and `benches/cost`. Each shape is one HTTP request;
//! the ordinary Flex AuthnRequest (HTTP-Redirect, ~1 KB) is the yardstick.

use super::*;

/// One HTTP request: a GET of `path?query` or a form POST to `path`.
#[derive(Clone)]
pub enum Send {
    Get(String),
    Post(String, Vec<(String, String)>),
}

impl Send {
    pub fn request(&self, c: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        match self {
            Send::Get(pq) => c.get(format!("{base}{pq}")),
            Send::Post(p, form) => c.post(format!("{base}{p}")).form(form),
        }
    }
}

pub struct Shape {
    pub name: String,
    pub send: Send,
}

/// The signed SP of the cost tests: `request_cert` set, `want_signed_requests`.
pub const SIGNED_SP: &str = "https://sp.example.com/saml";
pub const SIGNED_ACS: &str = "https://sp.example.com/saml/acs";

/// `default_sps()` plus an SP that signs its requests with the key in `key_dir`.
pub fn sps_with_signed(key_dir: &Path) -> String {
    format!(
        r#"{}
[[sp]]
name = "signed"
kind = "generic"
entity_id = "{SIGNED_SP}"
acs_url = "{SIGNED_ACS}"
request_cert = "{}"
want_signed_requests = true
"#,
        default_sps(),
        key_dir.join("idp-cert.pem").display()
    )
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn deflate_bytes(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

fn b64_bytes(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An ordinary Flex Enhanced AuthnRequest over HTTP-Redirect, with a fresh ID.
pub fn ordinary(sso: &str) -> Send {
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", sso);
    Send::Get(format!(
        "/saml/sso?SAMLRequest={}",
        urlencode(&deflate_b64(&xml))
    ))
}

/// An AuthnRequest from `issuer` with extra root attributes and extra content after the Issuer.
pub fn authn_request(sso: &str, issuer: &str, acs: &str, root_attrs: &str, body: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="{acs}" Destination="{sso}" ID="{}" IssueInstant="{}" Version="2.0"{root_attrs}><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{issuer}</saml:Issuer>{body}</samlp:AuthnRequest>"#,
        unique_id("_"),
        now_instant()
    )
}

/// `n` nested elements, each declaring its own namespace prefix.
pub fn nested_ns(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("<e xmlns:p{i}=\"u\">"));
    }
    s.push_str(&"</e>".repeat(n));
    s
}

pub fn nested_plain(n: usize) -> String {
    format!("{}{}", "<e>".repeat(n), "</e>".repeat(n))
}

/// One element with `n` distinct attributes.
pub fn attr_flood(n: usize) -> String {
    let attrs: String = (0..n).map(|i| format!(" a{i}=\"1\"")).collect();
    format!("<x{attrs}/>")
}

/// `n` namespace declarations, for the root element's attributes.
pub fn ns_decls(n: usize) -> String {
    (0..n).map(|i| format!(" xmlns:p{i}=\"u\"")).collect()
}

/// The XML floods of issue 11, each sized to fit the old defaults (64 KiB inflated): the parse
/// of each used to cost from milliseconds to seconds.
pub fn xml_floods() -> Vec<(&'static str, String, String)> {
    // (name, root attributes, body)
    vec![
        (
            "2,000 nested elements, each declaring a namespace",
            String::new(),
            nested_ns(2000),
        ),
        (
            "one element with 6,000 attributes",
            String::new(),
            attr_flood(6000),
        ),
        (
            "3,500 namespace declarations on the root",
            ns_decls(3500),
            String::new(),
        ),
        (
            "14,000 empty elements",
            String::new(),
            "<e/>".repeat(14_000),
        ),
        (
            "8,000 nested elements, no namespaces",
            String::new(),
            nested_plain(8000),
        ),
        (
            "60 KB of text",
            String::new(),
            format!("<x>{}</x>", "a".repeat(60_000)),
        ),
        (
            "a 60 KB attribute value",
            String::new(),
            format!("<x a=\"{}\"/>", "a".repeat(60_000)),
        ),
        ("8,000 comments", String::new(), "<!---->".repeat(8000)),
        (
            "10,000 processing instructions",
            String::new(),
            "<?p?>".repeat(10_000),
        ),
    ]
}

fn redirect(xml: &str) -> Send {
    Send::Get(format!(
        "/saml/sso?SAMLRequest={}",
        urlencode(&b64_bytes(&deflate_bytes(xml.as_bytes())))
    ))
}

fn post_b64(b64: String) -> Send {
    Send::Post("/saml/sso".into(), vec![("SAMLRequest".into(), b64)])
}

/// An HTTP-Redirect query carrying a signature that is not the SP's (the SP is found, the
/// signature is checked and fails).
fn redirect_signed(xml: &str) -> Send {
    let req = urlencode(&b64_bytes(&deflate_bytes(xml.as_bytes())));
    let alg = urlencode("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256");
    let sig = urlencode(&b64_bytes(&[7u8; 256]));
    Send::Get(format!(
        "/saml/sso?SAMLRequest={req}&SigAlg={alg}&Signature={sig}"
    ))
}

/// An enveloped signature covering the root by `#id`, with a digest the attacker computed
/// (`digest` base64) and a signature value no key made.
pub fn fake_signature(id: &str, digest: &str) -> String {
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>{}</ds:SignatureValue></ds:Signature>"##,
        b64_bytes(&[7u8; 256])
    )
}

/// A signed-SP AuthnRequest with an enveloped signature after the Issuer and `body` after it.
/// `right_digest`: the DigestValue matches the content (so the RSA check runs too).
pub fn enveloped(sso: &str, root_attrs: &str, body: &str, right_digest: bool) -> String {
    let id = unique_id("_");
    let with = |digest: &str| {
        format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="{SIGNED_ACS}" Destination="{sso}" ID="{id}" IssueInstant="{}" Version="2.0"{root_attrs}><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{SIGNED_SP}</saml:Issuer>{}{body}</samlp:AuthnRequest>"#,
            now_instant(),
            fake_signature(&id, digest)
        )
    };
    let draft = with("AAAA");
    if !right_digest {
        return draft;
    }
    let Ok(doc) = roxmltree::Document::parse(&draft) else {
        return draft;
    };
    let root = doc.root_element();
    let sig = root
        .children()
        .find(|c| c.tag_name().name() == "Signature")
        .map(|c| c.id());
    let canonical = flexgate::saml::c14n::canonicalize(
        root,
        &flexgate::saml::c14n::Options {
            with_comments: false,
            inclusive_prefixes: &[],
            exclude: sig,
        },
    );
    let digest = openssl::sha::sha256(canonical.as_bytes());
    with(&b64_bytes(&digest))
}

/// The costliest documents that pass the AuthnRequest bounds (`xml_input::AUTHN_REQUEST`) and
/// the default inflated size (16 KiB): what an attacker who knows the bounds sends.
pub fn just_within_bounds(sso: &str, issuer: &str, acs: &str) -> Vec<(&'static str, String)> {
    let max = flexgate::saml::xml_input::AUTHN_REQUEST;
    let depth = max.max_depth - 2;
    // Each level declares as many namespaces as the total allows.
    let per = (max.max_namespaces - 2) / depth;
    let mut nested = String::new();
    for i in 0..depth {
        let decls: String = (0..per)
            .map(|j| format!(" xmlns:p{i}x{j}=\"u{j}\""))
            .collect();
        nested.push_str(&format!("<p{i}x0:e{decls}>"));
    }
    for i in (0..depth).rev() {
        nested.push_str(&format!("</p{i}x0:e>"));
    }
    let attrs: String = (0..max.max_attributes)
        .map(|i| format!(" a{i}=\"1\""))
        .collect();
    let wide = format!("<x{attrs}/>").repeat(50);
    vec![
        (
            "30 nested elements, 62 namespace declarations",
            authn_request(sso, issuer, acs, "", &nested),
        ),
        (
            "50 elements with 32 attributes each",
            authn_request(sso, issuer, acs, "", &wide),
        ),
        (
            "2,000 empty elements",
            authn_request(sso, issuer, acs, "", &"<e/>".repeat(max.max_nodes - 48)),
        ),
        (
            "30 nested elements, 2,000 nodes",
            authn_request(
                sso,
                issuer,
                acs,
                "",
                &format!(
                    "{}{}{}",
                    "<e>".repeat(depth),
                    "<!---->".repeat(max.max_nodes - 48 - depth),
                    "</e>".repeat(depth)
                ),
            ),
        ),
    ]
}

/// Every shape an attacker can send to any endpoint, sized to fit the old defaults
/// (SAMLRequest ≤ 32 KiB, inflated ≤ 64 KiB).
pub fn attacker_shapes(sso: &str) -> Vec<Shape> {
    let issuer = format!("urn:flex:{JQ}");
    let acs = format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}");
    let mut v = Vec::new();
    let mut add = |name: String, send: Send| v.push(Shape { name, send });
    for (name, attrs, body) in xml_floods() {
        let xml = authn_request(sso, &issuer, &acs, &attrs, &body);
        add(format!("Redirect: {name}"), redirect(&xml));
    }
    let bomb = b64_bytes(&deflate_bytes(&vec![b' '; 20 * 1024 * 1024]));
    add(
        "Redirect: deflate bomb (20 MiB of spaces)".into(),
        Send::Get(format!("/saml/sso?SAMLRequest={}", urlencode(&bomb))),
    );
    add(
        "Redirect: deflate bomb (16 MiB of XML)".into(),
        Send::Get(format!(
            "/saml/sso?SAMLRequest={}",
            urlencode(&b64_bytes(&deflate_bytes(
                format!("<a>{}", "<b/>".repeat(4 * 1024 * 1024)).as_bytes()
            )))
        )),
    );
    add(
        "Redirect: broken base64 (30 KB)".into(),
        Send::Get(format!(
            "/saml/sso?SAMLRequest={}",
            urlencode(&format!("{}!", "A".repeat(30_000)))
        )),
    );
    add(
        "Redirect: broken DEFLATE (30 KB)".into(),
        Send::Get(format!("/saml/sso?SAMLRequest={}", "a".repeat(30_000))),
    );
    add(
        "Redirect: SAMLRequest over the size limit".into(),
        Send::Get(format!("/saml/sso?SAMLRequest={}", "A".repeat(40_000))),
    );
    let nested = authn_request(sso, &issuer, &acs, "", &nested_ns(2000));
    add(
        "POST (deflated): 2,000 nested namespaced elements".into(),
        post_b64(b64_bytes(&deflate_bytes(nested.as_bytes()))),
    );
    let attrs = authn_request(sso, &issuer, &acs, "", &attr_flood(2300));
    add(
        "POST (base64): one element with 2,300 attributes".into(),
        post_b64(b64(&attrs)),
    );
    let nsroot = authn_request(sso, &issuer, &acs, &ns_decls(1400), "");
    add(
        "POST (base64): 1,400 namespace declarations on the root".into(),
        post_b64(b64(&nsroot)),
    );
    add(
        "POST: broken base64 (30 KB)".into(),
        post_b64(format!("{}!", "A".repeat(30_000))),
    );
    let signed_nested = authn_request(sso, SIGNED_SP, SIGNED_ACS, "", &nested_ns(2000));
    add(
        "signed SP, Redirect + Signature: 2,000 nested namespaced elements".into(),
        redirect_signed(&signed_nested),
    );
    let signed_attrs = authn_request(sso, SIGNED_SP, SIGNED_ACS, "", &attr_flood(6000));
    add(
        "signed SP, Redirect + Signature: 6,000 attributes".into(),
        redirect_signed(&signed_attrs),
    );
    let env_nested = enveloped(sso, "", &nested_ns(2000), false);
    add(
        "signed SP, POST enveloped signature: 2,000 nested namespaced elements".into(),
        post_b64(b64_bytes(&deflate_bytes(env_nested.as_bytes()))),
    );
    let env_plain = enveloped(sso, "", &nested_plain(6000), false);
    add(
        "signed SP, POST enveloped signature: 6,000 nested elements".into(),
        post_b64(b64_bytes(&deflate_bytes(env_plain.as_bytes()))),
    );
    let max = flexgate::saml::xml_input::AUTHN_REQUEST;
    let over: Vec<(&str, String, String)> = vec![
        (
            "one level too deep",
            String::new(),
            nested_plain(max.max_depth),
        ),
        (
            "one attribute too many",
            String::new(),
            attr_flood(max.max_attributes + 1),
        ),
        (
            "one namespace too many on an element",
            String::new(),
            format!("<x{}/>", ns_decls(max.max_namespaces_per_element + 1)),
        ),
        (
            "one namespace too many in all",
            String::new(),
            format!("<x{}/>", ns_decls(max.max_namespaces_per_element))
                .repeat(max.max_namespaces / max.max_namespaces_per_element + 1),
        ),
        (
            "one node too many",
            String::new(),
            "<e/>".repeat(max.max_nodes),
        ),
    ];
    for (name, attrs, body) in over {
        let xml = authn_request(sso, &issuer, &acs, &attrs, &body);
        add(format!("Redirect, 16 KiB at most: {name}"), redirect(&xml));
    }
    for (name, xml) in just_within_bounds(sso, &issuer, &acs) {
        add(
            format!("Redirect, within every bound: {name}"),
            redirect(&xml),
        );
    }
    let filler = format!("<x>{}</x>", "<e/>".repeat(max.max_nodes / 2 - 40));
    let signed_max = enveloped(sso, "", &filler, true);
    add(
        "signed SP, POST enveloped signature, right digest: 1,000 elements".into(),
        post_b64(b64_bytes(&deflate_bytes(signed_max.as_bytes()))),
    );
    add(
        "/oidc/callback: junk code and state".into(),
        Send::Get(format!(
            "/oidc/callback?code={}&state={}",
            "c".repeat(4000),
            "s".repeat(4000)
        )),
    );
    add(
        "/oidc/callback: junk error description".into(),
        Send::Get(format!(
            "/oidc/callback?error=access_denied&error_description={}&state={}",
            "d".repeat(8000),
            "s".repeat(43)
        )),
    );
    add(
        "/saml/init: unknown SP, long RelayState".into(),
        Send::Get(format!(
            "/saml/init/{}?RelayState={}",
            "x".repeat(2000),
            "r".repeat(4000)
        )),
    );
    v
}
