//! The hostile-input table: each row is a request and the required outcome — a 4xx HTML page
//! that names the cause, no redirect to the upstream, no assertion.

mod common;
use common::*;

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn deflate_bytes_b64(data: &[u8]) -> String {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    b64_bytes(&e.finish().unwrap())
}

fn b64_bytes(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn request(
    id: &str,
    issuer: &str,
    acs: &str,
    destination: &str,
    instant: &str,
    version: &str,
) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="{acs}" Destination="{destination}" ID="{id}" IssueInstant="{instant}" Version="{version}"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{issuer}</saml:Issuer></samlp:AuthnRequest>"#
    )
}

enum Send {
    Query(String),
    Form(Vec<(String, String)>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_table() {
    let env = Env::start();
    let sso = env.fg.sso_url();
    let issuer = format!("urn:flex:{JQ}");
    let acs = format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}");
    let now = chrono::Utc::now();
    let t = |secs: i64| {
        (now + chrono::Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let good = |id: &str| request(id, &issuer, &acs, &sso, &t(0), "2.0");
    let q = |xml: &str| Send::Query(format!("SAMLRequest={}", urlencode(&deflate_b64(xml))));

    let replayed = unique_id("_");
    // Use the replayed ID once, legitimately.
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .get(format!(
            "{sso}?SAMLRequest={}",
            urlencode(&deflate_b64(&good(&replayed)))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);

    let billion = format!(
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>{}"#,
        good(&unique_id("_")).replace("</saml:Issuer>", "&lol3;</saml:Issuer>")
    );
    let xxe = format!(
        r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>{}"#,
        good(&unique_id("_")).replace("</saml:Issuer>", "&x;</saml:Issuer>")
    );
    let bomb = deflate_bytes_b64(&vec![b' '; 20 * 1024 * 1024]);
    let rows: Vec<(&str, Send, u16, &str)> = vec![
        ("DOCTYPE with internal entity", q(&format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", good(&unique_id("_")))), 400, "DOCTYPE"),
        ("external entity (XXE)", q(&xxe), 400, "DOCTYPE"),
        ("billion laughs", q(&billion), 400, "DOCTYPE"),
        ("DEFLATE bomb (20 MiB of spaces)", Send::Query(format!("SAMLRequest={}", urlencode(&bomb))), 400, "over the limit"),
        ("oversize SAMLRequest in the query", Send::Query(format!("SAMLRequest={}", "A".repeat(40_000))), 400, "over the limit"),
        ("oversize POST body", Send::Form(vec![("SAMLRequest".into(), "A".repeat(200_000))]), 413, "too large"),
        ("invalid base64", Send::Query("SAMLRequest=%%%%not*base64".into()), 400, "not valid base64"),
        ("invalid DEFLATE", Send::Query(format!("SAMLRequest={}", urlencode(&b64_bytes(b"\xff\xfe\xfd not deflate at all")))), 400, "DEFLATE"),
        ("POST, not XML nor DEFLATE", Send::Form(vec![("SAMLRequest".into(), b64_bytes(b"\xff\xfe\xfd garbage"))]), 400, "DEFLATE"),
        ("wrong SAML version", q(&request(&unique_id("_"), &issuer, &acs, &sso, &t(0), "1.1")), 400, "only SAML 2.0"),
        ("not an AuthnRequest", q(&good(&unique_id("_")).replace("AuthnRequest", "LogoutRequest")), 400, "not an AuthnRequest"),
        ("AuthnRequest in another namespace", q(&good(&unique_id("_")).replace("urn:oasis:names:tc:SAML:2.0:protocol", "urn:evil")), 400, "not an AuthnRequest"),
        ("unknown Issuer", q(&request(&unique_id("_"), "urn:flex:JQ99999999999999999999999999999999", &acs, &sso, &t(0), "2.0")), 400, "does not know"),
        ("ACS on another host", q(&request(&unique_id("_"), &issuer, &format!("https://evil.example.com/login/callback?connection={JQ}"), &sso, &t(0), "2.0")), 400, "configured ACS"),
        ("ACS with another ?connection=", q(&request(&unique_id("_"), &issuer, "https://login.flex.us1.twilio.com/login/callback?connection=JQ99999999999999999999999999999999", &sso, &t(0), "2.0")), 400, "configured ACS"),
        ("ACS with javascript: scheme", q(&request(&unique_id("_"), &issuer, "javascript:alert(document.cookie)", &sso, &t(0), "2.0")), 400, "configured ACS"),
        ("wrong Destination", q(&request(&unique_id("_"), &issuer, &acs, "https://other-idp.example.com/saml/sso", &t(0), "2.0")), 400, "not to this identity provider"),
        ("stale IssueInstant", q(&request(&unique_id("_"), &issuer, &acs, &sso, &t(-3600), "2.0")), 400, "expired"),
        ("future IssueInstant", q(&request(&unique_id("_"), &issuer, &acs, &sso, &t(3600), "2.0")), 400, "expired"),
        ("replayed request ID", q(&good(&replayed)), 400, "already used"),
        ("RelayState over the limit", Send::Query(format!("SAMLRequest={}&RelayState={}", urlencode(&deflate_b64(&good(&unique_id("_")))), "r".repeat(3000))), 400, "RelayState"),
        ("SAMLRequest given twice", Send::Query(format!("SAMLRequest={0}&SAMLRequest={0}", urlencode(&deflate_b64(&good(&unique_id("_")))))), 400, "more than once"),
        ("no SAMLRequest", Send::Query("RelayState=x".into()), 400, "no SAMLRequest"),
        ("bad connection hint", Send::Query(format!("SAMLRequest={}&connection={}", urlencode(&deflate_b64(&good(&unique_id("_")))), urlencode("x\" onload=\"y"))), 400, "connection"),
    ];
    let mut failures = Vec::new();
    for (what, send, status, needle) in rows {
        let resp = match send {
            Send::Query(q) => c.get(format!("{sso}?{q}")).send().await.unwrap(),
            Send::Form(f) => c.post(&sso).form(&f).send().await.unwrap(),
        };
        let got = resp.status().as_u16();
        let location = resp.headers().get("location").cloned();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let csp = resp.headers().get("content-security-policy").is_some();
        let body = resp.text().await.unwrap();
        let ok = got == status
            && location.is_none()
            && ctype.starts_with("text/html")
            && csp
            && body.contains(needle)
            && !body.contains("SAMLResponse");
        if !ok {
            failures.push(format!("{what}: status {got} (want {status}), location {location:?}, type {ctype:?}, csp {csp}, body lacks {needle:?}?: {}", &body.chars().take(600).collect::<String>()));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
    // Nothing above reached the upstream (only the one legitimate request did). The last row's
    // log line is awaited first: the log writer is non-blocking.
    env.fg.wait_log("connection hint");
    assert_eq!(
        env.fg.log_text().matches("login started").count(),
        1,
        "{}",
        env.fg.log_text()
    );
}
