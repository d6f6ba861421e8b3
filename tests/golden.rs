//! Golden fixtures (`fixtures/responses/`): signed Responses built at a frozen clock with
//! sequential IDs and the committed test key (`certs/`). RSA PKCS#1 v1.5 is deterministic, so
//! the whole signed XML is compared byte for byte. `FLEXGATE_BLESS=1` rewrites the XML (and
//! writes a missing `.expect.toml`); see `fixtures/README.md`.
//!
//! Every fixture is also checked three independent ways:
//! - flexgate's own verifier yields exactly the content of `<name>.expect.toml`;
//! - xmlsec1 accepts its signature(s) with `certs/test-idp-cert.pem` only, and refuses them with
//!   `certs/test-other-cert.pem` and on a tampered copy;
//! - hand-added QA cases in `fixtures/qa/` are verified against their `.expect.toml` too.
//!
//! Also here: insta snapshots of the HTML pages, the IdP metadata and one unsigned Response
//! (`tests/snapshots/`).

mod fixtures_tool;

use fixtures_tool as fx;
use flexgate::qa::Expect;
use flexgate::saml::verify::{verify_response, Expectations, VerifiedResponse, VerifyError};
use openssl::pkey::{PKey, Public};
use std::path::{Path, PathBuf};
use std::process::Command;

// ------------------------------------------------------------------ the .expect.toml format
// (the format itself lives in the library: `flexgate::qa`, which `flexgate verify --expect` uses)

fn parse_expect(path: &Path) -> Expect {
    let text = String::from_utf8(fx::read(path)).expect("expect file is UTF-8");
    Expect::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn now_of(e: &Expect) -> chrono::DateTime<chrono::Utc> {
    e.now()
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(chrono::Utc::now)
}

fn expectations(e: &Expect) -> Expectations<'_> {
    e.expectations(now_of(e))
}

fn actual(v: &VerifiedResponse, shape: &Expect) -> Expect {
    Expect::actual(v, shape).unwrap_or_else(|e| panic!("{e}"))
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\t' => o.push_str("\\t"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The expect file a scenario must have, written from the generator's inputs (not from the
/// verifier's output), so the comparison with the verifier is not circular.
fn expect_text(s: &fx::Scenario) -> String {
    let read_back = |v: &str| {
        if v == fx::HOSTILE_NAME {
            fx::HOSTILE_NAME_READ.to_string()
        } else {
            v.to_string()
        }
    };
    let mut t = format!(
        "# Golden fixture fixtures/responses/{name}.xml (format: fixtures/README.md).\n\
         # Verify by hand:\n\
         #   flexgate verify --cert certs/test-idp-cert.pem --expect fixtures/responses/{name}.expect.toml \\\n\
         #     fixtures/responses/{name}.xml\n\
         issuer = {issuer}\n\
         recipient = {recipient}\n\
         audience = {audience}\n",
        name = s.name,
        issuer = toml_str(fx::IDP_ENTITY_ID),
        recipient = toml_str(&s.destination),
        audience = toml_str(&s.audience),
    );
    match s.in_response_to {
        Some(irt) => t.push_str(&format!("in_response_to = {}\n", toml_str(irt))),
        None => t.push_str("# no in_response_to: IdP-initiated, the Response must not carry one\n"),
    }
    t.push_str(&format!(
        "signed = {}\nnow = {}\n\n[subject]\nname_id = {}\nname_id_format = {}\n\n",
        toml_str(s.sign_str()),
        toml_str(&flexgate::clock::saml_time(fx::now())),
        toml_str(s.name_id),
        toml_str(flexgate::saml::ns::NAMEID_EMAIL),
    ));
    t.push_str(&format!(
        "[authn]\ninstant = {}\ncontext_class = {}\nsession_index = {}\n\n",
        toml_str(&flexgate::clock::saml_time(fx::authn_instant())),
        toml_str(flexgate::saml::ns::AC_PPT),
        toml_str("_golden0003"),
    ));
    t.push_str(&format!(
        "[conditions]\nnot_before = {}\nnot_on_or_after = {}\n\n[attributes]\n",
        toml_str(&flexgate::clock::saml_time(
            fx::now() - chrono::Duration::seconds(fx::SKEW_SECS)
        )),
        toml_str(&flexgate::clock::saml_time(
            fx::now() + chrono::Duration::seconds(fx::LIFETIME_SECS)
        )),
    ));
    for (name, values) in &s.attributes {
        let vs: Vec<String> = values.iter().map(|v| toml_str(&read_back(v))).collect();
        t.push_str(&format!("{name} = [{}]\n", vs.join(", ")));
    }
    t
}

fn bless() -> bool {
    std::env::var("FLEXGATE_BLESS").is_ok_and(|v| v == "1")
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn verify_with(xml: &str, key: &PKey<Public>, e: &Expect) -> Result<VerifiedResponse, VerifyError> {
    verify_response(xml, std::slice::from_ref(key), &expectations(e))
}

// ------------------------------------------------------------------ golden fixtures

#[test]
fn golden_fixtures_are_byte_identical_and_verify_to_their_expect_files() {
    let signer = fx::signer("idp");
    let mut failures = Vec::new();
    for s in fx::scenarios() {
        let xml = s.signed(&signer);
        let path = s.fixture_path();
        let expect_path = s.expect_path();
        if bless() {
            std::fs::write(&path, &xml).unwrap();
            eprintln!("blessed {}", path.display());
            if !expect_path.exists() {
                std::fs::write(&expect_path, expect_text(&s)).unwrap();
                eprintln!("wrote {} (review it)", expect_path.display());
            }
        }
        let stored = fx::read(&path);
        if stored != xml.as_bytes() {
            let at = first_difference(&stored, xml.as_bytes());
            let ctx = |b: &[u8]| {
                String::from_utf8_lossy(&b[at.saturating_sub(60)..(at + 60).min(b.len())])
                    .into_owned()
            };
            failures.push(format!(
                "{}: differs from what flexgate builds now, first at byte {at}\n  stored: …{}…\n  built:  …{}…\n  \
                 if the change is intended, run FLEXGATE_BLESS=1 cargo test --test golden and review the diff",
                path.display(),
                ctx(&stored),
                ctx(xml.as_bytes())
            ));
            continue;
        }

        // The expect file says what the generator was given...
        let expect = parse_expect(&expect_path);
        let from_inputs: Expect = toml::from_str(&expect_text(&s)).unwrap();
        assert_eq!(
            expect,
            from_inputs,
            "{} no longer matches the scenario in tests/fixtures_tool/mod.rs",
            expect_path.display()
        );
        // ...and flexgate's verifier reads exactly that back from the signed XML.
        let v = verify_with(&xml, &fx::public_key("idp"), &expect)
            .unwrap_or_else(|e| panic!("{}: verify_response refused it: {e}", path.display()));
        assert_eq!(actual(&v, &expect), expect, "{}", path.display());
        assert!(
            !xml.contains('\u{1}') && !xml.contains('\u{fffe}'),
            "characters XML cannot carry must be dropped"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn no_stale_files_in_fixtures_responses() {
    let names: Vec<String> = fx::scenarios().iter().map(|s| s.name.to_string()).collect();
    for entry in std::fs::read_dir(fx::repo().join("fixtures/responses")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let stem = file
            .strip_suffix(".expect.toml")
            .or_else(|| file.strip_suffix(".xml"))
            .unwrap_or_else(|| panic!("fixtures/responses/{file}: unexpected file"));
        assert!(
            names.iter().any(|n| n == stem),
            "fixtures/responses/{file} has no scenario in tests/fixtures_tool/mod.rs; \
             hand-made cases belong in fixtures/qa/"
        );
    }
}

#[test]
fn fixtures_fail_with_the_wrong_cert_when_tampered_and_at_the_wrong_time() {
    let signer = fx::signer("idp");
    for s in fx::scenarios() {
        let xml = s.signed(&signer);
        // From the scenario, not the file: the blessing test may be rewriting the file meanwhile.
        let expect: Expect = toml::from_str(&expect_text(&s)).unwrap();
        assert_eq!(
            verify_with(&xml, &fx::public_key("other"), &expect),
            Err(VerifyError::BadSignature),
            "{}: another key must not verify",
            s.name
        );
        let tampered = tamper(&xml, s.name_id);
        assert_eq!(
            verify_with(&tampered, &fx::public_key("idp"), &expect),
            Err(VerifyError::Digest),
            "{}: a changed NameID must break the digest",
            s.name
        );
        let mut late = expect.clone();
        late.now = Some("2026-01-15T10:05:00Z".into());
        assert!(
            matches!(
                verify_with(&xml, &fx::public_key("idp"), &late),
                Err(VerifyError::Time(_))
            ),
            "{}: expired at now + lifetime",
            s.name
        );
        let mut wrong_irt = expect.clone();
        wrong_irt.in_response_to = match &expect.in_response_to {
            Some(_) => None,
            None => Some("_someone_else".into()),
        };
        assert!(
            matches!(
                verify_with(&xml, &fx::public_key("idp"), &wrong_irt),
                Err(VerifyError::Mismatch { .. }) | Err(VerifyError::Missing(_))
            ),
            "{}: InResponseTo must match exactly",
            s.name
        );
    }
}

fn tamper(xml: &str, name_id: &str) -> String {
    let mut escaped = String::new();
    flexgate::saml::xml::push_text(&mut escaped, name_id);
    let from = format!(">{escaped}</saml:NameID>");
    assert!(xml.contains(&from), "NameID not found");
    xml.replacen(&from, ">mallory@example.com</saml:NameID>", 1)
}

// ------------------------------------------------------------------ xmlsec1

#[derive(Clone, Copy, Debug)]
enum SigOf {
    Response,
    Assertion,
}

fn xmlsec1_verify(xml_file: &Path, cert: &Path, which: SigOf) -> (bool, String) {
    let (id_attr, xpath) = match which {
        SigOf::Response => (
            "urn:oasis:names:tc:SAML:2.0:protocol:Response",
            "/*[local-name()='Response']/*[local-name()='Signature']",
        ),
        SigOf::Assertion => (
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            "//*[local-name()='Assertion']/*[local-name()='Signature']",
        ),
    };
    let out = Command::new("xmlsec1")
        .args(["--verify", "--id-attr:ID", id_attr])
        .args(["--enabled-key-data", "raw-x509-cert", "--pubkey-cert-pem"])
        .arg(cert)
        .args(["--node-xpath", xpath])
        .arg(xml_file)
        .output()
        .unwrap_or_else(|e| fx::missing_peer("xmlsec1", e));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn xmlsec1_accepts_fixtures_with_the_test_cert_only() {
    match Command::new("xmlsec1").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => fx::missing_peer("xmlsec1", format!("exit {}", o.status)),
        Err(e) => fx::missing_peer("xmlsec1", e),
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = fx::signer("idp");
    for s in fx::scenarios() {
        let xml = s.signed(&signer);
        let good: PathBuf = dir.path().join(format!("{}.xml", s.name));
        std::fs::write(&good, &xml).unwrap();
        let bad = dir.path().join(format!("{}-tampered.xml", s.name));
        std::fs::write(&bad, tamper(&xml, s.name_id)).unwrap();
        let mut sigs = Vec::new();
        if s.sign.signs_response() {
            sigs.push(SigOf::Response);
        }
        if s.sign.signs_assertion() {
            sigs.push(SigOf::Assertion);
        }
        for which in sigs {
            let (ok, out) = xmlsec1_verify(&good, &fx::cert_path("idp"), which);
            assert!(ok, "{} {which:?}: xmlsec1 refused it:\n{out}", s.name);
            assert!(out.contains("OK"), "{}: {out}", s.name);
            let (ok, out) = xmlsec1_verify(&good, &fx::cert_path("other"), which);
            assert!(
                !ok,
                "{} {which:?}: xmlsec1 accepted another cert:\n{out}",
                s.name
            );
            let (ok, out) = xmlsec1_verify(&bad, &fx::cert_path("idp"), which);
            assert!(
                !ok,
                "{} {which:?}: xmlsec1 accepted a tampered copy:\n{out}",
                s.name
            );
        }
        // The stored fixture is what xmlsec1 saw.
        if !bless() {
            assert_eq!(fx::read(&s.fixture_path()), xml.as_bytes(), "{}", s.name);
        }
    }
}

// ------------------------------------------------------------------ fixtures/qa

/// Hand-added QA cases: `fixtures/qa/<name>.xml` (or `.b64`) + `<name>.expect.toml`, verified
/// with `<name>.cert.pem` if present, else `certs/test-idp-cert.pem`.
#[test]
fn qa_cases_verify_to_their_expect_files() {
    let dir = fx::repo().join("fixtures/qa");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(name) = file.strip_suffix(".expect.toml") else {
            continue;
        };
        let xml_path = dir.join(format!("{name}.xml"));
        let b64_path = dir.join(format!("{name}.b64"));
        let xml = if xml_path.exists() {
            String::from_utf8(fx::read(&xml_path)).expect("UTF-8")
        } else if b64_path.exists() {
            let raw = flexgate::saml::verify::decode_b64(
                std::str::from_utf8(&fx::read(&b64_path)).unwrap(),
            )
            .unwrap_or_else(|| panic!("{}: not base64", b64_path.display()));
            String::from_utf8(raw).expect("UTF-8")
        } else {
            panic!("{}: no {name}.xml or {name}.b64 next to it", path.display());
        };
        let cert_path = dir.join(format!("{name}.cert.pem"));
        let cert_path = if cert_path.exists() {
            cert_path
        } else {
            fx::cert_path("idp")
        };
        let key = openssl::x509::X509::from_pem(&fx::read(&cert_path))
            .unwrap()
            .public_key()
            .unwrap();
        let expect = parse_expect(&path);
        let v = verify_with(&xml, &key, &expect)
            .unwrap_or_else(|e| panic!("fixtures/qa/{name}: verify_response refused it: {e}"));
        assert_eq!(actual(&v, &expect), expect, "fixtures/qa/{name}");
        n += 1;
    }
    assert!(
        n > 0,
        "fixtures/qa has no case (the example case is missing?)"
    );
}

// ------------------------------------------------------------------ insta snapshots

const HOSTILE_RELAY_STATE: &str =
    "\"><script>alert(1)</script><a href='javascript:x'>&amp;&#x27;</a> é ]]> \u{2028}";

#[test]
fn snapshot_post_form_html_with_hostile_relay_state() {
    let html = flexgate::web::pages::post_form_html(
        &fx::enhanced_acs("us1"),
        "PHNhbWxwOlJlc3BvbnNlIC8++/=",
        Some(HOSTILE_RELAY_STATE),
    );
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("'javascript"));
    assert!(html.contains(
        "value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;a href=&#39;javascript:x&#39;&gt;&amp;amp;&amp;#x27;&lt;/a&gt; é ]]&gt; \u{2028}\""
    ));
    insta::assert_snapshot!("post_form_hostile_relay_state", html);
    let without = flexgate::web::pages::post_form_html(&fx::legacy_acs(), "eA==", None);
    assert!(!without.contains("RelayState"));
}

#[test]
fn snapshot_error_page_html() {
    let page = flexgate::web::pages::ErrorPage {
        status: axum::http::StatusCode::FORBIDDEN,
        title: "Your account has no Flex role",
        message: "The account <zoe@example.com> & \"friends\" has no Flex role (claim app_metadata.flex.roles: only values Flex does not know: owner).".into(),
        hint: "Ask your administrator to set app_metadata.flex.roles to agent, supervisor or admin.".into(),
        reference: "ref-<0001>",
    };
    let html = flexgate::web::pages::error_page_html(&page);
    assert!(html.contains("&lt;zoe@example.com&gt; &amp; &quot;friends&quot;"));
    assert!(html.contains("HTTP 403"));
    insta::assert_snapshot!("error_page_no_role", html);
}

#[test]
fn snapshot_idp_metadata() {
    use base64::Engine;
    let b64 = |which: &str| {
        base64::engine::general_purpose::STANDARD.encode(fx::cert(which).to_der().unwrap())
    };
    let xml = flexgate::saml::metadata::idp_metadata(
        fx::IDP_ENTITY_ID,
        fx::SSO_URL,
        &[b64("idp"), b64("other")],
    );
    let doc = roxmltree::Document::parse(&xml).expect("metadata is well-formed XML");
    assert_eq!(
        doc.root_element().attribute("entityID"),
        Some(fx::IDP_ENTITY_ID)
    );
    insta::assert_snapshot!("idp_metadata_with_next_cert", xml);
}

#[test]
fn snapshot_unsigned_response() {
    let r = fx::scenario("enhanced-agent").unsigned();
    assert_eq!(r.response_id, "_golden0001");
    assert_eq!(r.assertion_id, "_golden0002");
    assert!(r.xml[r.assertion.clone()].starts_with("<saml:Assertion "));
    assert!(r.xml[r.assertion.clone()].ends_with("</saml:Assertion>"));
    assert!(r.xml[..r.response_signature_at].ends_with("</saml:Issuer>"));
    assert!(r.xml[..r.assertion_signature_at].ends_with("</saml:Issuer>"));
    insta::assert_snapshot!("unsigned_response_enhanced_agent", r.xml);
}

/// CVE-2017-11427 class: a comment inside signed text does not change the exclusive-c14n
/// digest, so it must not change the value an SP reads either.
#[test]
fn comment_injected_into_signed_text_does_not_truncate_it() {
    let mut s = fx::scenario("enhanced-agent");
    s.name_id = "admin@example.com.evil.example";
    s.attributes = vec![
        (
            "email".into(),
            vec!["admin@example.com.evil.example".into()],
        ),
        ("roles".into(), vec!["agent".into()]),
    ];
    let xml = s.signed(&fx::signer("idp"));
    let injected = xml
        .replace(
            ">admin@example.com.evil.example</saml:NameID>",
            ">admin@example.com<!---->.evil.example</saml:NameID>",
        )
        .replace(
            "<saml:AttributeValue>admin@example.com.evil.example<",
            "<saml:AttributeValue>admin@example.com<!---->.evil.example<",
        );
    assert_ne!(injected, xml);
    let expect: Expect = toml::from_str(&expect_text(&fx::scenario("enhanced-agent"))).unwrap();
    match verify_with(&injected, &fx::public_key("idp"), &expect) {
        Err(_) => {}
        Ok(v) => {
            assert_eq!(
                v.name_id, "admin@example.com.evil.example",
                "NameID truncated"
            );
            assert_eq!(
                v.attributes[0].1,
                vec!["admin@example.com.evil.example".to_string()],
                "attribute value truncated"
            );
        }
    }
}
