//! Signed AuthnRequests (SP `request_cert`, `want_signed_requests`): requests signed by
//! python3-saml and node-saml are accepted over HTTP-Redirect (signature over the raw query
//! bytes, SAMLBind 3.4.4.1) and HTTP-POST (enveloped XML-DSig); tampered, unsigned, wrapped,
//! other-key and SHA-1 requests are refused and never reach the upstream.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

const SP: &str = "https://sp.example.com/saml";
const ACS: &str = "https://sp.example.com/saml/acs";

struct Signed {
    env: Env,
    sp_dir: tempfile::TempDir,
    other_dir: tempfile::TempDir,
}

fn start() -> Signed {
    let sp_dir = tempfile::tempdir().unwrap();
    keygen(sp_dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    keygen(other_dir.path());
    let sps = format!(
        r#"
[[sp]]
name = "signed"
kind = "generic"
entity_id = "{SP}"
acs_url = "{ACS}"
request_cert = "{}"
want_signed_requests = true
"#,
        sp_dir.path().join("idp-cert.pem").display()
    );
    let env = Env::start_with(&sps, "", json!({}));
    Signed {
        env,
        sp_dir,
        other_dir,
    }
}

impl Signed {
    fn key(&self, other: bool) -> String {
        let d = if other { &self.other_dir } else { &self.sp_dir };
        std::fs::read_to_string(d.path().join("idp-key.pem")).unwrap()
    }
    fn cert(&self) -> String {
        std::fs::read_to_string(self.sp_dir.path().join("idp-cert.pem")).unwrap()
    }
}

fn run(cmd: &mut Command, input: Value) -> Value {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn python_request(s: &Signed, binding: &str, alg: &str, other_key: bool) -> Value {
    run(
        Command::new(venv_python()).arg(repo().join("tests/peers/make_request.py")),
        json!({"sso_url": s.env.fg.sso_url(), "sp_entity_id": SP, "acs_url": ACS,
               "private_key_pem": s.key(other_key), "cert_pem": s.cert(), "relay_state": "rs&<x>",
               "binding": binding, "sign_alg": alg}),
    )
}

fn node_request(s: &Signed, binding: &str) -> Value {
    node_modules();
    run(
        Command::new("node").arg(repo().join("tests/peers/make_request.mjs")),
        json!({"entry_point": s.env.fg.sso_url(), "issuer": SP, "callback_url": ACS,
               "private_key_pem": s.key(false), "binding": binding, "relay_state": "rs&<x>"}),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET a redirect URL; returns (status, went to the upstream?, body).
async fn get(url: &str, s: &Signed) -> (u16, bool, String) {
    let r = client().get(url).send().await.unwrap();
    let upstream = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.starts_with(&s.env.op.issuer));
    (r.status().as_u16(), upstream, r.text().await.unwrap())
}

async fn post(saml_request: &str, relay: Option<&str>, s: &Signed) -> (u16, bool, String) {
    let mut form = vec![("SAMLRequest", saml_request.to_string())];
    if let Some(r) = relay {
        form.push(("RelayState", r.to_string()));
    }
    let r = client()
        .post(s.env.fg.sso_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    let upstream = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.starts_with(&s.env.op.issuer));
    (r.status().as_u16(), upstream, r.text().await.unwrap())
}

fn refused(res: (u16, bool, String), what: &str, needle: &str) {
    assert_eq!(res.0, 400, "{what}: {}", res.2);
    assert!(!res.1, "{what}: must not reach the upstream");
    assert!(
        res.2.contains(needle),
        "{what}: page should say {needle:?}: {}",
        res.2
    );
}

fn accepted(res: (u16, bool, String), what: &str) {
    assert_eq!(res.0, 302, "{what}: {}", res.2);
    assert!(res.1, "{what}: goes to the upstream");
}

/// Replaces one raw query parameter's value.
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let (base, q) = url.split_once('?').unwrap();
    let mut parts: Vec<String> = q
        .split('&')
        .filter(|p| !p.starts_with(&format!("{name}=")))
        .map(str::to_string)
        .collect();
    if let Some(v) = value {
        parts.push(format!("{name}={v}"));
    }
    format!("{base}?{}", parts.join("&"))
}

fn raw_param(url: &str, name: &str) -> String {
    url.split_once('?')
        .unwrap()
        .1
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_binding_signatures() {
    let s = start();
    // Accepted: python3-saml and node-saml, each with a fresh request.
    accepted(
        get(
            python_request(&s, "redirect", "rsa-sha256", false)["url"]
                .as_str()
                .unwrap(),
            &s,
        )
        .await,
        "python3-saml",
    );
    accepted(
        get(node_request(&s, "redirect")["url"].as_str().unwrap(), &s).await,
        "node-saml",
    );

    // A full login with a python3-saml signed request, validated by python3-saml itself.
    let made = python_request(&s, "redirect", "rsa-sha256", false);
    let b = Browser::new();
    let out = b
        .login(b.client.get(made["url"].as_str().unwrap()), "agent1")
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let form = out.form.unwrap();
    assert_eq!(form.relay_state.as_deref(), Some("rs&<x>"));
    let e = SpExpect {
        cert_pem: s.env.fg.cert_pem.clone(),
        idp_entity_id: s.env.fg.entity_id.clone(),
        sp_entity_id: SP.into(),
        acs_url: ACS.into(),
        request_id: Some(made["id"].as_str().unwrap().to_string()),
        response_signed: true,
        assertion_signed: false,
    };
    python3_saml(&form.saml_response, &e)
        .expect("python3-saml accepts the response to its signed request");

    // Refused: RelayState changed, SAMLRequest swapped, signature removed, signature garbage,
    // SigAlg changed, another key, SHA-1.
    let url = python_request(&s, "redirect", "rsa-sha256", false)["url"]
        .as_str()
        .unwrap()
        .to_string();
    refused(
        get(&with_param(&url, "RelayState", Some("evil")), &s).await,
        "RelayState changed",
        "signature is not valid",
    );
    let other = python_request(&s, "redirect", "rsa-sha256", false)["url"]
        .as_str()
        .unwrap()
        .to_string();
    let swapped = with_param(&url, "SAMLRequest", Some(&raw_param(&other, "SAMLRequest")));
    refused(
        get(&swapped, &s).await,
        "SAMLRequest swapped",
        "signature is not valid",
    );
    let unsigned = with_param(&with_param(&url, "Signature", None), "SigAlg", None);
    refused(
        get(&unsigned, &s).await,
        "unsigned",
        "must sign its AuthnRequests",
    );
    refused(
        get(&with_param(&url, "Signature", Some("AAAA")), &s).await,
        "garbage signature",
        "signature is not valid",
    );
    let sha512 =
        url::form_urlencoded::byte_serialize(b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha512")
            .collect::<String>();
    refused(
        get(&with_param(&url, "SigAlg", Some(&sha512)), &s).await,
        "SigAlg changed",
        "signature is not valid",
    );
    let by_other = python_request(&s, "redirect", "rsa-sha256", true)["url"]
        .as_str()
        .unwrap()
        .to_string();
    refused(
        get(&by_other, &s).await,
        "another key",
        "signature is not valid",
    );
    let sha1 = python_request(&s, "redirect", "rsa-sha1", false)["url"]
        .as_str()
        .unwrap()
        .to_string();
    refused(get(&sha1, &s).await, "rsa-sha1", "not allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_binding_signatures_and_wrapping() {
    let s = start();
    let py = python_request(&s, "post", "rsa-sha256", false);
    accepted(
        post(py["saml_request"].as_str().unwrap(), None, &s).await,
        "python3-saml POST",
    );
    let nd = node_request(&s, "post");
    accepted(
        post(nd["saml_request"].as_str().unwrap(), Some("rs"), &s).await,
        "node-saml POST (deflated)",
    );

    let xml_of =
        |v: &Value| String::from_utf8(b64_decode(v["saml_request"].as_str().unwrap())).unwrap();
    // Tampered: a signed request whose ACS (or ID) was changed after signing.
    let xml = xml_of(&python_request(&s, "post", "rsa-sha256", false));
    let tampered = xml.replacen("ForceAuthn=", "IsPassive=\"false\" ForceAuthn=", 1);
    let tampered = if tampered == xml {
        xml.replacen("Version=\"2.0\"", "Version=\"2.0\" ProviderName=\"x\"", 1)
    } else {
        tampered
    };
    refused(
        post(&b64(&tampered), None, &s).await,
        "tampered",
        "signature is not valid",
    );
    // Unsigned.
    let unsigned = enhanced_like_generic(&s.env.fg.sso_url(), &unique_id("_"));
    refused(
        post(&b64(&unsigned), None, &s).await,
        "unsigned",
        "must sign its AuthnRequests",
    );
    // Wrapping: an unsigned evil root that carries the signed request inside Extensions.
    let signed = xml_of(&python_request(&s, "post", "rsa-sha256", false));
    let inner = signed.trim_start_matches(|c| c != '<').to_string();
    let inner = if inner.starts_with("<?xml") {
        inner[inner.find("?>").unwrap() + 2..].to_string()
    } else {
        inner
    };
    let evil_id = unique_id("_evil");
    let wrapped = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{evil_id}" Version="2.0" IssueInstant="{}" AssertionConsumerServiceURL="{ACS}"><saml:Issuer>{SP}</saml:Issuer><samlp:Extensions>{inner}</samlp:Extensions></samlp:AuthnRequest>"#,
        now_instant()
    );
    refused(
        post(&b64(&wrapped), None, &s).await,
        "wrapped (unsigned root)",
        "must sign its AuthnRequests",
    );
    // Duplicate IDs: the evil root takes the signed request's ID.
    let signed_id = signed
        .split("ID=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let dup = wrapped.replace(&evil_id, &signed_id);
    let dup_signed = dup.replacen("<saml:Issuer>", "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"></ds:Signature><saml:Issuer>", 1);
    for (what, x) in [
        ("duplicate IDs", dup),
        ("duplicate IDs + empty signature", dup_signed),
    ] {
        let r = post(&b64(&x), None, &s).await;
        assert_eq!(r.0, 400, "{what}: {}", r.2);
        assert!(!r.1, "{what}");
    }
    // Signed by another key.
    let by_other = python_request(&s, "post", "rsa-sha256", true);
    refused(
        post(by_other["saml_request"].as_str().unwrap(), None, &s).await,
        "another key",
        "signature is not valid",
    );
}

fn b64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn enhanced_like_generic(sso: &str, id: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="{ACS}" Destination="{sso}" ID="{id}" IssueInstant="{}" Version="2.0"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{SP}</saml:Issuer></samlp:AuthnRequest>"#,
        now_instant()
    )
}
