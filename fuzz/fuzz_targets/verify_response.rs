//! `verify_response` on arbitrary XML with a fixed trusted key (certs/test-idp-cert.pem).
//!
//! The first byte picks which golden fixture's expectations apply; the rest is the XML. Nothing
//! may panic, and whatever the verifier accepts must be exactly what one of the signed golden
//! fixtures says: the oracle for signature wrapping and comment/c14n tricks, since the fuzzer
//! cannot forge an RSA signature.
#![no_main]

use chrono::{DateTime, Duration, Utc};
use flexgate::saml::verify::{verify_response, AlgPolicy, Expectations, VerifiedResponse};
use libfuzzer_sys::fuzz_target;
use openssl::pkey::{PKey, Public};
use std::sync::OnceLock;

const JQ_ACS: &str =
    "https://login.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef";
const JQ_AUD: &str = "urn:flex:JQ0123456789abcdef0123456789abcdef";
const AC_ACS: &str = "https://iam.twilio.com/v1/Accounts/AC0123456789abcdef0123456789abcdef/saml2";
const AC_AUD: &str =
    "https://iam.twilio.com/v1/Accounts/AC0123456789abcdef0123456789abcdef/saml2/metadata";

/// (fixture, recipient, audience, in_response_to)
const CASES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        include_str!("../../fixtures/responses/enhanced-agent.xml"),
        JQ_ACS,
        JQ_AUD,
        Some("_b3f0c2a9e1d84f6a7c5e"),
    ),
    (
        include_str!("../../fixtures/responses/enhanced-supervisor-both.xml"),
        JQ_ACS,
        JQ_AUD,
        Some("_b3f0c2a9e1d84f6a7c5e"),
    ),
    (
        include_str!("../../fixtures/responses/hostile-name.xml"),
        JQ_ACS,
        JQ_AUD,
        Some("_hostile\"><x a='1'>&amp;"),
    ),
    (
        include_str!("../../fixtures/responses/idp-initiated.xml"),
        JQ_ACS,
        JQ_AUD,
        None,
    ),
    (
        include_str!("../../fixtures/responses/legacy-agent.xml"),
        AC_ACS,
        AC_AUD,
        Some("ONELOGIN_5d1b7a2f8c3e9d0a4b6f1c2e7a8d9b0c3f4e5a6b"),
    ),
];

struct Fixed {
    key: PKey<Public>,
    now: DateTime<Utc>,
    /// What each fixture verifies to, untouched.
    golden: Vec<VerifiedResponse>,
}

fn expectations(i: usize, now: DateTime<Utc>) -> Expectations<'static> {
    let (_, recipient, audience, irt) = CASES[i];
    Expectations {
        audience,
        recipient,
        in_response_to: irt,
        issuer: Some("https://sso.example.com/saml/metadata"),
        now,
        skew: Duration::seconds(60),
        require_response_signature: false,
        require_assertion_signature: false,
        policy: AlgPolicy::default(),
    }
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let key = flexgate::config::keys::public_key_from_cert_pem(include_bytes!(
            "../../certs/test-idp-cert.pem"
        ))
        .expect("test cert");
        let now: DateTime<Utc> = "2026-01-15T10:00:00Z".parse().unwrap();
        let golden = (0..CASES.len())
            .map(|i| {
                verify_response(
                    CASES[i].0,
                    std::slice::from_ref(&key),
                    &expectations(i, now),
                )
                .unwrap_or_else(|e| panic!("golden fixture {i} does not verify: {e}"))
            })
            .collect();
        Fixed { key, now, golden }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(xml) = std::str::from_utf8(rest) else {
        return;
    };
    let f = fixed();
    let i = sel as usize % CASES.len();
    if let Ok(v) = verify_response(xml, std::slice::from_ref(&f.key), &expectations(i, f.now)) {
        let g = &f.golden[i];
        assert_eq!(v.name_id, g.name_id, "accepted a NameID nobody signed");
        assert_eq!(
            v.attributes, g.attributes,
            "accepted attributes nobody signed"
        );
        assert_eq!(
            v.audiences, g.audiences,
            "accepted an Audience nobody signed"
        );
        assert_eq!(v.destination, g.destination);
        assert_eq!(v.in_response_to, g.in_response_to);
        assert_eq!(v.issuer, g.issuer);
        assert_eq!(v.not_on_or_after, g.not_on_or_after);
        assert_eq!(v.not_before, g.not_before);
    }
});
