//! Response issuance against the physical floor, measured in the same run:
//! - `openssl_rsa2048_sign`: one raw RSA-2048 PKCS#1 v1.5 SHA-256 signature (the floor);
//! - `issue_flex_response`: build + digest + sign one Flex response (`sign = response`);
//! - `authn_request_decode_validate`: base64 + inflate + parse + validate an Enhanced AuthnRequest;
//! - `issue_flex_response_pkcs11_softhsm2`: the same issuance with the same key imported into a
//!   SoftHSM2 token, signed through PKCS#11 (skipped, with a note, where SoftHSM2 is missing).
//!
//! `cargo bench --bench issuance`; the ratio issuance/floor is the figure BENCHMARKS.md quotes.

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use flexgate::clock::SequentialIds;
use flexgate::saml::request::{self, Limits, Policy};
use flexgate::saml::response::{build, ResponseParams};
use flexgate::saml::sign::{SignMode, Signer};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use std::hint::black_box;
use std::io::Write;

const JQ: &str = "JQ0123456789abcdef0123456789abcdef";

fn bench(c: &mut Criterion) {
    let (key, cert) = flexgate::keygen::generate(2048, 30, "bench").expect("keygen");
    let raw_key = PKey::private_key_from_pem(&key.private_key_to_pem_pkcs8().unwrap()).unwrap();
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

    let mut g = c.benchmark_group("issuance");
    g.bench_function("openssl_rsa2048_sign", |b| {
        let data = [7u8; 32];
        b.iter(|| {
            let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &raw_key).unwrap();
            s.update(black_box(&data)).unwrap();
            black_box(s.sign_to_vec().unwrap())
        })
    });
    g.bench_function("issue_flex_response", |b| {
        b.iter(|| {
            let unsigned = build(black_box(&params), now, &ids);
            black_box(signer.sign_response(&unsigned, SignMode::Response).unwrap())
        })
    });
    if let Some(token_signer) = softhsm2_signer(&raw_key, &cert) {
        g.bench_function("issue_flex_response_pkcs11_softhsm2", |b| {
            b.iter(|| {
                let unsigned = build(black_box(&params), now, &ids);
                black_box(
                    token_signer
                        .sign_response(&unsigned, SignMode::Response)
                        .unwrap(),
                )
            })
        });
    }
    g.finish();

    let xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="{acs}" Destination="https://sso.example.com/saml/sso" ID="_a5f0c7b2e9d14c3f8b6a1e2d3c4b5a69" IssueInstant="2026-01-15T10:00:00Z" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Version="2.0"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{audience}</saml:Issuer></samlp:AuthnRequest>"#
    );
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes()).unwrap();
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(e.finish().unwrap());
    let limits = Limits::default();
    let policy = Policy {
        sso_url: "https://sso.example.com/saml/sso",
        now,
        max_age: chrono::Duration::seconds(300),
        skew: chrono::Duration::seconds(60),
    };
    c.bench_function("authn_request_decode_validate", |b| {
        b.iter(|| {
            let xml = request::decode_redirect(black_box(&encoded), &limits).unwrap();
            let req = request::parse(&xml).unwrap();
            request::validate(&req, &acs, &policy).unwrap();
            black_box(req)
        })
    });
}

const SOFTHSM2: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// `key` imported into a fresh SoftHSM2 token (its own token directory), as a token signer.
fn softhsm2_signer(
    key: &PKey<openssl::pkey::Private>,
    cert: &openssl::x509::X509,
) -> Option<Signer> {
    if !std::path::Path::new(SOFTHSM2).exists() {
        eprintln!("issue_flex_response_pkcs11_softhsm2 skipped: SoftHSM2 is missing (scripts/install-test-deps)");
        return None;
    }
    let dir = tempfile::tempdir().ok()?.keep();
    std::fs::create_dir(dir.join("tokens")).ok()?;
    let conf = dir.join("softhsm2.conf");
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
        dir.join("tokens").display()
    );
    std::fs::write(&conf, text).ok()?;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pem = dir.join("key.pem");
    std::fs::write(&pem, key.private_key_to_pem_pkcs8().ok()?).ok()?;
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("softhsm2-util")
            .args(args)
            .output()
            .map(|o| o.status.success());
        assert!(matches!(ok, Ok(true)), "softhsm2-util {args:?} failed");
    };
    run(&[
        "--init-token",
        "--free",
        "--label",
        "bench",
        "--so-pin",
        "so-1",
        "--pin",
        "1234",
    ]);
    run(&[
        "--import",
        pem.to_str()?,
        "--token",
        "bench",
        "--label",
        "idp",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    std::fs::remove_file(&pem).ok()?;
    let uri = flexgate::pkcs11::Pkcs11Uri::parse(&format!(
        "pkcs11:token=bench;object=idp?module-path={SOFTHSM2}&pin-value=1234"
    ))
    .ok()?;
    let token_key = flexgate::pkcs11::TokenKey::open(uri, 4, false).expect("open the SoftHSM2 key");
    Some(Signer::with_token(std::sync::Arc::new(token_key), cert).expect("token signer"))
}

criterion_group!(benches, bench);
criterion_main!(benches);
