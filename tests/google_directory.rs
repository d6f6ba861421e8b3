//! The Google Cloud Identity groups client (`flexgate::directory::google`) against the stand-in
//! `tests/peers/google_ci.mjs`, which checks the JWT-bearer assertion's RS256 signature with the
//! service account's public key, its iss/aud/scope/iat/exp, the bearer token and the CEL query.

mod common;
use common::google::{service_account_key, trusted_and_other_keys, GoogleCi, SaKey, CLIENT_EMAIL};
use flexgate::directory::google::{
    CloudIdentity, GoogleConfig, GoogleError, Group, ServiceAccount, MAX_GROUPS, MAX_PAGES,
};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

const ADA: &str = "ada@example.com";

fn group(id: &str, name: Option<&str>) -> Group {
    Group {
        id: id.into(),
        name: name.map(str::to_string),
    }
}

/// A stand-in trusting `key`, with `extra` merged into its config.
fn stand_in(key: &SaKey, extra: Value) -> GoogleCi {
    let mut cfg = json!({
        "client_email": CLIENT_EMAIL,
        "public_key": key.public_pem,
        "memberships": {
            ADA: [
                {"id": "flex-agents@example.com", "name": "Flex agents"},
                {"id": "flex-supervisors@example.com", "name": "Flex supervisors", "indirect": true},
                {"id": "all@example.com", "name": "Everyone", "indirect": true},
                {"id": "unnamed@example.com"},
                {"id": "support@example.com", "name": ""},
            ],
            "bob@example.com": [{"id": "flex-agents@example.com", "name": "Flex agents"}],
        },
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    GoogleCi::start(cfg)
}

fn client(key: &SaKey, ci: &GoogleCi) -> CloudIdentity {
    client_with(key, ci, Duration::from_secs(10))
}

fn client_with(key: &SaKey, ci: &GoogleCi, timeout: Duration) -> CloudIdentity {
    let sa = ServiceAccount::from_file(&key.path).expect("the key parses");
    CloudIdentity::new(
        sa,
        GoogleConfig {
            cloud_identity_url: ci.url.clone(),
            token_url: Some(ci.token_url()),
            timeout,
        },
    )
    .expect("client")
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn setup(extra: Value) -> (tempfile::TempDir, SaKey, GoogleCi) {
    let dir = tempfile::tempdir().unwrap();
    let key = service_account_key(
        dir.path(),
        "sa.json",
        CLIENT_EMAIL,
        "https://oauth2.googleapis.com/token",
    );
    let ci = stand_in(&key, extra);
    (dir, key, ci)
}

fn ada_groups() -> Vec<Group> {
    vec![
        group("flex-agents@example.com", Some("Flex agents")),
        group("flex-supervisors@example.com", Some("Flex supervisors")),
        group("all@example.com", Some("Everyone")),
        group("unnamed@example.com", None),
        group("support@example.com", None),
    ]
}

#[tokio::test]
async fn groups_come_across_pages_with_one_token() {
    let (_dir, key, ci) = setup(json!({"page_size": 2}));
    let c = client(&key, &ci);
    let groups = c.transitive_groups(ADA, soon()).await.expect("groups");
    assert_eq!(groups, ada_groups());
    let s = ci.stats().await;
    assert_eq!(s["search_requests"], 3, "5 groups, 2 a page: {s}");
    assert_eq!(s["token_requests"], 1, "{s}");
    let expected_query = format!(
        "member_key_id == '{ADA}' && 'cloudidentity.googleapis.com/groups.discussion_forum' in labels"
    );
    for q in s["queries"].as_array().unwrap() {
        assert_eq!(q, &json!(expected_query));
    }
    // The next login reuses the cached token.
    let bob = c
        .transitive_groups("bob@example.com", soon())
        .await
        .expect("bob");
    assert_eq!(
        bob,
        vec![group("flex-agents@example.com", Some("Flex agents"))]
    );
    let nobody = c
        .transitive_groups("nobody@example.com", soon())
        .await
        .expect("nobody");
    assert!(nobody.is_empty());
    let s = ci.stats().await;
    assert_eq!(s["token_requests"], 1, "the token is reused: {s}");
    assert_eq!(s["search_requests"], 5, "{s}");
}

#[tokio::test]
async fn the_keys_token_uri_is_the_audience_unless_overridden() {
    let dir = tempfile::tempdir().unwrap();
    // A token_uri that goes nowhere (port 9, discard).
    let key = service_account_key(
        dir.path(),
        "sa.json",
        CLIENT_EMAIL,
        "http://127.0.0.1:9/token",
    );
    let ci = stand_in(&key, json!({}));
    // The override wins over the key's token_uri.
    assert_eq!(
        client(&key, &ci)
            .transitive_groups(ADA, soon())
            .await
            .unwrap(),
        ada_groups()
    );
    // Without an override, the key's token_uri is both the endpoint and the JWT's audience.
    let mut v: Value = serde_json::from_slice(&key.json).unwrap();
    v["token_uri"] = json!(ci.token_url());
    let sa = ServiceAccount::from_json(&serde_json::to_vec(&v).unwrap()).expect("parses");
    assert_eq!(sa.token_uri(), Some(ci.token_url().as_str()));
    let c = CloudIdentity::new(
        sa,
        GoogleConfig {
            cloud_identity_url: ci.url.clone(),
            token_url: None,
            timeout: Duration::from_secs(10),
        },
    )
    .unwrap();
    assert_eq!(
        c.transitive_groups(ADA, soon()).await.unwrap(),
        ada_groups()
    );
    assert_eq!(ci.stats().await["tokens_issued"], 2);
    // Without either, the key's unreachable token_uri is used, and says so.
    let sa = ServiceAccount::from_file(&key.path).unwrap();
    let c = CloudIdentity::new(
        sa,
        GoogleConfig {
            cloud_identity_url: ci.url.clone(),
            token_url: None,
            timeout: Duration::from_secs(10),
        },
    )
    .unwrap();
    let err = c.transitive_groups(ADA, soon()).await.unwrap_err();
    assert!(
        matches!(&err, GoogleError::Unreachable { url, .. } if url == "http://127.0.0.1:9/token"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once() {
    let (_dir, key, ci) = setup(json!({"revoke_after_searches": 1}));
    let c = client(&key, &ci);
    assert_eq!(
        c.transitive_groups(ADA, soon()).await.unwrap(),
        ada_groups()
    );
    // The cached token is now revoked: 401, a new token, the search again.
    assert_eq!(
        c.transitive_groups(ADA, soon()).await.unwrap(),
        ada_groups()
    );
    let s = ci.stats().await;
    assert_eq!(s["token_requests"], 2, "{s}");
    assert_eq!(s["search_requests"], 3, "{s}");
}

#[tokio::test]
async fn a_token_refused_twice_is_an_error_not_a_loop() {
    let (_dir, key, ci) = setup(json!({"reject_tokens": true}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(CLIENT_EMAIL) && !text.contains("ya29."),
        "{text}"
    );
    let s = ci.stats().await;
    assert_eq!(s["token_requests"], 2, "{s}");
    assert_eq!(s["search_requests"], 2, "{s}");
}

#[tokio::test]
async fn concurrent_logins_share_one_token_request() {
    let (_dir, key, ci) = setup(json!({"token_delay_ms": 300}));
    let c = std::sync::Arc::new(client(&key, &ci));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.transitive_groups(ADA, soon()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), ada_groups());
    }
    let s = ci.stats().await;
    assert_eq!(s["token_requests"], 1, "{s}");
    assert_eq!(s["search_requests"], 8, "{s}");
}

#[tokio::test]
async fn the_jwt_names_its_key() {
    // The stand-in checks the header's kid against the key's private_key_id.
    let (_dir, key, ci) =
        setup(json!({"private_key_id": "0123456789abcdef0123456789abcdef01234567"}));
    assert_eq!(
        client(&key, &ci)
            .transitive_groups(ADA, soon())
            .await
            .unwrap(),
        ada_groups()
    );
    let (_dir, key, ci) = setup(json!({"private_key_id": "another"}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::TokenRefused { .. }), "{err:?}");
}

#[tokio::test]
async fn absurd_expires_in_neither_panics_nor_caches_forever() {
    for (expires_in, expected_tokens) in [
        (json!(-5), 2),
        (json!(0), 2),
        (json!(1e300), 1),
        (json!(u64::MAX), 1),
        (json!("soon"), 1),
        (json!(null), 1),
    ] {
        let (_dir, key, ci) = setup(json!({"expires_in": expires_in}));
        let c = client(&key, &ci);
        c.transitive_groups(ADA, soon()).await.expect("first");
        c.transitive_groups(ADA, soon()).await.expect("second");
        let s = ci.stats().await;
        assert_eq!(
            s["token_requests"], expected_tokens,
            "expires_in {expires_in}: {s}"
        );
    }
}

#[tokio::test]
async fn a_jwt_signed_by_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, other) = trusted_and_other_keys(dir.path());
    let ci = stand_in(&trusted, json!({}));
    let err = client(&other, &ci)
        .transitive_groups(ADA, soon())
        .await
        .expect_err("a wrong key must not get a token");
    match &err {
        GoogleError::TokenRefused {
            error, description, ..
        } => {
            assert_eq!(error, "invalid_grant");
            assert_eq!(description, "Invalid JWT Signature.");
        }
        other => panic!("expected TokenRefused, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(CLIENT_EMAIL) && text.contains("new JSON key"),
        "{text}"
    );
    assert!(
        !text.contains("eyJ") && !text.contains("PRIVATE KEY"),
        "{text}"
    );
    let s = ci.stats().await;
    assert_eq!(
        s["token_refusals"],
        json!(["Invalid JWT Signature."]),
        "{s}"
    );
    assert_eq!(s["search_requests"], 0, "{s}");
    // The trusted key works against the same stand-in.
    assert_eq!(
        client(&trusted, &ci)
            .transitive_groups(ADA, soon())
            .await
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn an_unknown_service_account_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = service_account_key(
        dir.path(),
        "sa.json",
        "someone-else@x.iam.gserviceaccount.com",
        "https://oauth2.googleapis.com/token",
    );
    let ci = stand_in(&key, json!({}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GoogleError::TokenRefused { description, .. } if description.contains("account not found")),
        "{err:?}"
    );
}

#[tokio::test]
async fn permission_denied_names_the_groups_reader_role() {
    let (_dir, key, ci) = setup(json!({"mode": "forbidden"}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(
        matches!(err, GoogleError::PermissionDenied { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    for needle in [
        CLIENT_EMAIL,
        "Groups Reader",
        "domain-wide delegation",
        "https://www.googleapis.com/auth/cloud-identity.groups.readonly",
        "The caller does not have permission",
    ] {
        assert!(text.contains(needle), "{needle:?} missing: {text}");
    }
}

#[tokio::test]
async fn a_disabled_api_says_to_enable_it() {
    let (_dir, key, ci) = setup(json!({"mode": "service_disabled"}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::ApiDisabled { .. }), "{err:?}");
    assert!(
        err.to_string().contains("Cloud Identity API > Enable"),
        "{err}"
    );
}

#[tokio::test]
async fn throttling_and_outages_are_reported_as_such() {
    let (_dir, key, ci) = setup(json!({"mode": "rate_limited"}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    match &err {
        GoogleError::Throttled {
            status,
            retry_after,
            ..
        } => {
            assert_eq!(*status, 429);
            assert_eq!(*retry_after, Some(30));
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert!(err.to_string().contains("Quota exceeded"), "{err}");
    let (_dir, key, ci) = setup(json!({"mode": "unavailable"}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(
        matches!(err, GoogleError::Throttled { status: 503, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_callers_deadline_cuts_a_slow_search() {
    let (_dir, key, ci) = setup(json!({"search_delay_ms": 5000}));
    let c = client(&key, &ci);
    let t0 = std::time::Instant::now();
    let err = c
        .transitive_groups(ADA, Instant::now() + Duration::from_millis(400))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    assert!(err.to_string().contains("Cloud Identity"), "{err}");
}

#[tokio::test]
async fn the_callers_deadline_cuts_a_slow_token_endpoint() {
    let (_dir, key, ci) = setup(json!({"token_delay_ms": 5000}));
    let c = client(&key, &ci);
    let t0 = std::time::Instant::now();
    let err = c
        .transitive_groups(ADA, Instant::now() + Duration::from_millis(400))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(t0.elapsed() < Duration::from_millis(2000));
    assert!(err.to_string().contains("token endpoint"), "{err}");
}

#[tokio::test]
async fn the_per_call_timeout_applies_within_a_long_deadline() {
    let (_dir, key, ci) = setup(json!({"search_delay_ms": 5000}));
    let c = client_with(&key, &ci, Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let err = c.transitive_groups(ADA, soon()).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(t0.elapsed() < Duration::from_millis(2000));
}

fn many(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"id": format!("g{i}@example.com"), "name": format!("G {i}")}))
            .collect(),
    )
}

#[tokio::test]
async fn paging_stops_at_the_page_cap() {
    let (_dir, key, ci) = setup(json!({"page_size": 1, "memberships": {ADA: many(MAX_PAGES + 5)}}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::TooManyGroups { .. }), "{err:?}");
    let s = ci.stats().await;
    assert_eq!(s["search_requests"], MAX_PAGES, "{s}");
    // Exactly MAX_PAGES pages is still fine.
    let (_dir, key, ci) = setup(json!({"page_size": 1, "memberships": {ADA: many(MAX_PAGES)}}));
    let groups = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap();
    assert_eq!(groups.len(), MAX_PAGES);
    assert_eq!(
        groups[MAX_PAGES - 1],
        group(
            &format!("g{}@example.com", MAX_PAGES - 1),
            Some(&format!("G {}", MAX_PAGES - 1))
        )
    );
}

#[tokio::test]
async fn groups_stop_at_the_group_cap() {
    let (_dir, key, ci) = setup(json!({"memberships": {ADA: many(MAX_GROUPS + 1)}}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::TooManyGroups { .. }), "{err:?}");
    assert!(err.to_string().contains(&MAX_GROUPS.to_string()), "{err}");
    let (_dir, key, ci) = setup(json!({"memberships": {ADA: many(MAX_GROUPS)}}));
    let groups = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap();
    assert_eq!(groups.len(), MAX_GROUPS);
}

#[tokio::test]
async fn a_page_token_that_repeats_is_malformed_not_a_loop() {
    let (_dir, key, ci) = setup(json!({"mode": "loop_token", "page_size": 1}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::Malformed { .. }), "{err:?}");
    let s = ci.stats().await;
    assert_eq!(s["search_requests"], 2, "{s}");
}

#[tokio::test]
async fn a_membership_without_group_key_is_malformed() {
    let (_dir, key, ci) = setup(json!({"mode": "no_group_key"}));
    let err = client(&key, &ci)
        .transitive_groups(ADA, soon())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GoogleError::Malformed { reason, .. } if reason.contains("groupKey.id")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_email_with_a_quote_is_refused_before_any_request() {
    let (_dir, key, ci) = setup(json!({}));
    let c = client(&key, &ci);
    for email in [
        "o'brien@example.com",
        "ada@example.com' || member_key_id == 'x",
        "back\\slash@example.com",
        "quote\"@example.com",
        "",
        "not-an-email",
    ] {
        let err = c.transitive_groups(email, soon()).await.unwrap_err();
        assert!(
            matches!(err, GoogleError::Email { .. }),
            "{email:?}: {err:?}"
        );
    }
    let s = ci.stats().await;
    assert_eq!(s["search_requests"], 0, "{s}");
    assert_eq!(s["token_requests"], 0, "{s}");
    // A plus address is fine and goes into the query as it is.
    c.transitive_groups("ada+flex@example.com", soon())
        .await
        .unwrap();
    let s = ci.stats().await;
    assert_eq!(
        s["queries"][0],
        json!("member_key_id == 'ada+flex@example.com' && 'cloudidentity.googleapis.com/groups.discussion_forum' in labels")
    );
}

#[test]
fn malformed_key_files_are_refused_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let good = service_account_key(
        dir.path(),
        "sa.json",
        CLIENT_EMAIL,
        "https://oauth2.googleapis.com/token",
    );
    let good_json: Value = serde_json::from_slice(&good.json).unwrap();
    let pem = good_json["private_key"].as_str().unwrap().to_string();
    let body_line = pem.lines().nth(1).unwrap().to_string();

    let missing = ServiceAccount::from_file(&dir.path().join("nope.json")).unwrap_err();
    assert!(
        matches!(missing, GoogleError::KeyFile { .. }),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("nope.json"), "{missing}");

    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good_json.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json at all".to_vec(), "not JSON"),
        // Cut inside the private key: the error must not quote the key.
        (good.json[..good.json.len() / 2].to_vec(), "not JSON"),
        (b"[1,2]".to_vec(), "not an object"),
        (
            with(&|v| v["type"] = json!("authorized_user")),
            "authorized_user",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("type");
            }),
            "service_account",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("client_email");
            }),
            "client_email",
        ),
        (with(&|v| v["private_key"] = json!("")), "private_key"),
        (
            with(&|v| v["private_key"] = json!(pem.replace(&body_line, "AAAA"))),
            "not a PEM private key",
        ),
        (
            with(&|v| {
                let ec = openssl::ec::EcKey::generate(
                    &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                        .unwrap(),
                )
                .unwrap();
                let k = openssl::pkey::PKey::from_ec_key(ec).unwrap();
                v["private_key"] =
                    json!(String::from_utf8(k.private_key_to_pem_pkcs8().unwrap()).unwrap());
            }),
            "not an RSA key",
        ),
    ];
    for (i, (bytes, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&path, bytes).unwrap();
        let err = ServiceAccount::from_file(&path).unwrap_err();
        assert!(
            matches!(err, GoogleError::NotServiceAccountKey { .. }),
            "case {i}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(needle),
            "case {i}: {needle:?} missing: {text}"
        );
        assert!(
            !text.contains(&body_line[..20]),
            "case {i} leaks the key: {text}"
        );
        assert!(
            text.contains("Keys > Add key"),
            "case {i} names no fix: {text}"
        );
    }

    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 100_000]).unwrap();
    assert!(matches!(
        ServiceAccount::from_file(&big).unwrap_err(),
        GoogleError::KeyFile { .. }
    ));

    let sa = ServiceAccount::from_file(&good.path).unwrap();
    assert_eq!(sa.client_email(), CLIENT_EMAIL);
    let dbg = format!("{sa:?}");
    assert!(
        !dbg.contains(&body_line[..20]) && dbg.contains("redacted"),
        "{dbg}"
    );
}

#[test]
fn bad_urls_are_refused_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    let key = service_account_key(
        dir.path(),
        "sa.json",
        CLIENT_EMAIL,
        "https://oauth2.googleapis.com/token",
    );
    for (ci_url, token_url) in [
        ("ftp://example.com", None),
        ("not a url", None),
        ("https://cloudidentity.googleapis.com?x=1", None),
        (
            "https://cloudidentity.googleapis.com",
            Some("file:///etc/passwd"),
        ),
    ] {
        let sa = ServiceAccount::from_file(&key.path).unwrap();
        let err = CloudIdentity::new(
            sa,
            GoogleConfig {
                cloud_identity_url: ci_url.into(),
                token_url: token_url.map(str::to_string),
                timeout: Duration::from_secs(5),
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, GoogleError::Config { .. }),
            "{ci_url}: {err:?}"
        );
    }
}
