//! The OIDC side of the security floor, against a hostile OpenID provider.
//!
//! `Hostile` is an in-process OP (axum on 127.0.0.1:0) whose discovery document, JWKS, token
//! endpoint and userinfo the test controls, and which counts what flexgate fetches. Each rule of
//! the floor gets one test that drives flexgate's real client (`flexgate::oidc::Upstream`) into
//! it and asserts the exact refusal. A few of them are then driven through the whole HTTP flow
//! (`flexgate serve` + a browser) to show what the person sees: a 502 page and no SAMLResponse.
//! The last tests use the real `oidc-provider` to check the upstream's error responses
//! (`access_denied` on an aborted interaction, `login_required`) become pages a person understands.

mod common;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use flexgate::config::{Secret, UpstreamConfig};
use flexgate::oidc::id_token::IdTokenError;
use flexgate::oidc::{OidcError, Upstream};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "flexgate";
const CLIENT_SECRET: &str = "hostile-op-client-secret";
const NONCE: &str = "n-0123456789abcdef";

// ------------------------------------------------------------------ signing

/// An RSA signing key with its key id.
struct Key {
    kid: String,
    pkey: PKey<Private>,
}

impl Key {
    fn new(kid: &str) -> Key {
        Key {
            kid: kid.to_string(),
            pkey: PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey"),
        }
    }

    /// The public JWK, with `alg` when given.
    fn jwk(&self, alg: Option<&str>) -> Value {
        let rsa = self.pkey.rsa().expect("rsa");
        let mut j = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        });
        if let Some(a) = alg {
            j["alg"] = json!(a);
        }
        j
    }

    fn public_pem(&self) -> Vec<u8> {
        self.pkey.public_key_to_pem().expect("pem")
    }

    /// A token signed RS256 with this key, `kid` = this key's id.
    fn rs256(&self, claims: &Value) -> String {
        jwt(
            &json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"}),
            claims,
            Sig::Rsa(&self.pkey, MessageDigest::sha256()),
        )
    }
}

enum Sig<'a> {
    Rsa(&'a PKey<Private>, MessageDigest),
    Hmac(&'a [u8], MessageDigest),
    None,
}

fn b64j(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

/// A compact JWS, signed however the test says.
fn jwt(header: &Value, claims: &Value, sig: Sig<'_>) -> String {
    let input = format!("{}.{}", b64j(header), b64j(claims));
    let signature = match sig {
        Sig::Rsa(k, md) => {
            let mut s = Signer::new(md, k).expect("signer");
            s.update(input.as_bytes()).expect("sign");
            s.sign_to_vec().expect("sign")
        }
        Sig::Hmac(secret, md) => {
            let k = PKey::hmac(secret).expect("hmac key");
            let mut s = Signer::new(md, &k).expect("signer");
            s.update(input.as_bytes()).expect("sign");
            s.sign_to_vec().expect("sign")
        }
        Sig::None => Vec::new(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims a well-behaved OP would put in the ID token.
fn good_claims(issuer: &str, nonce: &str) -> Value {
    let t = now();
    json!({
        "iss": issuer,
        "sub": "agent1",
        "aud": CLIENT_ID,
        "exp": t + 300,
        "iat": t,
        "auth_time": t - 5,
        "nonce": nonce,
        "email": "agent1@example.com",
        "name": "Ada Agent",
        ROLES_CLAIM: ["agent"],
    })
}

fn with(mut v: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(v.as_object_mut().expect("object"));
    v
}

// ------------------------------------------------------------------ the hostile OP

/// What `/token` answers.
#[derive(Clone)]
struct TokenReply {
    status: u16,
    body: String,
    delay: Duration,
}

impl TokenReply {
    fn ok(body: Value) -> TokenReply {
        TokenReply {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    fn id_token(t: String) -> TokenReply {
        Self::ok(
            json!({"access_token": "hostile-at", "token_type": "Bearer", "expires_in": 60, "id_token": t}),
        )
    }
}

/// What the token closure may use: the issuer and the nonce the last /authorize carried.
struct TokenCtx<'a> {
    issuer: &'a str,
    nonce: Option<String>,
}

type TokenFn = Arc<dyn Fn(&TokenCtx<'_>) -> TokenReply + Send + Sync>;

struct OpState {
    issuer: String,
    discovery_patch: Mutex<Value>,
    discovery_status: Mutex<Option<u16>>,
    discovery_fetches: AtomicUsize,
    jwks: Mutex<Value>,
    jwks_fetches: AtomicUsize,
    jwks_delay: Mutex<Duration>,
    token: Mutex<TokenFn>,
    token_requests: AtomicUsize,
    userinfo: Mutex<Value>,
    last_nonce: Mutex<Option<String>>,
    last_challenge: Mutex<Option<String>>,
    last_verifier: Mutex<Option<String>>,
}

struct Hostile {
    issuer: String,
    st: Arc<OpState>,
    /// The key the OP publishes and signs with.
    key: Key,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn discovery(State(st): State<Arc<OpState>>) -> Response {
    st.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(s) = *st.discovery_status.lock() {
        return (StatusCode::from_u16(s).unwrap(), "unavailable").into_response();
    }
    let i = &st.issuer;
    let mut doc = json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
    });
    if let Some(p) = st.discovery_patch.lock().as_object() {
        for (k, v) in p {
            doc[k] = v.clone();
        }
    }
    Json(doc).into_response()
}

async fn jwks(State(st): State<Arc<OpState>>) -> Json<Value> {
    st.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *st.jwks_delay.lock();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Json(st.jwks.lock().clone())
}

/// Sends the browser straight back with a code, as an OP with a live session would.
async fn authorize(
    State(st): State<Arc<OpState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    *st.last_nonce.lock() = q.get("nonce").cloned();
    *st.last_challenge.lock() = q.get("code_challenge").cloned();
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    ser.append_pair("code", "hostile-code");
    if let Some(s) = q.get("state") {
        ser.append_pair("state", s);
    }
    let loc = format!(
        "{}?{}",
        q.get("redirect_uri").cloned().unwrap_or_default(),
        ser.finish()
    );
    (StatusCode::FOUND, [(header::LOCATION, loc)]).into_response()
}

async fn token(
    State(st): State<Arc<OpState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    st.token_requests.fetch_add(1, Ordering::SeqCst);
    *st.last_verifier.lock() = form.get("code_verifier").cloned();
    let f = st.token.lock().clone();
    let reply = f(&TokenCtx {
        issuer: &st.issuer,
        nonce: st.last_nonce.lock().clone(),
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

async fn userinfo(State(st): State<Arc<OpState>>, headers: HeaderMap) -> Response {
    if headers.get(header::AUTHORIZATION).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(st.userinfo.lock().clone()).into_response()
}

impl Hostile {
    async fn start() -> Hostile {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener)
    }

    /// Serves on `listener`; `issuer` is `http://127.0.0.1:PORT` (no trailing slash).
    fn serve(listener: tokio::net::TcpListener) -> Hostile {
        let port = listener.local_addr().expect("addr").port();
        let issuer = format!("http://127.0.0.1:{port}");
        let key = Key::new("key-1");
        let good = key.jwk(Some("RS256"));
        let signer = Key {
            kid: key.kid.clone(),
            pkey: key.pkey.clone(),
        };
        let st = Arc::new(OpState {
            issuer: issuer.clone(),
            discovery_patch: Mutex::new(json!({})),
            discovery_status: Mutex::new(None),
            discovery_fetches: AtomicUsize::new(0),
            jwks: Mutex::new(json!({ "keys": [good] })),
            jwks_fetches: AtomicUsize::new(0),
            jwks_delay: Mutex::new(Duration::ZERO),
            token: Mutex::new(Arc::new(move |c: &TokenCtx<'_>| {
                let nonce = c.nonce.clone().unwrap_or_else(|| NONCE.to_string());
                TokenReply::id_token(signer.rs256(&good_claims(c.issuer, &nonce)))
            })),
            token_requests: AtomicUsize::new(0),
            userinfo: Mutex::new(json!({"sub": "agent1", "email": "agent1@example.com"})),
            last_nonce: Mutex::new(None),
            last_challenge: Mutex::new(None),
            last_verifier: Mutex::new(None),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(st.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hostile {
            issuer,
            st,
            key,
            server,
        }
    }

    fn set_token(&self, f: impl Fn(&TokenCtx<'_>) -> TokenReply + Send + Sync + 'static) {
        *self.st.token.lock() = Arc::new(f);
    }

    /// The ID token `/token` hands out: `claims(issuer, nonce)` signed by `sign`.
    fn set_id_token(&self, make: impl Fn(&str, &str) -> String + Send + Sync + 'static) {
        self.set_token(move |c| {
            let nonce = c.nonce.clone().unwrap_or_else(|| NONCE.to_string());
            TokenReply::id_token(make(c.issuer, &nonce))
        });
    }

    fn set_jwks(&self, keys: Vec<Value>) {
        *self.st.jwks.lock() = json!({ "keys": keys });
    }

    fn patch_discovery(&self, patch: Value) {
        *self.st.discovery_patch.lock() = patch;
    }

    fn jwks_fetches(&self) -> usize {
        self.st.jwks_fetches.load(Ordering::SeqCst)
    }

    fn discovery_fetches(&self) -> usize {
        self.st.discovery_fetches.load(Ordering::SeqCst)
    }

    fn upstream(&self) -> Upstream {
        upstream_for(&self.issuer, Duration::from_secs(2))
    }

    fn claims(&self) -> Value {
        good_claims(&self.issuer, NONCE)
    }
}

fn upstream_for(issuer: &str, timeout: Duration) -> Upstream {
    Upstream::new(
        UpstreamConfig {
            issuer: issuer.to_string(),
            client_id: CLIENT_ID.to_string(),
            client_secret: Secret::new(CLIENT_SECRET),
            connection: None,
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            token_auth_method: None,
            timeout,
            userinfo: true,
            management: None,
            provider: flexgate::provider::fallback(),
            provider_reason: "test".into(),
            hosted_domain: None,
            graph: None,
            google: None,
        },
        "http://127.0.0.1:9/oidc/callback".into(),
    )
    .expect("upstream client")
}

/// The ID token error inside `e`, or a panic that shows `e`.
fn id_err(e: OidcError) -> IdTokenError {
    match e {
        OidcError::IdToken(i) => i,
        other => panic!("expected an ID token error, got {other:?}"),
    }
}

async fn refused(op: &Hostile, token: &str) -> IdTokenError {
    let up = op.upstream();
    id_err(
        up.verify_id_token(token, NONCE)
            .await
            .expect_err("the token must be refused"),
    )
}

// ------------------------------------------------------------------ control

#[tokio::test]
async fn a_well_formed_token_is_accepted() {
    // The control: everything below fails for the one reason it names, not for a harness bug.
    let op = Hostile::start().await;
    let up = op.upstream();
    let claims = up
        .verify_id_token(&op.key.rs256(&op.claims()), NONCE)
        .await
        .expect("a good token verifies");
    assert_eq!(claims["sub"], "agent1");
    let auth = up
        .authenticate("code", "verifier", NONCE)
        .await
        .expect("the code exchange works");
    assert_eq!(auth.claims["email"], "agent1@example.com");
    assert_eq!(
        op.st.last_verifier.lock().as_deref(),
        Some("verifier"),
        "the PKCE verifier is sent"
    );
}

// ------------------------------------------------------------------ algorithms

#[tokio::test]
async fn alg_none_is_refused() {
    let op = Hostile::start().await;
    for alg in ["none", "None", "NONE"] {
        let t = jwt(
            &json!({"alg": alg, "kid": op.key.kid}),
            &op.claims(),
            Sig::None,
        );
        assert_eq!(
            refused(&op, &t).await,
            IdTokenError::Algorithm(alg.to_string()),
            "{alg}"
        );
    }
    // Without the trailing dot, and with a signature glued on: still no.
    let t = jwt(&json!({"alg": "none"}), &op.claims(), Sig::None);
    assert!(matches!(
        refused(&op, t.trim_end_matches('.')).await,
        IdTokenError::Algorithm(_) | IdTokenError::Malformed(_)
    ));
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    // The confusion attack: the OP's RSA public key (public!) used as an HMAC secret. A verifier
    // that lets the token choose the algorithm would accept it.
    let op = Hostile::start().await;
    let rsa = op.key.pkey.rsa().unwrap();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI PEM", op.key.public_pem()),
        ("PKCS#1 PEM", rsa.public_key_to_pem_pkcs1().unwrap()),
        ("SPKI DER", op.key.pkey.public_key_to_der().unwrap()),
        ("PKCS#1 DER", rsa.public_key_to_der_pkcs1().unwrap()),
        ("JWK n", rsa.n().to_vec()),
    ];
    for (what, secret) in &secrets {
        for (alg, md) in [
            ("HS256", MessageDigest::sha256()),
            ("HS384", MessageDigest::sha384()),
            ("HS512", MessageDigest::sha512()),
        ] {
            let t = jwt(
                &json!({"alg": alg, "kid": op.key.kid, "typ": "JWT"}),
                &op.claims(),
                Sig::Hmac(secret, md),
            );
            assert_eq!(
                refused(&op, &t).await,
                IdTokenError::Algorithm(alg.to_string()),
                "{alg} with the {what}"
            );
        }
    }
    // Same with a JWKS whose key carries no `alg` (nothing pins the algorithm but the allow-list).
    op.set_jwks(vec![op.key.jwk(None)]);
    let t = jwt(
        &json!({"alg": "HS256", "kid": op.key.kid}),
        &op.claims(),
        Sig::Hmac(&op.key.public_pem(), MessageDigest::sha256()),
    );
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::Algorithm("HS256".into())
    );
}

#[tokio::test]
async fn rs256_token_for_a_key_published_as_rs384_is_refused() {
    let op = Hostile::start().await;
    op.set_jwks(vec![op.key.jwk(Some("RS384"))]);
    let e = refused(&op, &op.key.rs256(&op.claims())).await;
    assert!(
        matches!(&e, IdTokenError::Algorithm(m) if m.contains("RS256") && m.contains("RS384")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_key_not_in_the_jwks_under_a_known_kid_fails_the_signature() {
    let op = Hostile::start().await;
    let forger = Key::new(&op.key.kid); // same kid, different key
    assert_eq!(
        refused(&op, &forger.rs256(&op.claims())).await,
        IdTokenError::Signature
    );
    // A tampered payload under the real signature: same answer.
    let good = op.key.rs256(&op.claims());
    let parts: Vec<&str> = good.split('.').collect();
    let evil = b64j(&with(op.claims(), |c| {
        c.insert("email".into(), json!("ceo@example.com"));
    }));
    let t = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(refused(&op, &t).await, IdTokenError::Signature);
}

// ------------------------------------------------------------------ JWKS refresh

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_once_per_interval_and_rotation_works() {
    let op = Hostile::start().await;
    let up = op.upstream();
    up.warm_up().await.expect("warm up");
    assert_eq!(op.jwks_fetches(), 1, "warm-up fetches the JWKS once");

    // Within the interval (default 60 s) an unknown kid triggers no fetch at all.
    let stranger = Key::new("not-published-1");
    let e = up
        .verify_id_token(&stranger.rs256(&op.claims()), NONCE)
        .await
        .unwrap_err();
    assert_eq!(
        id_err(e),
        IdTokenError::UnknownKey("not-published-1".into())
    );
    assert_eq!(op.jwks_fetches(), 1, "no refetch inside the interval");

    // After the interval: exactly one refetch, then refused.
    let interval = Duration::from_millis(400);
    up.set_jwks_min_refetch(interval);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let e = up
        .verify_id_token(&stranger.rs256(&op.claims()), NONCE)
        .await
        .unwrap_err();
    assert_eq!(
        id_err(e),
        IdTokenError::UnknownKey("not-published-1".into())
    );
    assert_eq!(op.jwks_fetches(), 2, "one refetch for the unknown kid");

    // A second unknown kid (and a flood of them) within the interval: no further fetch.
    for i in 0..20 {
        let k = Key {
            kid: format!("flood-{i}"),
            pkey: stranger.pkey.clone(),
        };
        let e = up
            .verify_id_token(&k.rs256(&op.claims()), NONCE)
            .await
            .unwrap_err();
        assert_eq!(id_err(e), IdTokenError::UnknownKey(format!("flood-{i}")));
    }
    assert_eq!(
        op.jwks_fetches(),
        2,
        "unknown kids within the interval fetch nothing"
    );

    // Rotation: the OP publishes a new key and signs with it; after the interval it is picked up.
    let rotated = Key::new("key-2");
    op.set_jwks(vec![op.key.jwk(Some("RS256")), rotated.jwk(Some("RS256"))]);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let claims = up
        .verify_id_token(&rotated.rs256(&op.claims()), NONCE)
        .await
        .expect("the rotated key is picked up");
    assert_eq!(claims["sub"], "agent1");
    assert_eq!(op.jwks_fetches(), 3);
    // ... and the old key still works, without a fetch.
    up.verify_id_token(&op.key.rs256(&op.claims()), NONCE)
        .await
        .expect("the old key is still published");
    assert_eq!(op.jwks_fetches(), 3);
}

#[tokio::test]
async fn keys_embedded_in_the_token_header_are_ignored() {
    // jwk / jku / x5u in the header would let the signer pick its own key.
    let op = Hostile::start().await;
    let attacker = Key::new("attacker");
    let header = json!({
        "alg": "RS256",
        "kid": "attacker",
        "jwk": attacker.jwk(Some("RS256")),
        "jku": format!("{}/jwks", op.issuer),
        "x5u": "https://evil.example.com/cert.pem",
    });
    let t = jwt(
        &header,
        &op.claims(),
        Sig::Rsa(&attacker.pkey, MessageDigest::sha256()),
    );
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::UnknownKey("attacker".into())
    );
    // The embedded key under the real key's kid: the real key decides, the signature fails.
    let header = json!({"alg": "RS256", "kid": op.key.kid, "jwk": attacker.jwk(Some("RS256"))});
    let t = jwt(
        &header,
        &op.claims(),
        Sig::Rsa(&attacker.pkey, MessageDigest::sha256()),
    );
    assert_eq!(refused(&op, &t).await, IdTokenError::Signature);
}

#[tokio::test]
async fn an_algorithm_of_another_key_family_is_refused() {
    // ES256 / PS256 / EdDSA headers against the OP's RSA key (published without `alg`).
    let op = Hostile::start().await;
    op.set_jwks(vec![op.key.jwk(None)]);
    for alg in ["ES256", "ES384", "EdDSA"] {
        let t = jwt(
            &json!({"alg": alg, "kid": op.key.kid}),
            &op.claims(),
            Sig::Rsa(&op.key.pkey, MessageDigest::sha256()),
        );
        let e = refused(&op, &t).await;
        assert!(
            matches!(
                e,
                IdTokenError::Algorithm(_) | IdTokenError::Malformed(_) | IdTokenError::Signature
            ),
            "{alg}: {e:?}"
        );
    }
    // PS256 header over a PKCS#1 v1.5 signature: the signature check decides.
    let t = jwt(
        &json!({"alg": "PS256", "kid": op.key.kid}),
        &op.claims(),
        Sig::Rsa(&op.key.pkey, MessageDigest::sha256()),
    );
    assert_eq!(refused(&op, &t).await, IdTokenError::Signature);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_do_not_queue_behind_a_slow_jwks_endpoint() {
    // The JWKS endpoint hangs; every login must still end within about one timeout, not
    // wait for each earlier login's fetch in turn (that would be a hung request).
    let op = Hostile::start().await;
    *op.st.jwks_delay.lock() = Duration::from_secs(10);
    let up = Arc::new(upstream_for(&op.issuer, Duration::from_secs(1)));
    up.metadata().await.unwrap();
    let token = op.key.rs256(&op.claims());
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let up = up.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let r = up.verify_id_token(&token, NONCE).await;
                (r.map(|_| ()), t0.elapsed())
            })
        })
        .collect();
    for t in tasks {
        let (r, took) = t.await.unwrap();
        let e = r.expect_err("no key could be fetched");
        assert!(e.is_timeout(), "{e:?}");
        assert!(
            took < Duration::from_millis(2500),
            "a login waited {took:?}"
        );
    }
    assert!(op.jwks_fetches() <= 2, "{} fetches", op.jwks_fetches());
}

// ------------------------------------------------------------------ claims

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let op = Hostile::start().await;
    for iss in [
        "https://evil.example.com".to_string(),
        format!("{}/", op.issuer),
    ] {
        let t = op.key.rs256(&with(op.claims(), |c| {
            c.insert("iss".into(), json!(iss));
        }));
        assert_eq!(
            refused(&op, &t).await,
            IdTokenError::Issuer {
                expected: op.issuer.clone(),
                found: iss.clone()
            }
        );
    }
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let op = Hostile::start().await;
    for aud in [
        json!("other-client"),
        json!(["other", "another"]),
        json!([]),
    ] {
        let t = op.key.rs256(&with(op.claims(), |c| {
            c.insert("aud".into(), aud.clone());
        }));
        assert_eq!(refused(&op, &t).await, IdTokenError::Audience, "{aud}");
    }
}

#[tokio::test]
async fn audience_array_with_another_client_needs_azp() {
    let op = Hostile::start().await;
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("aud".into(), json!([CLIENT_ID, "other-client"]));
    }));
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::MissingClaim("azp".into())
    );
    // With azp = this client it is fine.
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("aud".into(), json!([CLIENT_ID, "other-client"]));
        c.insert("azp".into(), json!(CLIENT_ID));
    }));
    op.upstream()
        .verify_id_token(&t, NONCE)
        .await
        .expect("aud array with azp = client");
}

#[tokio::test]
async fn wrong_azp_is_refused() {
    let op = Hostile::start().await;
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("aud".into(), json!([CLIENT_ID, "other-client"]));
        c.insert("azp".into(), json!("other-client"));
    }));
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::AuthorizedParty("other-client".into())
    );
}

#[tokio::test]
async fn expired_token_is_refused() {
    let op = Hostile::start().await;
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("iat".into(), json!(now() - 3600));
        c.insert("exp".into(), json!(now() - 120)); // past the 60 s leeway
    }));
    assert_eq!(refused(&op, &t).await, IdTokenError::Expired);
}

#[tokio::test]
async fn token_issued_in_the_future_is_refused() {
    let op = Hostile::start().await;
    let iat = now() + 3600;
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("iat".into(), json!(iat));
        c.insert("exp".into(), json!(iat + 300));
    }));
    assert_eq!(refused(&op, &t).await, IdTokenError::IssuedInFuture(iat));
}

#[tokio::test]
async fn missing_or_wrong_nonce_is_refused() {
    let op = Hostile::start().await;
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.remove("nonce");
    }));
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::MissingClaim("nonce".into())
    );
    for n in ["another-login's-nonce", "", "n-0123456789abcdeF"] {
        let t = op.key.rs256(&with(op.claims(), |c| {
            c.insert("nonce".into(), json!(n));
        }));
        assert_eq!(refused(&op, &t).await, IdTokenError::Nonce, "{n:?}");
    }
    // A nonce that is not a string is no nonce.
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("nonce".into(), json!(42));
    }));
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::MissingClaim("nonce".into())
    );
}

#[tokio::test]
async fn missing_sub_is_refused() {
    let op = Hostile::start().await;
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.remove("sub");
    }));
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::MissingClaim("sub".into())
    );
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("sub".into(), json!(""));
    }));
    assert_eq!(
        refused(&op, &t).await,
        IdTokenError::MissingClaim("sub".into())
    );
}

// ------------------------------------------------------------------ token endpoint

async fn exchange_err(op: &Hostile, timeout: Duration) -> OidcError {
    upstream_for(&op.issuer, timeout)
        .authenticate("hostile-code", "verifier", NONCE)
        .await
        .expect_err("the code exchange must fail")
}

#[tokio::test]
async fn token_endpoint_garbage_is_refused() {
    let op = Hostile::start().await;
    op.set_token(|_| TokenReply {
        status: 200,
        body: "<html>not json".into(),
        delay: Duration::ZERO,
    });
    let e = exchange_err(&op, Duration::from_secs(2)).await;
    assert!(
        matches!(&e, OidcError::Garbage { url, .. } if url.ends_with("/token")),
        "{e:?}"
    );
}

#[tokio::test]
async fn token_endpoint_http_500_is_a_status_error() {
    let op = Hostile::start().await;
    op.set_token(|_| TokenReply {
        status: 500,
        body: "Internal Server Error".into(),
        delay: Duration::ZERO,
    });
    let e = exchange_err(&op, Duration::from_secs(2)).await;
    assert!(matches!(e, OidcError::Status { status: 500, .. }), "{e:?}");
    assert!(!e.is_timeout());
}

#[tokio::test]
async fn token_endpoint_oauth_error_is_reported() {
    let op = Hostile::start().await;
    op.set_token(|_| TokenReply {
        status: 400,
        body: json!({"error": "invalid_grant", "error_description": "grant request is invalid"})
            .to_string(),
        delay: Duration::ZERO,
    });
    let e = exchange_err(&op, Duration::from_secs(2)).await;
    match e {
        OidcError::Token { error, description } => {
            assert_eq!(error, "invalid_grant");
            assert_eq!(description.as_deref(), Some("grant request is invalid"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn token_response_without_id_token_is_refused() {
    let op = Hostile::start().await;
    op.set_token(|_| TokenReply::ok(json!({"access_token": "at", "token_type": "Bearer"})));
    let e = exchange_err(&op, Duration::from_secs(2)).await;
    assert!(
        matches!(&e, OidcError::Garbage { reason, .. } if reason.contains("id_token")),
        "{e:?}"
    );
    // An id_token that is not a string is garbage too, not a panic.
    op.set_token(|_| TokenReply::ok(json!({"access_token": "at", "id_token": {"alg": "none"}})));
    let e = exchange_err(&op, Duration::from_secs(2)).await;
    assert!(matches!(e, OidcError::Garbage { .. }), "{e:?}");
}

#[tokio::test]
async fn slow_token_endpoint_times_out() {
    let op = Hostile::start().await;
    op.set_token(|c| TokenReply {
        delay: Duration::from_secs(4),
        ..TokenReply::id_token(Key::new("k").rs256(&good_claims(c.issuer, NONCE)))
    });
    let up = upstream_for(&op.issuer, Duration::from_secs(1));
    up.metadata().await.expect("discovery is fast");
    let t0 = Instant::now();
    let e = up
        .authenticate("hostile-code", "verifier", NONCE)
        .await
        .expect_err("must time out");
    assert!(e.is_timeout(), "{e:?}");
    assert!(
        matches!(&e, OidcError::Timeout { url, secs: 1 } if url.ends_with("/token")),
        "{e:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "gave up after {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn userinfo_for_another_subject_is_refused() {
    let op = Hostile::start().await;
    *op.st.userinfo.lock() =
        json!({"sub": "admin1", "email": "admin@example.com", ROLES_CLAIM: ["admin"]});
    let e = exchange_err(&op, Duration::from_secs(2)).await;
    match e {
        OidcError::UserinfoSubject { expected, found } => {
            assert_eq!(expected, "agent1");
            assert_eq!(found, "admin1");
        }
        other => panic!("{other:?}"),
    }
    // No sub at all in userinfo: refused the same way.
    *op.st.userinfo.lock() = json!({"email": "admin@example.com"});
    let e = exchange_err(&op, Duration::from_secs(2)).await;
    assert!(matches!(e, OidcError::UserinfoSubject { .. }), "{e:?}");
}

// ------------------------------------------------------------------ discovery

#[tokio::test]
async fn discovery_issuer_mismatch_is_refused() {
    let op = Hostile::start().await;
    let slash = format!("{}/", op.issuer);
    op.patch_discovery(json!({ "issuer": slash }));
    match op.upstream().metadata().await.unwrap_err() {
        OidcError::IssuerMismatch { configured, found } => {
            assert_eq!(configured, op.issuer);
            assert_eq!(found, slash);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn discovery_with_an_http_endpoint_off_loopback_is_refused() {
    let op = Hostile::start().await;
    for (field, url) in [
        ("token_endpoint", "http://op.example.com/token"),
        ("jwks_uri", "http://192.0.2.7/jwks"),
        (
            "authorization_endpoint",
            "http://127.0.0.1.evil.example/authorize",
        ),
        ("userinfo_endpoint", "http://op.example.com/userinfo"),
    ] {
        op.patch_discovery(json!({ field: url }));
        match op.upstream().metadata().await.unwrap_err() {
            OidcError::InsecureEndpoint { field: f, url: u } => {
                assert_eq!((f, u.as_str()), (field, url));
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn discovery_without_s256_pkce_is_refused() {
    let op = Hostile::start().await;
    op.patch_discovery(json!({"code_challenge_methods_supported": ["plain"]}));
    match op.upstream().metadata().await.unwrap_err() {
        OidcError::NoPkce(m) => assert_eq!(m, "plain"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn discovery_recovers_when_the_upstream_comes_up_later() {
    // Nothing listens on the port at first.
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut up = upstream_for(&issuer, Duration::from_secs(1));
    up.retry_after = Duration::from_millis(300);
    let e = up.metadata().await.unwrap_err();
    assert!(matches!(e, OidcError::Unreachable { .. }), "{e:?}");
    assert!(up.readiness().is_err());

    // The provider comes up, but answers 503 for a while.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind the port");
    let op = Hostile::serve(listener);
    assert_eq!(op.issuer, issuer);
    *op.st.discovery_status.lock() = Some(503);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let e = up.metadata().await.unwrap_err();
    assert!(matches!(e, OidcError::Status { status: 503, .. }), "{e:?}");
    assert_eq!(op.discovery_fetches(), 1);
    // Within retry_after: the cached failure, no new fetch (a dead upstream is not hammered).
    assert!(up.metadata().await.is_err());
    assert_eq!(op.discovery_fetches(), 1);

    // Healthy again: picked up on the next call after retry_after.
    *op.st.discovery_status.lock() = None;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let meta = up.metadata().await.expect("recovered");
    assert_eq!(meta.issuer, issuer);
    assert_eq!(op.discovery_fetches(), 2);
    assert!(up.readiness().is_ok());
    // Cached from now on.
    up.metadata().await.unwrap();
    assert_eq!(op.discovery_fetches(), 2);
}

#[tokio::test]
async fn the_injected_clock_and_skew_decide_token_expiry() {
    let op = Hostile::start().await;
    let exp = now() - 3600; // an hour past, by the real clock
    let t = op.key.rs256(&with(op.claims(), |c| {
        c.insert("iat".into(), json!(exp - 300));
        c.insert("exp".into(), json!(exp));
    }));
    let at = |secs: i64| -> Arc<dyn flexgate::clock::Clock> {
        Arc::new(flexgate::clock::FixedClock(
            chrono::DateTime::from_timestamp(secs, 0).expect("a time"),
        ))
    };
    let up = |clock, skew_secs| {
        op.upstream()
            .with_clock(clock, Duration::from_secs(skew_secs))
    };
    // Before exp by the injected clock: valid, whatever the real time.
    let claims = up(at(exp - 10), 0)
        .verify_id_token(&t, NONCE)
        .await
        .expect("not expired at the injected time");
    assert_eq!(claims["sub"], "agent1");
    // 5 s after exp: idp.clock_skew_secs decides.
    assert!(up(at(exp + 5), 10).verify_id_token(&t, NONCE).await.is_ok());
    let e = up(at(exp + 5), 2).verify_id_token(&t, NONCE).await;
    assert_eq!(id_err(e.unwrap_err()), IdTokenError::Expired);
    // Issued "in the future" relative to a clock set back.
    let e = up(at(exp - 400), 30).verify_id_token(&t, NONCE).await;
    assert_eq!(
        id_err(e.unwrap_err()),
        IdTokenError::IssuedInFuture(exp - 300)
    );
}

// ------------------------------------------------------------------ through flexgate serve

/// flexgate's log writer is non-blocking: a line may land just after the response.
async fn wait_for_log(fg: &Flexgate, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = fg.log_text();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn sso_redirect(fg: &Flexgate) -> String {
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &fg.sso_url());
    format!(
        "{}?SAMLRequest={}&RelayState=r",
        fg.sso_url(),
        urlencode(&deflate_b64(&xml))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_end_on_a_502_page_without_an_assertion() {
    let op = Hostile::start().await;
    let issuer = op.issuer.clone();
    let fg = tokio::task::block_in_place(|| {
        Flexgate::start(
            free_port(),
            &issuer,
            CLIENT_SECRET,
            &default_sps(),
            "timeout_secs = 2",
        )
    });

    // Control: a well-formed token logs the person in, with PKCE S256 done right.
    let b = Browser::new();
    let out = b.login(b.client.get(sso_redirect(&fg)), "agent1").await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(
        out.form.is_some(),
        "the control login yields a SAMLResponse"
    );
    let challenge = op.st.last_challenge.lock().clone().expect("challenge");
    let verifier = op.st.last_verifier.lock().clone().expect("verifier");
    assert_eq!(
        challenge,
        URL_SAFE_NO_PAD.encode(openssl::sha::sha256(verifier.as_bytes()))
    );

    let pem = op.key.public_pem();
    let kid = op.key.kid.clone();
    let k1 = Key {
        kid: kid.clone(),
        pkey: op.key.pkey.clone(),
    };
    let k2 = Key {
        kid: kid.clone(),
        pkey: op.key.pkey.clone(),
    };
    type Case = (
        &'static str,
        Box<dyn Fn(&str, &str) -> String + Send + Sync>,
    );
    let cases: Vec<Case> = vec![
        (
            "alg none",
            Box::new(move |iss, nonce| {
                jwt(
                    &json!({"alg": "none", "kid": kid}),
                    &good_claims(iss, nonce),
                    Sig::None,
                )
            }),
        ),
        (
            "HS256 with the public key",
            Box::new(move |iss, nonce| {
                jwt(
                    &json!({"alg": "HS256", "kid": k1.kid}),
                    &good_claims(iss, nonce),
                    Sig::Hmac(&pem, MessageDigest::sha256()),
                )
            }),
        ),
        (
            "wrong nonce",
            Box::new(move |iss, _| k2.rs256(&good_claims(iss, "a-nonce-from-another-login"))),
        ),
    ];
    for (what, make) in cases {
        op.set_id_token(make);
        let b = Browser::new();
        let out = b.login(b.client.get(sso_redirect(&fg)), "agent1").await;
        assert_eq!(out.status, 502, "{what}: {}", out.body);
        assert!(out.form.is_none(), "{what}: no form");
        assert!(
            !out.body.contains("SAMLResponse"),
            "{what}: no SAMLResponse"
        );
        assert!(
            out.body.contains("The sign-in service is unavailable"),
            "{what}: {}",
            out.body
        );
        assert!(
            out.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{what}"
        );
    }
    // Garbage from the token endpoint: also a 502 page.
    op.set_token(|_| TokenReply {
        status: 200,
        body: "{\"id_token\": 12".into(),
        delay: Duration::ZERO,
    });
    let b = Browser::new();
    let out = b.login(b.client.get(sso_redirect(&fg)), "agent1").await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert!(!out.body.contains("SAMLResponse"));

    let log = wait_for_log(&fg, "ID token was refused").await;
    assert!(log.contains("ID token was refused"), "{log}");
    assert!(log.contains("upstream_error"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_hostile_token_endpoint_ends_on_a_504_page() {
    let op = Hostile::start().await;
    op.set_token(|_| TokenReply {
        status: 200,
        body: "{}".into(),
        delay: Duration::from_secs(5),
    });
    let issuer = op.issuer.clone();
    let fg = tokio::task::block_in_place(|| {
        Flexgate::start(
            free_port(),
            &issuer,
            CLIENT_SECRET,
            &default_sps(),
            "timeout_secs = 1",
        )
    });
    let b = Browser::new();
    let t0 = Instant::now();
    let out = b.login(b.client.get(sso_redirect(&fg)), "agent1").await;
    assert_eq!(out.status, 504, "{}", out.body);
    assert!(out.body.contains("did not answer in time"));
    assert!(!out.body.contains("SAMLResponse"));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

// ------------------------------------------------------------------ the real OP's error responses

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_sign_in_at_the_upstream_shows_a_cancelled_page() {
    let env = tokio::task::block_in_place(Env::start);
    let b = Browser::new();
    let first = b.client.get(sso_redirect(&env.fg)).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let mut url = first
        .url()
        .join(first.headers()["location"].to_str().unwrap())
        .unwrap();
    let mut aborted = false;
    let resp = loop {
        // The person presses "cancel" at the upstream's first interaction.
        if url.path().starts_with("/interaction/") && !aborted {
            url = url.join(&format!("{}/abort", url.path())).unwrap();
            aborted = true;
        }
        let r = b.client.get(url.clone()).send().await.unwrap();
        if !r.status().is_redirection() {
            break r;
        }
        url = r
            .url()
            .join(r.headers()["location"].to_str().unwrap())
            .unwrap();
    };
    assert!(aborted, "the login never reached an interaction");
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(body.contains("Sign-in did not complete"), "{body}");
    assert!(body.contains("cancelled"), "{body}");
    assert!(!body.contains("SAMLResponse"), "{body}");
    let log = wait_for_log(&env.fg, "upstream_denied").await;
    assert!(log.contains("upstream_denied"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_required_from_the_upstream_is_explained() {
    let env = tokio::task::block_in_place(Env::start);
    let cb_prefix = format!("{}/oidc/callback", env.fg.base);
    let b = Browser::new();
    let cb = b
        .login_until(b.client.get(sso_redirect(&env.fg)), "agent1", &cb_prefix)
        .await;
    let state = url::Url::parse(&cb)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    // The upstream answers the pending login with an error instead of a code; its description
    // is attacker-controlled text and must be shown escaped.
    let denied = format!(
        "{cb_prefix}?error=login_required&error_description={}&state={}",
        urlencode("<script>alert(1)</script> session expired"),
        urlencode(&state)
    );
    let r = b.client.get(&denied).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("The identity provider needs you to sign in interactively"),
        "{body}"
    );
    assert!(body.contains("Try again from Flex"), "{body}");
    assert!(
        !body.contains("<script>alert"),
        "the description is escaped"
    );
    assert!(!body.contains("SAMLResponse"));
    // The state is spent: the real code for it no longer works.
    let r = b.client.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn userinfo_is_fetched_only_when_a_mapped_claim_is_missing() {
    let op = Hostile::start().await;
    // A userinfo that would be refused (another subject) proves it is not called when the ID
    // token already has every mapped claim.
    *op.st.userinfo.lock() = json!({"sub": "someone-else", "dept": "sales"});
    let up = op.upstream();
    let auth = up
        .authenticate_for("code", "verifier", NONCE, Some(&["sub"]))
        .await
        .expect("no userinfo call, so no subject mismatch");
    assert_eq!(auth.claims["sub"], "agent1");
    // A mapped claim only userinfo has: it is fetched (and checked) and merged.
    let e = up
        .authenticate_for("code", "verifier", NONCE, Some(&["sub", "dept"]))
        .await
        .expect_err("userinfo is called and its subject checked");
    assert!(matches!(e, OidcError::UserinfoSubject { .. }), "{e:?}");
    *op.st.userinfo.lock() = json!({"sub": "agent1", "dept": "sales"});
    let auth = up
        .authenticate_for("code", "verifier", NONCE, Some(&["sub", "dept"]))
        .await
        .expect("merged");
    assert_eq!(auth.claims["dept"], "sales");
}

/// `/readyz` is public: while the JWKS fetch fails, a flood of probes (concurrent and in a row)
/// costs the upstream a bounded number of fetches (answers are reused for 2 s, and a failed
/// fetch is not repeated for `retry_after`, 2 s), not one per probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_are_not_an_upstream_amplifier() {
    let op = Hostile::start().await;
    *op.st.jwks.lock() = json!("not a JWK set");
    let issuer = op.issuer.clone();
    let fg = tokio::task::block_in_place(|| {
        Flexgate::start(free_port(), &issuer, CLIENT_SECRET, &default_sps(), "")
    });
    let (jwks0, discovery0) = (op.jwks_fetches(), op.discovery_fetches());
    let url = format!("{}/readyz", fg.base);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let probe = |c: reqwest::Client, u: String| async move {
        let r = c.get(u).send().await.expect("readyz answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    let flood: Vec<_> = (0..50)
        .map(|_| tokio::spawn(probe(client.clone(), url.clone())))
        .collect();
    for p in flood {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("failing") && !body.contains("not a JWK set"),
            "the public answer names the check, not the reason: {body}"
        );
    }
    // The reason is on the admin listener.
    let (status, body) = probe(client.clone(), format!("{}/readyz", fg.admin)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not a JWK set"), "{body}");
    for _ in 0..50 {
        assert_eq!(probe(client.clone(), url.clone()).await.0, 503);
    }
    let windows = started.elapsed().as_secs() as usize / 2 + 1;
    let jwks = op.jwks_fetches() - jwks0;
    eprintln!("100 probes in {:?}: {jwks} JWKS fetches", started.elapsed());
    assert!(
        jwks <= windows,
        "100 probes in {:?} fetched the JWKS {jwks} times",
        started.elapsed()
    );
    assert_eq!(op.discovery_fetches(), discovery0, "discovery stays cached");

    // Control: once the JWKS is good again, readiness recovers.
    op.set_jwks(vec![op.key.jwk(Some("RS256"))]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if probe(client.clone(), url.clone()).await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
