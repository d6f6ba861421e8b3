//! Development OpenID Connect issuer, used only by `flexgate demo` (never by `serve`).
//!
//! A small but spec-shaped OP: discovery, JWKS, authorization code flow with mandatory PKCE S256,
//! `client_secret_basic` / `client_secret_post`, RS256 ID tokens and userinfo. Users are picked from a
//! login page instead of entering passwords. The RSA key is generated at start and lives in memory only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use openssl::pkey::{PKey, Private};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use url::Url;

const CODE_TTL: Duration = Duration::from_secs(60);
const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(600);
const ID_TOKEN_TTL_SECS: i64 = 300;
const MAX_PARAM_LEN: usize = 2048;
/// Namespaced claim carrying Flex roles (Auth0 style), alongside `app_metadata.flex.roles`.
pub const ROLES_CLAIM: &str = "https://flex.example.com/roles";
const AUTHZ_FIELDS: [&str; 8] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// A selectable test user. `id` becomes `sub`; every entry of `claims` goes into the ID token and userinfo.
#[derive(Debug, Clone)]
pub struct DevUser {
    pub id: &'static str,
    pub label: &'static str,
    pub claims: Value,
}

fn user(id: &'static str, label: &'static str, name: &str, roles: &[&str]) -> DevUser {
    let email = format!("{id}@example.com");
    let mut claims = json!({
        "email": email, "email_verified": true, "name": name, "nickname": id,
        "picture": format!("https://example.com/avatars/{id}.png"),
        "app_metadata": { "flex": {} },
    });
    if !roles.is_empty() {
        claims[ROLES_CLAIM] = json!(roles);
        claims["app_metadata"]["flex"]["roles"] = json!(roles);
    }
    DevUser { id, label, claims }
}

/// The demo's users: agent, supervisor, admin, one without any role, one with a hostile display name.
pub fn default_users() -> Vec<DevUser> {
    vec![
        user("alice.agent", "Alice (agent)", "Alice Agent", &["agent"]),
        user(
            "sam.supervisor",
            "Sam (supervisor)",
            "Sam Supervisor",
            &["supervisor", "wfo.team_leader"],
        ),
        user("ada.admin", "Ada (admin)", "Ada Admin", &["admin"]),
        user("nora.norole", "Nora (no Flex role)", "Nora Norole", &[]),
        user(
            "zoe.markup",
            "Zoë (markup in name)",
            "Zoë \"Zed\" <O'Brien> & Co",
            &["agent"],
        ),
    ]
}

pub struct DevIssuerConfig {
    /// Public issuer URL, no trailing slash, e.g. `http://127.0.0.1:8080/dev-oidc`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The only redirect URI accepted (exact match).
    pub redirect_uri: String,
    pub users: Vec<DevUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("development issuer: {0}")]
    Config(String),
    #[error("development issuer: cannot generate its RSA key: {0}")]
    Key(#[from] openssl::error::ErrorStack),
}

struct CodeGrant {
    redirect_uri: String,
    user: usize,
    nonce: Option<String>,
    challenge: String,
    scope: String,
    auth_time: i64,
    expires: Instant,
}

struct TokenGrant {
    user: usize,
    expires: Instant,
}

struct Issuer {
    cfg: DevIssuerConfig,
    login_path: String,
    key: PKey<Private>,
    kid: String,
    jwks: Value,
    codes: Mutex<HashMap<String, CodeGrant>>,
    tokens: Mutex<HashMap<String, TokenGrant>>,
}

type Shared = Arc<Issuer>;

/// Build the issuer's router; paths are relative to the issuer URL's path (nest it there).
pub fn router(cfg: DevIssuerConfig) -> Result<Router, DevIssuerError> {
    let login_path = validate(&cfg)?;
    let rsa = openssl::rsa::Rsa::generate(2048)?;
    let n = URL_SAFE_NO_PAD.encode(rsa.n().to_vec());
    let e = URL_SAFE_NO_PAD.encode(rsa.e().to_vec());
    // RFC 7638 thumbprint as kid.
    let thumbprint = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(crate::digest::sha256(thumbprint.as_bytes()));
    let key = PKey::from_rsa(rsa)?;
    sign_rs256(&key, &kid, Map::new())?;
    let jwks = json!({ "keys": [{ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e }] });
    let state = Arc::new(Issuer {
        cfg,
        login_path,
        key,
        kid,
        jwks,
        codes: Mutex::new(HashMap::new()),
        tokens: Mutex::new(HashMap::new()),
    });
    Ok(Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks_doc))
        .route("/authorize", get(authorize))
        .route("/authorize/login", post(login))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .with_state(state))
}

/// Checks the configuration; returns the absolute path of the login form's target.
fn validate(cfg: &DevIssuerConfig) -> Result<String, DevIssuerError> {
    let bad = |m: String| Err(DevIssuerError::Config(m));
    let issuer = match Url::parse(&cfg.issuer) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            u
        }
        _ => {
            return bad(format!(
                "issuer `{}` must be an http(s) URL without query",
                cfg.issuer
            ))
        }
    };
    if cfg.issuer.ends_with('/') {
        return bad(format!("issuer `{}` must not end with a slash", cfg.issuer));
    }
    if !matches!(Url::parse(&cfg.redirect_uri), Ok(u) if u.fragment().is_none()) {
        return bad(format!(
            "redirect_uri `{}` must be an absolute URL without fragment",
            cfg.redirect_uri
        ));
    }
    if cfg.client_id.is_empty() || cfg.client_id.contains(':') || cfg.client_secret.is_empty() {
        return bad("client_id (without ':') and client_secret must be set".into());
    }
    if cfg.users.is_empty() {
        return bad("at least one user is needed".into());
    }
    for (i, u) in cfg.users.iter().enumerate() {
        if u.id.is_empty() || !u.claims.is_object() || cfg.users[..i].iter().any(|o| o.id == u.id) {
            return bad(format!(
                "user `{}`: ids must be unique and non-empty, claims a JSON object",
                u.id
            ));
        }
    }
    Ok(format!(
        "{}/authorize/login",
        issuer.path().trim_end_matches('/')
    ))
}

async fn discovery(State(s): State<Shared>) -> Response {
    let i = &s.cfg.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "profile", "email"],
        "subject_types_supported": ["public"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "email",
            "email_verified", "name", "nickname", "picture", "app_metadata", ROLES_CLAIM],
    }))
    .into_response()
}

async fn jwks_doc(State(s): State<Shared>) -> Response {
    Json(s.jwks.clone()).into_response()
}

/// A validated authorization request.
struct AuthzRequest {
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
}

impl Issuer {
    fn check_authz(&self, p: &HashMap<String, String>) -> Result<AuthzRequest, String> {
        if let Some((k, _)) = p.iter().find(|(_, v)| v.len() > MAX_PARAM_LEN) {
            return Err(format!(
                "parameter `{k}` is longer than {MAX_PARAM_LEN} bytes"
            ));
        }
        let get = |k: &str| p.get(k).map(String::as_str);
        match get("client_id") {
            None => return Err("client_id is missing".into()),
            Some(c) if c != self.cfg.client_id => {
                return Err(format!("client_id `{c}` is not registered"))
            }
            _ => {}
        }
        match get("redirect_uri") {
            None => return Err("redirect_uri is missing".into()),
            Some(r) if r != self.cfg.redirect_uri => {
                return Err(format!(
                    "redirect_uri `{r}` is not registered for this client"
                ))
            }
            _ => {}
        }
        if get("response_type") != Some("code") {
            return Err("response_type must be `code`".into());
        }
        let scope = get("scope").unwrap_or_default();
        if !scope.split(' ').any(|s| s == "openid") {
            return Err("scope must include `openid`".into());
        }
        let code_challenge = match get("code_challenge") {
            Some(c) if pkce_string_ok(c) => c.to_string(),
            Some(_) => {
                return Err(
                    "code_challenge is malformed (RFC 7636: 43-128 unreserved characters)".into(),
                )
            }
            None => return Err("code_challenge is required (PKCE with S256)".into()),
        };
        if get("code_challenge_method") != Some("S256") {
            return Err("code_challenge_method must be `S256`".into());
        }
        Ok(AuthzRequest {
            redirect_uri: self.cfg.redirect_uri.clone(),
            scope: scope.to_string(),
            state: get("state").map(str::to_string),
            nonce: get("nonce").map(str::to_string),
            code_challenge,
        })
    }
}

async fn authorize(State(s): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let params = match parse_params(q.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Invalid authorization request", &e),
    };
    if let Err(e) = s.check_authz(&params) {
        return error_page(StatusCode::BAD_REQUEST, "Invalid authorization request", &e);
    }
    let hidden: String = AUTHZ_FIELDS
        .iter()
        .filter_map(|k| params.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{k}" value="{}">"#,
                escape_html(v)
            )
        })
        .collect();
    let buttons: String = s.cfg.users.iter().map(user_button).collect();
    let body = format!(
        r#"<h1>Sign in as a test user</h1>
<p class="meta">Client <code>{client}</code> receives the result at <code>{redirect}</code>. No password: pick a user.</p>
<form method="post" action="{action}">{hidden}<div class="users">{buttons}</div></form>"#,
        client = escape_html(&s.cfg.client_id),
        redirect = escape_html(&s.cfg.redirect_uri),
        action = escape_html(&s.login_path),
    );
    html_response(StatusCode::OK, page("Sign in", &body))
}

fn user_button(u: &DevUser) -> String {
    let roles = roles_of(&u.claims);
    let chips: String = if roles.is_empty() {
        r#"<span class="role norole">no Flex role</span>"#.into()
    } else {
        roles
            .iter()
            .map(|r| format!(r#"<span class="role">{}</span>"#, escape_html(r)))
            .collect()
    };
    let text = |k: &str| u.claims.get(k).and_then(Value::as_str).unwrap_or_default();
    format!(
        r#"<button class="user" type="submit" name="user" value="{id}"><span class="label">{label}</span> <span class="meta">{name} &middot; {email}</span><br>{chips}</button>"#,
        id = escape_html(u.id),
        label = escape_html(u.label),
        name = escape_html(text("name")),
        email = escape_html(text("email")),
    )
}

fn roles_of(claims: &Value) -> Vec<String> {
    let list = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let roles = list(claims.pointer("/app_metadata/flex/roles"));
    if roles.is_empty() {
        list(claims.get(ROLES_CLAIM))
    } else {
        roles
    }
}

async fn login(State(s): State<Shared>, body: Bytes) -> Response {
    let bad = |e: &str| error_page(StatusCode::BAD_REQUEST, "Invalid login request", e);
    let params = match parse_params(&body) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let req = match s.check_authz(&params) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    let user_id = params.get("user").map(String::as_str).unwrap_or_default();
    let Some(user) = s.cfg.users.iter().position(|u| u.id == user_id) else {
        return bad(&format!("unknown user `{user_id}`"));
    };
    let Ok(mut target) = Url::parse(&req.redirect_uri) else {
        return bad("redirect_uri is not a URL");
    };
    let code = random_token();
    {
        let now = Instant::now();
        let mut codes = s.codes.lock();
        codes.retain(|_, g| g.expires > now);
        codes.insert(
            code.clone(),
            CodeGrant {
                redirect_uri: req.redirect_uri,
                user,
                nonce: req.nonce,
                challenge: req.code_challenge,
                scope: req.scope,
                auth_time: chrono::Utc::now().timestamp(),
                expires: now + CODE_TTL,
            },
        );
    }
    {
        let mut q = target.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(state) = &req.state {
            q.append_pair("state", state);
        }
    }
    let mut resp = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(target.as_str()) {
        Ok(loc) => resp.headers_mut().insert(header::LOCATION, loc),
        Err(_) => return bad("redirect_uri cannot be used in a Location header"),
    };
    no_store(resp)
}

struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    basic_challenge: bool,
}

fn oauth_err(
    status: StatusCode,
    error: &'static str,
    description: impl Into<String>,
) -> OAuthError {
    OAuthError {
        status,
        error,
        description: description.into(),
        basic_challenge: false,
    }
}

fn invalid_grant(description: &str) -> OAuthError {
    oauth_err(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut resp = no_store((self.status, Json(body)).into_response());
        if self.basic_challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="dev-oidc""#),
            );
        }
        resp
    }
}

async fn token(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    // The exchange signs the ID token (RSA): off the async reactor.
    let exchanged = tokio::task::spawn_blocking(move || s.exchange(&headers, &body)).await;
    match exchanged {
        Ok(Ok(v)) => no_store(Json(v).into_response()),
        Ok(Err(e)) => e.into_response(),
        Err(_) => oauth_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the token exchange failed",
        )
        .into_response(),
    }
}

impl Issuer {
    fn authenticate_client(
        &self,
        headers: &HeaderMap,
        p: &HashMap<String, String>,
    ) -> Result<(), OAuthError> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, cred)| cred.trim());
        let body_id = p.get("client_id").map(String::as_str);
        let unauthorized = |basic_challenge| OAuthError {
            basic_challenge,
            ..oauth_err(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        };
        let ok = match (basic, p.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method",
                ))
            }
            (Some(cred), None) => {
                let decoded = STANDARD
                    .decode(cred)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                    return Err(unauthorized(true));
                };
                // RFC 6749 §2.3.1 form-encodes both parts; many clients don't, so accept either form.
                let matches =
                    |i: &str, s: &str| i == self.cfg.client_id && ct_eq(s, &self.cfg.client_secret);
                let id_ok = body_id.is_none_or(|b| b == id || b == form_decode(id));
                id_ok && (matches(id, secret) || matches(&form_decode(id), &form_decode(secret)))
            }
            (None, Some(secret)) => {
                body_id == Some(self.cfg.client_id.as_str())
                    && ct_eq(secret, &self.cfg.client_secret)
            }
            (None, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(unauthorized(
                basic.is_some() || p.get("client_secret").is_none(),
            ))
        }
    }

    fn exchange(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
        let p = parse_params(body)
            .map_err(|e| oauth_err(StatusCode::BAD_REQUEST, "invalid_request", e))?;
        self.authenticate_client(headers, &p)?;
        let get = |k: &str| p.get(k).map(String::as_str);
        if get("grant_type") != Some("authorization_code") {
            return Err(oauth_err(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code",
            ));
        }
        let code = get("code").ok_or_else(|| {
            oauth_err(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code is missing",
            )
        })?;
        // Removed on first presentation: a code is never usable twice, even if this attempt fails.
        let grant = self
            .codes
            .lock()
            .remove(code)
            .filter(|g| g.expires > Instant::now());
        let grant =
            grant.ok_or_else(|| invalid_grant("code is unknown, expired or already used"))?;
        if get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
            return Err(invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        let verifier = get("code_verifier").unwrap_or_default();
        let computed = URL_SAFE_NO_PAD.encode(crate::digest::sha256(verifier.as_bytes()));
        if !pkce_string_ok(verifier) || !ct_eq(&computed, &grant.challenge) {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let user = self.cfg.users.get(grant.user).ok_or_else(|| {
            oauth_err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "unknown user",
            )
        })?;
        let access_token = random_token();
        {
            let now = Instant::now();
            let mut tokens = self.tokens.lock();
            tokens.retain(|_, t| t.expires > now);
            tokens.insert(
                access_token.clone(),
                TokenGrant {
                    user: grant.user,
                    expires: now + ACCESS_TOKEN_TTL,
                },
            );
        }
        let now = chrono::Utc::now().timestamp();
        let digest = crate::digest::sha256(access_token.as_bytes());
        let mut claims: Map<String, Value> = user.claims.as_object().cloned().unwrap_or_default();
        // Protocol claims last so a user's claims can never override them.
        for (k, v) in [
            ("iss", json!(self.cfg.issuer)),
            ("sub", json!(user.id)),
            ("aud", json!(self.cfg.client_id)),
            ("azp", json!(self.cfg.client_id)),
            ("exp", json!(now + ID_TOKEN_TTL_SECS)),
            ("iat", json!(now)),
            ("auth_time", json!(grant.auth_time)),
            ("amr", json!(["pwd"])),
            ("at_hash", json!(URL_SAFE_NO_PAD.encode(&digest[..16]))),
        ] {
            claims.insert(k.into(), v);
        }
        match grant.nonce {
            Some(n) => claims.insert("nonce".into(), json!(n)),
            None => claims.remove("nonce"),
        };
        let id_token = sign_rs256(&self.key, &self.kid, claims).map_err(|_| {
            oauth_err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "cannot sign the ID token",
            )
        })?;
        Ok(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_TTL.as_secs(),
            "scope": grant.scope,
            "id_token": id_token,
        }))
    }
}

async fn userinfo(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let user = bearer.and_then(|t| {
        let tokens = s.tokens.lock();
        tokens
            .get(t)
            .filter(|g| g.expires > Instant::now())
            .map(|g| g.user)
    });
    let Some(user) = user.and_then(|i| s.cfg.users.get(i)) else {
        let challenge = match bearer {
            Some(_) => r#"Bearer realm="dev-oidc", error="invalid_token""#,
            None => r#"Bearer realm="dev-oidc""#,
        };
        let body = Json(
            json!({ "error": "invalid_token", "error_description": "a valid Bearer access token is required" }),
        );
        let mut resp = no_store((StatusCode::UNAUTHORIZED, body).into_response());
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        return resp;
    };
    let mut claims: Map<String, Value> = user.claims.as_object().cloned().unwrap_or_default();
    claims.insert("sub".into(), json!(user.id));
    no_store(Json(Value::Object(claims)).into_response())
}

/// Parses form/query encoding; a repeated parameter is an error (RFC 6749 §3.1).
fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter `{k}` was given more than once"));
        }
    }
    Ok(out)
}

fn form_decode(s: &str) -> String {
    let pair = format!("v={}", s.replace('&', "%26").replace('=', "%3D"));
    url::form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// RFC 7636 code_verifier / S256 challenge shape: 43-128 characters of `[A-Za-z0-9-._~]`.
fn pkce_string_ok(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// A compact JWS (RFC 7515) over `claims`: RS256, that is RSASSA-PKCS1-v1_5 with SHA-256 over
/// `base64url(header) "." base64url(claims)`.
fn sign_rs256(
    key: &PKey<Private>,
    kid: &str,
    claims: Map<String, Value>,
) -> Result<String, openssl::error::ErrorStack> {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": kid });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
    );
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)?;
    let signature = signer.sign_oneshot_to_vec(input.as_bytes())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn ct_eq(a: &str, b: &str) -> bool {
    crate::constant_time::eq(a.as_bytes(), b.as_bytes())
}

fn random_token() -> String {
    crate::clock::random_token(32)
}

/// Escapes text for HTML element content and quoted attribute values (the product's own escaper).
pub fn escape_html(s: &str) -> String {
    crate::web::pages::escape(s)
}

fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = no_store((status, body).into_response());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    resp
}

fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        r#"<h1 class="err">{}</h1><p>{}</p><p class="meta">The request was not sent back to the application.</p>"#,
        escape_html(title),
        escape_html(detail)
    );
    html_response(status, page(title, &body))
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f4f5f7;color:#1f2933;margin:0}\
.banner{background:#b45309;color:#fff;padding:.6rem 1rem;text-align:center;font-weight:600}\
main{max-width:40rem;margin:2rem auto;background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12);padding:1.5rem 2rem}\
h1{font-size:1.4rem;margin-top:0}.err{color:#991b1b}.users{display:grid;gap:.75rem}\
button.user{display:block;width:100%;text-align:left;padding:.8rem 1rem;border:1px solid #cbd2d9;border-radius:6px;background:#fff;cursor:pointer;font:inherit;color:inherit}\
button.user:hover,button.user:focus{border-color:#2563eb;background:#eff6ff}\
.label{font-weight:600}.meta{color:#52606d;font-size:.9rem}\
.role{display:inline-block;background:#e0e7ff;color:#3730a3;border-radius:999px;padding:0 .55rem;margin:.3rem .25rem 0 0;font-size:.8rem}\
.norole{background:#fee2e2;color:#991b1b}code{background:#f1f5f9;padding:0 .25rem;border-radius:3px;word-break:break-all}";

fn page(title: &str, content: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{} · flexgate dev issuer</title><style>{CSS}</style></head><body><div class="banner">Development issuer — demo only. Never use in production.</div><main>{content}</main></body></html>"#,
        escape_html(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use reqwest::StatusCode as S;

    const CLIENT: &str = "flexgate-demo";
    const SECRET: &str = "dev-secret:with&odd=chars";

    struct Env {
        base: String,
        redirect: String,
        http: reqwest::Client,
    }

    async fn start() -> Env {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}/dev-oidc");
        let redirect = format!("http://{addr}/oidc/callback");
        let cfg = DevIssuerConfig {
            issuer: base.clone(),
            client_id: CLIENT.into(),
            client_secret: SECRET.into(),
            redirect_uri: redirect.clone(),
            users: default_users(),
        };
        let app = Router::new().nest("/dev-oidc", router(cfg).unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Env {
            base,
            redirect,
            http,
        }
    }

    fn pkce() -> (String, String) {
        let verifier = random_token(); // 43 chars
        let challenge = URL_SAFE_NO_PAD.encode(crate::digest::sha256(verifier.as_bytes()));
        (verifier, challenge)
    }

    fn authz(env: &Env, challenge: &str, state: &str) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", CLIENT.into()),
            ("redirect_uri", env.redirect.clone()),
            ("response_type", "code".into()),
            ("scope", "openid profile email".into()),
            ("state", state.into()),
            ("nonce", "n-0S6_WzA2Mj".into()),
            ("code_challenge", challenge.into()),
            ("code_challenge_method", "S256".into()),
        ]
    }

    async fn authorize(env: &Env, params: &[(&str, String)]) -> (S, String, HeaderMap) {
        let url = format!("{}/authorize", env.base);
        let r = env.http.get(url).query(params).send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, r.text().await.unwrap(), headers)
    }

    /// Login as `user`; returns (code, verifier) after checking the redirect.
    async fn get_code(env: &Env, user: &str, state: &str) -> (String, String) {
        let (verifier, challenge) = pkce();
        let mut form = authz(env, &challenge, state);
        form.push(("user", user.into()));
        let r = env
            .http
            .post(format!("{}/authorize/login", env.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), S::SEE_OTHER);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let loc = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        assert!(loc.as_str().starts_with(&env.redirect));
        let q: HashMap<_, _> = loc.query_pairs().into_owned().collect();
        assert_eq!(q["state"], state);
        (q["code"].clone(), verifier)
    }

    enum Auth {
        Basic,
        Post,
        BasicWrong,
        PostWrong,
    }

    async fn exchange(
        env: &Env,
        code: &str,
        verifier: &str,
        redirect: &str,
        auth: Auth,
    ) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ];
        let req = env.http.post(format!("{}/token", env.base));
        let req = match auth {
            Auth::Basic => req.basic_auth(CLIENT, Some(SECRET)),
            Auth::BasicWrong => req.basic_auth(CLIENT, Some("nope")),
            Auth::Post | Auth::PostWrong => {
                form.push(("client_id", CLIENT));
                form.push((
                    "client_secret",
                    if matches!(auth, Auth::Post) {
                        SECRET
                    } else {
                        "nope"
                    },
                ));
                req
            }
        };
        req.form(&form).send().await.unwrap()
    }

    async fn error_of(r: reqwest::Response) -> (S, String) {
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        (status, v["error"].as_str().unwrap().to_string())
    }

    async fn verify_id_token(env: &Env, id_token: &str) -> Value {
        // The oracle: jsonwebtoken with its pure-Rust backend, independent of the OpenSSL signer.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let set: JwkSet = env
            .http
            .get(format!("{}/jwks", env.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[&env.base]);
        v.set_audience(&[CLIENT]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Value>(id_token, &key, &v)
            .unwrap()
            .claims
    }

    #[tokio::test]
    async fn full_flow_with_basic_and_post_auth() {
        let env = start().await;
        let disco: Value = env
            .http
            .get(format!("{}/.well-known/openid-configuration", env.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(disco["issuer"], env.base.as_str());
        assert_eq!(
            disco["authorization_endpoint"],
            format!("{}/authorize", env.base)
        );
        assert_eq!(disco["code_challenge_methods_supported"], json!(["S256"]));

        let (_, challenge) = pkce();
        let (status, body, headers) = authorize(&env, &authz(&env, &challenge, "st-1")).await;
        assert_eq!(status, S::OK);
        assert_eq!(headers["cache-control"], "no-store");
        assert!(body.contains("Development issuer — demo only"));
        for label in [
            "Alice (agent)",
            "Sam (supervisor)",
            "Ada (admin)",
            "Nora (no Flex role)",
        ] {
            assert!(body.contains(label), "{label} missing");
        }
        assert!(body.contains("wfo.team_leader") && body.contains("no Flex role"));
        assert!(body.contains("Zoë &quot;Zed&quot; &lt;O&#39;Brien&gt; &amp; Co"));
        assert!(!body.contains("<O'Brien>"));

        for (auth, user) in [(Auth::Basic, "sam.supervisor"), (Auth::Post, "zoe.markup")] {
            let (code, verifier) = get_code(&env, user, "st-1").await;
            let r = exchange(&env, &code, &verifier, &env.redirect, auth).await;
            assert_eq!(r.status(), S::OK);
            assert_eq!(r.headers()["cache-control"], "no-store");
            let tok: Value = r.json().await.unwrap();
            assert_eq!(tok["token_type"], "Bearer");
            let claims = verify_id_token(&env, tok["id_token"].as_str().unwrap()).await;
            assert_eq!(claims["sub"], user);
            assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
            assert_eq!(claims["azp"], CLIENT);
            assert_eq!(claims["amr"], json!(["pwd"]));
            assert!(claims["auth_time"].is_i64() && claims["iat"].is_i64());
            let ui: Value = env
                .http
                .get(format!("{}/userinfo", env.base))
                .bearer_auth(tok["access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(ui["sub"], user);
            assert_eq!(ui["email"], claims["email"]);
            if user == "sam.supervisor" {
                let roles = json!(["supervisor", "wfo.team_leader"]);
                assert_eq!(claims["app_metadata"]["flex"]["roles"], roles);
                assert_eq!(claims[ROLES_CLAIM], roles);
            } else {
                assert_eq!(ui["name"], "Zoë \"Zed\" <O'Brien> & Co");
            }
        }
    }

    #[tokio::test]
    async fn token_endpoint_rejections() {
        let env = start().await;
        // Wrong PKCE verifier; the code is burnt by the attempt.
        let (code, _) = get_code(&env, "alice.agent", "s").await;
        let (other, _) = pkce();
        let r = exchange(&env, &code, &other, &env.redirect, Auth::Basic).await;
        assert_eq!(error_of(r).await, (S::BAD_REQUEST, "invalid_grant".into()));
        // Code reuse.
        let (code, verifier) = get_code(&env, "alice.agent", "s").await;
        let r = exchange(&env, &code, &verifier, &env.redirect, Auth::Basic).await;
        assert_eq!(r.status(), S::OK);
        let r = exchange(&env, &code, &verifier, &env.redirect, Auth::Basic).await;
        assert_eq!(error_of(r).await, (S::BAD_REQUEST, "invalid_grant".into()));
        // Wrong client secret, both methods.
        let (code, verifier) = get_code(&env, "alice.agent", "s").await;
        let r = exchange(&env, &code, &verifier, &env.redirect, Auth::BasicWrong).await;
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(
            error_of(r).await,
            (S::UNAUTHORIZED, "invalid_client".into())
        );
        let r = exchange(&env, &code, &verifier, &env.redirect, Auth::PostWrong).await;
        assert_eq!(
            error_of(r).await,
            (S::UNAUTHORIZED, "invalid_client".into())
        );
        // redirect_uri mismatch at the token endpoint (the code survived the failed client auth).
        let wrong = format!("{}?x=1", env.redirect);
        let r = exchange(&env, &code, &verifier, &wrong, Auth::Post).await;
        assert_eq!(error_of(r).await, (S::BAD_REQUEST, "invalid_grant".into()));
        // Unsupported grant type.
        let r = env
            .http
            .post(format!("{}/token", env.base))
            .basic_auth(CLIENT, Some(SECRET))
            .form(&[("grant_type", "password")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(r).await,
            (S::BAD_REQUEST, "unsupported_grant_type".into())
        );
        // Userinfo without / with a bogus token.
        let url = format!("{}/userinfo", env.base);
        assert_eq!(
            env.http.get(&url).send().await.unwrap().status(),
            S::UNAUTHORIZED
        );
        let r = env
            .http
            .get(&url)
            .bearer_auth("bogus")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), S::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn authorize_rejections_never_redirect() {
        let env = start().await;
        let (_, challenge) = pkce();
        let base = authz(&env, &challenge, "s");
        let with = |k: &'static str, v: Option<&str>| -> Vec<(&'static str, String)> {
            let mut p: Vec<_> = base.iter().filter(|(n, _)| *n != k).cloned().collect();
            p.extend(v.map(|v| (k, v.to_string())));
            p
        };
        let cases = [
            with("redirect_uri", Some("https://evil.example/cb")),
            with("client_id", Some("other")),
            with("code_challenge", None),
            with("code_challenge_method", Some("plain")),
            with("response_type", Some("token")),
            with("scope", Some("profile")),
        ];
        for params in cases {
            let (status, body, headers) = authorize(&env, &params).await;
            assert_eq!(status, S::BAD_REQUEST, "{params:?}");
            assert!(headers.get("location").is_none());
            assert!(body.contains("Invalid authorization request"));
        }
        let (_, body, _) = authorize(
            &env,
            &with("redirect_uri", Some("https://evil.example/<b>")),
        )
        .await;
        assert!(body.contains("https://evil.example/&lt;b&gt;"));
        // A login POST is validated again, so a tampered redirect_uri is refused there too.
        let mut form = with("redirect_uri", Some("https://evil.example/cb"));
        form.push(("user", "alice.agent".into()));
        let r = env
            .http
            .post(format!("{}/authorize/login", env.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), S::BAD_REQUEST);
        assert!(r.headers().get("location").is_none());
    }

    #[tokio::test]
    async fn state_with_markup_is_escaped_and_round_trips() {
        let env = start().await;
        let state = r#""><script>alert('x')</script>&amp;"#;
        let (_, challenge) = pkce();
        let (status, body, _) = authorize(&env, &authz(&env, &challenge, state)).await;
        assert_eq!(status, S::OK);
        assert!(!body.contains("<script>"));
        assert!(body.contains(
            r#"value="&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp;""#
        ));
        let (code, _) = get_code(&env, "ada.admin", state).await; // asserts the exact state comes back
        assert!(!code.is_empty());
    }

    #[test]
    fn helpers() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(parse_params(b"a=1&a=2").is_err());
        assert_eq!(form_decode("a%3Ab+c"), "a:b c");
        assert!(!pkce_string_ok("short") && pkce_string_ok(&"a".repeat(43)));
        let cfg = |issuer: &str| DevIssuerConfig {
            issuer: issuer.into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            users: default_users(),
        };
        assert!(matches!(
            router(cfg("http://x/dev-oidc/")),
            Err(DevIssuerError::Config(_))
        ));
        assert!(matches!(
            router(cfg("not a url")),
            Err(DevIssuerError::Config(_))
        ));
        assert!(router(cfg("http://127.0.0.1:8080/dev-oidc")).is_ok());
    }
}
