//! Shared by `tests/golden.rs` and `tests/c14n_oracle.rs` (not a test target itself): the golden
//! scenarios, the test keys in `certs/`, and the frozen clock the fixtures are built at.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use flexgate::clock::SequentialIds;
use flexgate::saml::ns;
use flexgate::saml::response::{build, ResponseParams, UnsignedResponse};
use flexgate::saml::sign::{SignMode, Signer};
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use std::path::{Path, PathBuf};

pub const IDP_ENTITY_ID: &str = "https://sso.example.com/saml/metadata";
pub const SSO_URL: &str = "https://sso.example.com/saml/sso";
pub const JQ: &str = "JQ0123456789abcdef0123456789abcdef";
pub const AC: &str = "AC0123456789abcdef0123456789abcdef";
/// An AuthnRequest ID as Auth0's SAML connection (Flex Enhanced SSO) writes it.
pub const AUTH0_REQUEST_ID: &str = "_b3f0c2a9e1d84f6a7c5e";
/// An AuthnRequest ID as the OneLogin toolkit (Flex Legacy SSO) writes it.
pub const ONELOGIN_REQUEST_ID: &str = "ONELOGIN_5d1b7a2f8c3e9d0a4b6f1c2e7a8d9b0c3f4e5a6b";
/// An AuthnRequest ID an attacker chose: `request::parse` accepts it (no space, no control).
pub const HOSTILE_REQUEST_ID: &str = "_hostile\"><x a='1'>&amp;";
pub const HOSTILE_NAME: &str =
    "Zoë \"Zed\" <O'Brien> & Co --> ]]>\u{1}\u{8}\u{b}\u{c}\u{1b}\u{7f}\u{fffe}\r\n\tend";
/// `HOSTILE_NAME` as an SP reads it back: characters XML 1.0 cannot carry are dropped.
pub const HOSTILE_NAME_READ: &str = "Zoë \"Zed\" <O'Brien> & Co --> ]]>\u{7f}\r\n\tend";

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap()
}

pub fn authn_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 9, 59, 42).unwrap()
}

pub const LIFETIME_SECS: i64 = 300;
pub const SKEW_SECS: i64 = 60;

pub fn enhanced_acs(region: &str) -> String {
    format!("https://login.flex.{region}.twilio.com/login/callback?connection={JQ}")
}
pub fn enhanced_audience() -> String {
    format!("urn:flex:{JQ}")
}
pub fn legacy_acs() -> String {
    format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2")
}
pub fn legacy_audience() -> String {
    format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata")
}

/// The repository root (tests run with the package root as working directory, but be explicit).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn cert_path(which: &str) -> PathBuf {
    repo().join(format!("certs/test-{which}-cert.pem"))
}

pub fn cert(which: &str) -> X509 {
    X509::from_pem(&read(&cert_path(which))).expect("test cert is PEM")
}

pub fn public_key(which: &str) -> PKey<Public> {
    cert(which)
        .public_key()
        .expect("test cert has a public key")
}

pub fn signer(which: &str) -> Signer {
    let key =
        PKey::private_key_from_pem(&read(&repo().join(format!("certs/test-{which}-key.pem"))))
            .expect("test key is PEM");
    Signer::new(key, &cert(which)).expect("test key matches its cert")
}

/// One golden fixture: everything `response::build` and `Signer::sign_response` are given.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub destination: String,
    pub audience: String,
    pub in_response_to: Option<&'static str>,
    pub name_id: &'static str,
    pub attributes: Vec<(String, Vec<String>)>,
    pub sign: SignMode,
}

fn attrs(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(n, vs)| (n.to_string(), vs.iter().map(|v| v.to_string()).collect()))
        .collect()
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "enhanced-agent",
            destination: enhanced_acs("us1"),
            audience: enhanced_audience(),
            in_response_to: Some(AUTH0_REQUEST_ID),
            name_id: "agent1@example.com",
            attributes: attrs(&[
                ("email", &["agent1@example.com"]),
                ("full_name", &["Ada Agent"]),
                ("image_url", &["https://example.com/avatars/ada.png"]),
                ("roles", &["agent"]),
            ]),
            sign: SignMode::Response,
        },
        Scenario {
            name: "enhanced-supervisor-both",
            destination: enhanced_acs("us1"),
            audience: enhanced_audience(),
            in_response_to: Some(AUTH0_REQUEST_ID),
            name_id: "sam.supervisor@example.com",
            attributes: attrs(&[
                ("email", &["sam.supervisor@example.com"]),
                ("full_name", &["Sam Supervisor"]),
                ("roles", &["agent", "supervisor", "wfo.team_leader"]),
            ]),
            sign: SignMode::Both,
        },
        Scenario {
            name: "legacy-agent",
            destination: legacy_acs(),
            audience: legacy_audience(),
            in_response_to: Some(ONELOGIN_REQUEST_ID),
            name_id: "lee.legacy@example.com",
            attributes: attrs(&[
                ("email", &["lee.legacy@example.com"]),
                ("full_name", &["Lee Legacy"]),
                ("roles", &["agent"]),
                ("department", &["Billing"]),
            ]),
            sign: SignMode::Assertion,
        },
        Scenario {
            name: "idp-initiated",
            destination: enhanced_acs("us1"),
            audience: enhanced_audience(),
            in_response_to: None,
            name_id: "admin@example.com",
            attributes: attrs(&[
                ("email", &["admin@example.com"]),
                ("full_name", &["Ida Admin"]),
                ("roles", &["admin"]),
            ]),
            sign: SignMode::Response,
        },
        Scenario {
            name: "hostile-name",
            destination: enhanced_acs("us1"),
            audience: enhanced_audience(),
            in_response_to: Some(HOSTILE_REQUEST_ID),
            name_id: "zoe+o'brien@example.com",
            attributes: attrs(&[
                ("email", &["zoe+o'brien@example.com"]),
                ("full_name", &[HOSTILE_NAME]),
                ("roles", &["agent", "R&D <lead> \"x\""]),
            ]),
            sign: SignMode::Response,
        },
    ]
}

pub fn scenario(name: &str) -> Scenario {
    scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

impl Scenario {
    pub fn unsigned(&self) -> UnsignedResponse {
        let p = ResponseParams {
            issuer: IDP_ENTITY_ID,
            destination: &self.destination,
            audience: &self.audience,
            in_response_to: self.in_response_to,
            name_id: &self.name_id_owned(),
            name_id_format: ns::NAMEID_EMAIL,
            authn_instant: authn_instant(),
            authn_context_class: ns::AC_PPT,
            attributes: &self.attributes,
            lifetime: Duration::seconds(LIFETIME_SECS),
            skew: Duration::seconds(SKEW_SECS),
        };
        build(&p, now(), &SequentialIds::new("golden"))
    }

    fn name_id_owned(&self) -> String {
        self.name_id.to_string()
    }

    /// The signed XML, as the fixture stores it.
    pub fn signed(&self, signer: &Signer) -> String {
        signer
            .sign_response(&self.unsigned(), self.sign)
            .expect("signing works")
    }

    pub fn sign_str(&self) -> &'static str {
        match self.sign {
            SignMode::Response => "response",
            SignMode::Assertion => "assertion",
            SignMode::Both => "both",
        }
    }

    pub fn fixture_path(&self) -> PathBuf {
        repo().join(format!("fixtures/responses/{}.xml", self.name))
    }

    pub fn expect_path(&self) -> PathBuf {
        repo().join(format!("fixtures/responses/{}.expect.toml", self.name))
    }
}

/// A test peer is missing: fail (never skip) and say how to install it.
pub fn missing_peer(what: &str, err: impl std::fmt::Display) -> ! {
    panic!(
        "{what} is not available ({err}).\n  fix: run scripts/install-test-deps (see tests/peers/README.md); \
         these tests never skip when a peer is missing"
    )
}
