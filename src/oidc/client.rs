//! The upstream client: cached discovery, the authorization URL (code + PKCE S256), the token
//! exchange, ID token validation with the JWKS cache, and userinfo.

use super::discovery::{self, ProviderMetadata};
use super::id_token::{self, Expected, IdTokenError, JwkKey, JwksCache};
use super::OidcError;
use crate::clock::{Clock, SystemClock};
use crate::config::{TokenAuthMethod, UpstreamConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// PKCE S256: `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(crate::digest::sha256(verifier.as_bytes()))
}

/// What one authorization request carries besides the client's fixed parameters.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeParams<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub connection: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub max_age: Option<u64>,
    pub acr_values: Option<&'a str>,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// The outcome of a verified code exchange.
#[derive(Debug)]
pub struct Authenticated {
    /// ID token claims merged with userinfo (ID token wins on conflicts, `sub` must agree).
    pub claims: Map<String, Value>,
}

#[derive(Debug, Default)]
struct State {
    meta: Option<Arc<ProviderMetadata>>,
    last_error: Option<String>,
    last_attempt: Option<Instant>,
}

/// A failed JWKS fetch, kept so that calls that waited for it get the same answer.
#[derive(Debug, Clone)]
struct JwksFailure {
    url: String,
    timeout_secs: Option<u64>,
    reason: String,
}

impl JwksFailure {
    fn of(url: &str, e: &OidcError) -> Self {
        JwksFailure {
            url: url.to_string(),
            timeout_secs: match e {
                OidcError::Timeout { secs, .. } => Some(*secs),
                _ => None,
            },
            reason: e.to_string(),
        }
    }

    fn to_error(&self) -> OidcError {
        match self.timeout_secs {
            Some(secs) => OidcError::Timeout {
                url: self.url.clone(),
                secs,
            },
            None => OidcError::Unreachable {
                url: self.url.clone(),
                reason: self.reason.clone(),
            },
        }
    }
}

/// The upstream OpenID provider.
pub struct Upstream {
    cfg: UpstreamConfig,
    redirect_uri: String,
    http: reqwest::Client,
    state: RwLock<State>,
    discovery_lock: tokio::sync::Mutex<()>,
    jwks: RwLock<JwksCache>,
    jwks_lock: tokio::sync::Mutex<()>,
    /// When the last JWKS fetch ended, and why it failed (if it did).
    jwks_last_fetch: RwLock<Option<(Instant, Option<JwksFailure>)>>,
    /// The least time between two discovery (or JWKS) attempts after a failure.
    pub retry_after: Duration,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// "Now" for ID-token time checks.
    clock: Arc<dyn Clock>,
    /// How far `exp`, `nbf` and `iat` may be off.
    leeway: Duration,
}

/// The ID-token leeway until [`Upstream::with_clock`] sets `idp.clock_skew_secs`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// The least time between two JWKS fetches for unknown `kid`s.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("issuer", &self.cfg.issuer)
            .finish()
    }
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig, redirect_uri: String) -> Result<Self, OidcError> {
        let http = crate::http_client::build(cfg.timeout).map_err(|e| OidcError::Unreachable {
            url: cfg.issuer.clone(),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Upstream {
            cfg,
            redirect_uri,
            http,
            state: RwLock::new(State::default()),
            discovery_lock: tokio::sync::Mutex::new(()),
            jwks: RwLock::new(JwksCache::new(JWKS_MIN_REFETCH)),
            jwks_lock: tokio::sync::Mutex::new(()),
            jwks_last_fetch: RwLock::new(None),
            retry_after: Duration::from_secs(2),
            metrics: std::sync::OnceLock::new(),
            clock: Arc::new(SystemClock),
            leeway: DEFAULT_LEEWAY,
        })
    }

    /// Checks ID tokens against `clock`, allowing `leeway` (`idp.clock_skew_secs`).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>, leeway: Duration) -> Self {
        self.clock = clock;
        self.leeway = leeway;
        self
    }

    /// Records upstream call latency in `m` from now on.
    pub fn set_metrics(&self, m: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(m);
    }

    fn observe(&self, call: &str, started: Instant) {
        if let Some(m) = self.metrics.get() {
            m.observe_upstream(call, started);
        }
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// Sets the least interval between JWKS refetches triggered by unknown `kid`s.
    pub fn set_jwks_min_refetch(&self, d: Duration) {
        self.jwks.write().min_refetch = d;
    }

    /// `Ok(())` when discovery has succeeded; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        let s = self.state.read();
        match (&s.meta, &s.last_error) {
            (Some(_), _) => Ok(()),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err("upstream discovery has not run yet".into()),
        }
    }

    /// The discovery document, fetched once and cached; after a failure it is retried at the
    /// next use (at most every `retry_after`), so a provider that comes back is picked up.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        if let Some(m) = self.state.read().meta.clone() {
            return Ok(m);
        }
        let _guard = self.discovery_lock.lock().await;
        {
            let s = self.state.read();
            if let Some(m) = s.meta.clone() {
                return Ok(m);
            }
            if let (Some(t), Some(e)) = (s.last_attempt, &s.last_error) {
                if t.elapsed() < self.retry_after {
                    return Err(OidcError::Unreachable {
                        url: discovery::discovery_url(&self.cfg.issuer),
                        reason: e.clone(),
                    });
                }
            }
        }
        let t0 = Instant::now();
        let result = discovery::fetch(&self.http, &self.cfg.issuer, self.cfg.timeout).await;
        self.observe("discovery", t0);
        let mut s = self.state.write();
        s.last_attempt = Some(Instant::now());
        match result {
            Ok(meta) => {
                let meta = Arc::new(meta);
                s.meta = Some(meta.clone());
                s.last_error = None;
                Ok(meta)
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The URL that sends the browser to the upstream's login.
    pub fn authorize_url(&self, meta: &ProviderMetadata, p: &AuthorizeParams<'_>) -> String {
        let challenge = pkce_challenge(p.pkce_verifier);
        let scope = self.cfg.scopes.join(" ");
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", p.state)
            .append_pair("nonce", p.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        // Auth0's `connection` means nothing to other providers: their presets never send it.
        let connection = p.connection.or(self.cfg.connection.as_deref());
        if let Some(c) = connection.filter(|_| self.cfg.preset().connection) {
            q.append_pair("connection", c);
        }
        if let Some(prompt) = p.prompt {
            q.append_pair("prompt", prompt);
        }
        if let Some(m) = p.max_age {
            q.append_pair("max_age", &m.to_string());
        }
        if let Some(a) = p.acr_values {
            q.append_pair("acr_values", a);
        }
        let sep = if meta.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{}", meta.authorization_endpoint, q.finish())
    }

    fn auth_method(&self, meta: &ProviderMetadata) -> TokenAuthMethod {
        if let Some(m) = self.cfg.token_auth_method {
            return m;
        }
        match &meta.token_endpoint_auth_methods_supported {
            Some(ms)
                if !ms.iter().any(|m| m == "client_secret_basic")
                    && ms.iter().any(|m| m == "client_secret_post") =>
            {
                TokenAuthMethod::ClientSecretPost
            }
            _ => TokenAuthMethod::ClientSecretBasic,
        }
    }

    /// Exchanges the code, verifies the ID token, merges userinfo.
    pub async fn authenticate(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Authenticated, OidcError> {
        self.authenticate_for(code, verifier, nonce, None).await
    }

    /// Like [`Upstream::authenticate`], but userinfo is fetched only when one of `needed` (claim
    /// names or dotted paths) is missing from the ID token: userinfo only adds claims (the ID
    /// token wins on conflicts), so when the ID token already has all of them — as Auth0's does
    /// with a post-login Action — the result is the same, one round trip (and one rate-limited
    /// Auth0 call) sooner. `None` fetches it whenever the provider has the endpoint.
    pub async fn authenticate_for(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        needed: Option<&[&str]>,
    ) -> Result<Authenticated, OidcError> {
        let meta = self.metadata().await?;
        let url = meta.token_endpoint.as_str();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut req = match meta.token_url() {
            Some(parsed) => self.http.post(parsed.clone()),
            None => self.http.post(url),
        }
        .header("accept", "application/json");
        match self.auth_method(&meta) {
            TokenAuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let cred = format!(
                    "{}:{}",
                    enc(&self.cfg.client_id),
                    enc(self.cfg.client_secret.expose())
                );
                req = req.header(
                    "authorization",
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(cred)
                    ),
                );
            }
            TokenAuthMethod::ClientSecretPost => {
                form.push(("client_id", self.cfg.client_id.as_str()));
                form.push(("client_secret", self.cfg.client_secret.expose()));
            }
        }
        let t0 = Instant::now();
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::from_reqwest(url, e, self.cfg.timeout));
        self.observe("token", t0);
        let resp = resp?;
        let status = resp.status();
        let body = super::read_capped(resp, url, self.cfg.timeout).await?;
        if !status.is_success() {
            if let Ok(err) = serde_json::from_slice::<OAuthError>(&body) {
                return Err(OidcError::Token {
                    error: err.error,
                    description: err.error_description,
                });
            }
            return Err(OidcError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let tokens: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| OidcError::Garbage {
                url: url.to_string(),
                reason: format!("not a token response ({:?})", e.classify()),
            })?;
        let id_token = tokens.id_token.ok_or_else(|| OidcError::Garbage {
            url: url.to_string(),
            reason: "the token response has no id_token (is \"openid\" in upstream.scopes?)".into(),
        })?;
        let mut claims = self.verify_id_token(&id_token, nonce).await?;
        let complete =
            needed.is_some_and(|n| n.iter().all(|c| crate::flex::lookup(&claims, c).is_some()));
        if self.cfg.userinfo && !complete {
            if let (Some(ui), Some(at)) = (&meta.userinfo_endpoint, tokens.access_token.as_deref())
            {
                let info = self.userinfo(&meta, ui, at).await?;
                let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
                let info_sub = info.get("sub").and_then(Value::as_str).unwrap_or("");
                if info_sub != sub {
                    return Err(OidcError::UserinfoSubject {
                        expected: sub.to_string(),
                        found: info_sub.to_string(),
                    });
                }
                for (k, v) in info {
                    claims.entry(k).or_insert(v);
                }
            }
        }
        Ok(Authenticated { claims })
    }

    /// Fetches userinfo: a JSON object, or (`application/jwt`) a JWS verified against the
    /// provider's JWKS like an ID token (see [`id_token::verify_userinfo`]).
    async fn userinfo(
        &self,
        meta: &ProviderMetadata,
        url: &str,
        access_token: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let t0 = Instant::now();
        let resp = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/json, application/jwt")
            .send()
            .await
            .map_err(|e| OidcError::from_reqwest(url, e, self.cfg.timeout));
        self.observe("userinfo", t0);
        let resp = resp?;
        if !resp.status().is_success() {
            return Err(OidcError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let signed = ct.starts_with("application/jwt");
        if !signed && !ct.starts_with("application/json") {
            return Err(OidcError::Garbage {
                url: url.to_string(),
                reason: format!(
                    "userinfo answered {ct:?}; flexgate reads application/json or application/jwt"
                ),
            });
        }
        let body = super::read_capped(resp, url, self.cfg.timeout).await?;
        if signed {
            return self.verify_signed_userinfo(meta, url, &body).await;
        }
        serde_json::from_slice(&body).map_err(|e| OidcError::Garbage {
            url: url.to_string(),
            reason: format!("userinfo is not a JSON object: {e}"),
        })
    }

    /// A signed userinfo answer: the JWS is verified with a key of the provider's JWKS.
    async fn verify_signed_userinfo(
        &self,
        meta: &ProviderMetadata,
        url: &str,
        body: &[u8],
    ) -> Result<Map<String, Value>, OidcError> {
        let token = std::str::from_utf8(body)
            .map(str::trim)
            .map_err(|_| OidcError::Garbage {
                url: url.to_string(),
                reason: "the signed userinfo answer is not UTF-8".into(),
            })?;
        let jws = id_token::parse(token).map_err(OidcError::SignedUserinfo)?;
        let jwk = self
            .signing_key(meta, jws.kid.as_deref())
            .await
            .map_err(|e| match e {
                OidcError::IdToken(e) => OidcError::SignedUserinfo(e),
                other => other,
            })?;
        id_token::verify_userinfo(&jws, &jwk, &self.expected("")).map_err(OidcError::SignedUserinfo)
    }

    /// What tokens from this provider must say (`nonce` only applies to ID tokens).
    fn expected<'a>(&'a self, nonce: &'a str) -> Expected<'a> {
        Expected {
            issuer: &self.cfg.issuer,
            client_id: &self.cfg.client_id,
            nonce,
            now: self.clock.now().timestamp(),
            leeway: self.leeway.as_secs(),
        }
    }

    /// The provider's key with `kid`, refetching the JWKS once (rate-limited) when unknown.
    async fn signing_key(
        &self,
        meta: &ProviderMetadata,
        kid: Option<&str>,
    ) -> Result<JwkKey, OidcError> {
        let mut jwk = self.jwks.read().find(kid).cloned();
        if jwk.is_none() {
            self.refresh_jwks(meta, |c| c.find(kid).is_none()).await?;
            jwk = self.jwks.read().find(kid).cloned();
        }
        Ok(jwk.ok_or_else(|| IdTokenError::UnknownKey(kid.unwrap_or_default().to_string()))?)
    }

    async fn fetch_jwks(&self, meta: &ProviderMetadata) -> Result<(), OidcError> {
        let url = meta.jwks_uri.as_str();
        let t0 = Instant::now();
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::from_reqwest(url, e, self.cfg.timeout));
        self.observe("jwks", t0);
        let resp = resp?;
        if !resp.status().is_success() {
            return Err(OidcError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let body = super::read_capped(resp, url, self.cfg.timeout).await?;
        let doc: Value = serde_json::from_slice(&body).map_err(|e| OidcError::Garbage {
            url: url.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
        let set = id_token::parse_jwks(&doc).map_err(|reason| OidcError::Garbage {
            url: url.to_string(),
            reason: format!("not a JWK set: {reason}"),
        })?;
        self.jwks.write().replace(set, Instant::now());
        Ok(())
    }

    /// Verifies an ID token: signature by a key of the provider's JWKS (refetched once on an
    /// unknown `kid`, rate-limited), then the claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let meta = self.metadata().await?;
        let jws = id_token::parse(token)?;
        let jwk = self.signing_key(&meta, jws.kid.as_deref()).await?;
        Ok(id_token::verify(&jws, &jwk, &self.expected(nonce))?)
    }

    /// Fetches discovery and the JWKS now (used by `check` and at start-up).
    pub async fn warm_up(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        let meta = self.metadata().await?;
        if self.jwks.read().is_empty() {
            self.refresh_jwks(&meta, JwksCache::is_empty).await?;
        }
        Ok(meta)
    }

    /// Fetches the JWKS if `still_needed` after waiting for any fetch in flight, within the
    /// limits that keep a flood of logins or probes from hammering the upstream: one fetch at a
    /// time, and a fetch that ended while this call waited answers for it too (without this, N
    /// logins behind a hanging JWKS endpoint would wait N timeouts in turn); a failure is
    /// answered from memory for `retry_after`; a good set is refetched at most every
    /// [`JwksCache::min_refetch`].
    async fn refresh_jwks(
        &self,
        meta: &ProviderMetadata,
        still_needed: impl Fn(&JwksCache) -> bool,
    ) -> Result<(), OidcError> {
        let waiting_since = Instant::now();
        let _guard = self.jwks_lock.lock().await;
        if !still_needed(&self.jwks.read()) {
            return Ok(());
        }
        let last = self.jwks_last_fetch.read().clone();
        match last {
            Some((at, failure)) if at >= waiting_since => {
                return failure.map_or(Ok(()), |f| Err(f.to_error()))
            }
            Some((at, Some(failure))) if at.elapsed() < self.retry_after => {
                return Err(failure.to_error())
            }
            _ => {}
        }
        if !self.jwks.read().may_refetch(Instant::now()) {
            return Ok(());
        }
        let r = self.fetch_jwks(meta).await;
        *self.jwks_last_fetch.write() = Some((
            Instant::now(),
            r.as_ref().err().map(|e| JwksFailure::of(&meta.jwks_uri, e)),
        ));
        r
    }
}
