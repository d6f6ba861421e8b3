//! What tracing adds to one login (issue 20: at most 10 % of a login's CPU), next to the
//! issuance it rides on, in the same run:
//! - `issue_flex_response`: build + digest + sign one Flex response (as in `issuance`);
//! - `trace_per_login`: everything tracing does for one successful SP-initiated login — the
//!   recorder through every stage (AuthnRequest XML, claims, attributes, the signed Response
//!   XML), redaction, the size cap, and both store writes (begin part at the redirect, end
//!   part at the callback, with their index entries) into the in-memory store.
//!
//! `cargo bench --bench trace`. The contract checks run when a trace is shown, not at login.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use flexgate::clock::{Clock, SequentialIds, SystemClock};
use flexgate::config::Config;
use flexgate::saml::response::{build, ResponseParams};
use flexgate::saml::sign::{SignMode, Signer};
use flexgate::store::memory::MemoryStore;
use flexgate::trace::keep::TraceLog;
use flexgate::trace::{Claim, Expected, Kind, Outcome, Recorder, SentResponse, StageName};
use std::hint::black_box;
use std::sync::Arc;

const JQ: &str = "JQ0123456789abcdef0123456789abcdef";

/// An Enhanced AuthnRequest of the usual size (~1 KB).
fn authn_request() -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a5f0c7b2e9d14c3f8b6a1e2d3c4b5a69" Version="2.0" IssueInstant="2026-01-15T10:00:00Z" Destination="https://sso.example.com/saml/sso" AssertionConsumerServiceURL="https://login.flex.us1.twilio.com/login/callback?connection={JQ}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>urn:flex:{JQ}</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress" AllowCreate="true"/><samlp:RequestedAuthnContext Comparison="exact"><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></samlp:RequestedAuthnContext></samlp:AuthnRequest>"#
    )
}

fn begin(log: &TraceLog, clock: Arc<dyn Clock>, xml: &str) -> Recorder {
    let mut rec = log.recorder(clock, Kind::SpInitiated);
    rec.with(|t| t.binding = Some("HTTP-Redirect".into()));
    rec.ok(StageName::RequestReceived, || {
        "HTTP-Redirect: SAMLRequest of 812 bytes".into()
    });
    rec.with(|t| t.authn_request_xml = Some(xml.to_string()));
    rec.with(|t| {
        t.request_id = Some("_a5f0c7b2e9d14c3f8b6a1e2d3c4b5a69".into());
        t.sp = Some("flex".into());
    });
    rec.ok(StageName::RequestChecks, || {
        "AuthnRequest _a5f0 … checked".into()
    });
    for s in [
        "cookie-cookie-cookie-cookie-cookie-cookie-c",
        "state-state-state-state-state-state-state-s",
    ] {
        rec.forbid(s);
    }
    rec.ok(StageName::ToUpstream, || {
        "sent to https://op.example/authorize".into()
    });
    rec.with(|t| t.outcome = Outcome::Upstream);
    rec
}

fn finish(log: &TraceLog, clock: Arc<dyn Clock>, reference: &str, response_xml: &str) -> Recorder {
    let mut rec = log.recorder(clock, Kind::Callback);
    for s in [
        "code-code-code-code-code-code-code-code-co",
        "verifier-verifier-verifier-verifier-verifi",
        "nonce-nonce-nonce-nonce-nonce-nonce-nonce-",
    ] {
        rec.forbid(s);
    }
    rec.continue_login(reference, Kind::SpInitiated, 1);
    rec.ok(StageName::Callback, || "same browser; code".into());
    rec.ok(StageName::Token, || "code exchanged".into());
    rec.ok(StageName::IdTokenChecks, || {
        "verified; sub \"auth0|u1\"".into()
    });
    rec.ok(StageName::MfaDecision, || "default class".into());
    rec.ok(StageName::RolesSource, || "ID token claims".into());
    rec.with(|t| {
        t.claims = [
            "sub",
            "email",
            "name",
            "picture",
            "https://flex.example.com/roles",
        ]
        .iter()
        .map(|c| Claim {
            claim: c.to_string(),
            used_for: "attribute".into(),
            value: serde_json::json!("agent1@example.com"),
        })
        .collect()
    });
    rec.ok(StageName::Mapping, || {
        "NameID \"agent1@example.com\"; 4 attributes".into()
    });
    rec.with(|t| {
        t.email = Some("agent1@example.com".into());
        t.attributes = vec![
            ("email".into(), vec!["agent1@example.com".into()]),
            ("full_name".into(), vec!["Ada Agent".into()]),
            ("roles".into(), vec!["agent".into()]),
        ];
    });
    rec.ok(StageName::Signing, || "Response _r1 signed".into());
    rec.with(|t| {
        t.response_id = Some("_r1".into());
        t.outcome = Outcome::Completed;
        t.response = Some(SentResponse {
            xml: response_xml.to_string(),
            expected: Expected::default(),
            sent_at_ms: 1,
        });
    });
    rec.ok(StageName::ResponseSent, || "posted".into());
    rec
}

fn bench(c: &mut Criterion) {
    let toml = flexgate::demo::demo_config_toml("http://127.0.0.1:9", "demo-client-secret-1");
    let config = Config::from_toml(&toml, std::path::Path::new("<bench>"), |_| None).unwrap();
    let (key, cert) = flexgate::keygen::generate(2048, 30, "bench").expect("keygen");
    let signer = Signer::new(key, &cert).expect("signer");
    let now = Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap();
    let ids = SequentialIds::new("bench");
    let acs = format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}");
    let audience = format!("urn:flex:{JQ}");
    let attributes = vec![
        ("email".to_string(), vec!["agent1@example.com".to_string()]),
        ("full_name".to_string(), vec!["Ada Agent".to_string()]),
        (
            "image_url".to_string(),
            vec!["https://img.example.com/a.png".to_string()],
        ),
        (
            "roles".to_string(),
            vec!["agent".to_string(), "supervisor".to_string()],
        ),
    ];
    let params = ResponseParams {
        issuer: "https://sso.example.com/saml/metadata",
        destination: &acs,
        audience: &audience,
        in_response_to: Some("_a5f0c7b2e9d14c3f8b6a1e2d3c4b5a69"),
        name_id: "agent1@example.com",
        name_id_format: flexgate::saml::ns::NAMEID_EMAIL,
        authn_instant: now,
        authn_context_class: flexgate::saml::ns::AC_PPT,
        attributes: &attributes,
        lifetime: chrono::Duration::seconds(300),
        skew: chrono::Duration::seconds(60),
    };
    let response_xml = signer
        .sign_response(&build(&params, now, &ids), SignMode::Response)
        .unwrap();
    let request_xml = authn_request();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let mut g = c.benchmark_group("trace");
    g.bench_function("issue_flex_response", |b| {
        b.iter(|| {
            let unsigned = build(black_box(&params), now, &ids);
            black_box(signer.sign_response(&unsigned, SignMode::Response).unwrap())
        })
    });
    g.bench_function("trace_per_login", |b| {
        // A store that keeps at most 2,000 traces, as by default: eviction is part of the cost.
        let log = TraceLog::in_store(&config, Arc::new(MemoryStore::new(20_000)));
        b.iter(|| {
            rt.block_on(async {
                let rec = begin(&log, clock.clone(), &request_xml);
                let reference = rec.reference().to_string();
                log.save(rec).await;
                let rec = finish(&log, clock.clone(), &reference, &response_xml);
                log.save(black_box(rec)).await;
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
