//! AuthnRequest decoding, parsing and validation, as `/saml/sso` runs them, on arbitrary bytes.
//!
//! The first byte picks the entry point (HTTP-Redirect, HTTP-POST, or the XML straight into the
//! parser); the rest is the input. Nothing may panic, sizes must stay within the limits, and a
//! request `validate` accepts must really satisfy the policy.
#![no_main]

use chrono::{DateTime, Duration, Utc};
use flexgate::saml::request::{self, Limits, Policy};
use libfuzzer_sys::fuzz_target;

const SSO_URL: &str = "https://sso.example.com/saml/sso";
const ACS: &str =
    "https://login.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    // Small limits, so the caps are reached often.
    let limits = Limits {
        max_encoded: 8 * 1024,
        max_xml: 16 * 1024,
        max_relay_state: 80,
    };
    let _ = request::check_relay_state(Some(input), &limits);
    let xml = match mode % 3 {
        0 => match request::decode_redirect(input, &limits) {
            Ok(x) => x,
            Err(_) => return,
        },
        1 => match request::decode_post(input, &limits) {
            Ok(x) => x,
            Err(_) => return,
        },
        _ => input.to_string(),
    };
    if mode % 3 != 2 {
        assert!(xml.len() <= limits.max_xml, "decoded past the limit");
    }
    let Ok(req) = request::parse(&xml) else {
        return;
    };
    assert!(!req.issuer.is_empty(), "parsed a request without an Issuer");
    assert!(!req.id.is_empty(), "parsed a request without an ID");
    let now: DateTime<Utc> = "2026-01-15T10:00:00Z".parse().unwrap();
    let policy = Policy {
        sso_url: SSO_URL,
        now,
        max_age: Duration::seconds(300),
        skew: Duration::seconds(60),
    };
    if request::validate(&req, ACS, &policy).is_ok() {
        if let Some(acs) = &req.acs_url {
            assert_eq!(acs, ACS, "accepted a foreign ACS");
        }
        if let Some(d) = &req.destination {
            assert_eq!(
                d.split(['?', '#']).next().unwrap(),
                SSO_URL,
                "accepted a foreign Destination"
            );
        }
        assert!(
            req.issue_instant <= now + Duration::seconds(60),
            "accepted a future request"
        );
        assert!(
            req.issue_instant >= now - Duration::seconds(360),
            "accepted a stale request"
        );
    }
});
