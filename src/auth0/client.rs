//! The one client for everything flexgate asks of the Auth0 Management API v2 (login-time role
//! lookups, the role prefetch, `flexgate roles`, `flexgate init`).
//!
//! - Credentials: a client-credentials token of a Machine-to-Machine application (cached until
//!   shortly before it expires, fetched again after a 401), or a fixed token (`AUTH0_MGMT_TOKEN`).
//! - Pacing: every response's `X-RateLimit-*` headers feed one [`Pacer`] per client; a 429 is
//!   waited out until `X-RateLimit-Reset`. The caller's patience is [`ClientConfig::max_wait`]:
//!   a login gives a few seconds, a CLI import minutes; [`with_patience`] gives one task more
//!   (the bulk role read shares the login client's pacer). Past it, [`Auth0Error::RateLimited`].
//! - Every call has a timeout; bodies are capped; errors are typed and name the fix.
//!
//! Errors follow Auth0's body `{"statusCode","error","message","errorCode"}`
//! (auth0/node-auth0 `src/management/errors` / Auth0 Management API v2 reference, "Errors").

use super::pacer::{Pacer, RateHeaders};
use crate::config::Secret;
use parking_lot::Mutex;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

tokio::task_local! {
    static PATIENCE: Duration;
}

/// Runs `f` with calls that may wait up to `max_wait` for the rate limit, instead of the
/// client's [`ClientConfig::max_wait`]. Pacing stays shared with every other caller.
pub async fn with_patience<F: std::future::Future>(max_wait: Duration, f: F) -> F::Output {
    PATIENCE.scope(max_wait, f).await
}

/// How flexgate proves itself to the Management API.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A Machine-to-Machine application (`AUTH0_MGMT_CLIENT_ID` / `AUTH0_MGMT_CLIENT_SECRET`).
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    /// A ready Management API token (`AUTH0_MGMT_TOKEN`).
    Token(Secret),
}

impl Credentials {
    /// From `AUTH0_MGMT_CLIENT_ID` + `AUTH0_MGMT_CLIENT_SECRET`, else `AUTH0_MGMT_TOKEN`.
    pub fn from_env() -> Result<Credentials, Auth0Error> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        match (
            var("AUTH0_MGMT_CLIENT_ID"),
            var("AUTH0_MGMT_CLIENT_SECRET"),
            var("AUTH0_MGMT_TOKEN"),
        ) {
            (Some(id), Some(secret), _) => Ok(Credentials::ClientCredentials {
                client_id: id,
                client_secret: Secret::new(secret),
            }),
            (_, _, Some(t)) => Ok(Credentials::Token(Secret::new(t))),
            _ => Err(Auth0Error::NoCredentials),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where the API and `/oauth/token` are reached: `https://{tenant domain}` (no trailing slash).
    pub base_url: String,
    /// The token audience: `https://{tenant domain}/api/v2/` (differs from `base_url` behind a proxy).
    pub audience: String,
    pub credentials: Credentials,
    /// Timeout of each HTTP call.
    pub timeout: Duration,
    /// The longest one call may spend waiting for the rate limit (pacing and 429s together).
    pub max_wait: Duration,
}

impl ClientConfig {
    /// `base_url` = `https://{domain}` unless `management_url` overrides it; the audience always
    /// names the tenant (`domain`, else the URL).
    pub fn new(
        domain: Option<&str>,
        management_url: Option<&str>,
        credentials: Credentials,
    ) -> Result<Self, Auth0Error> {
        let from_domain = domain.map(|d| format!("https://{}", d.trim_end_matches('/')));
        let base = management_url
            .map(|u| u.trim_end_matches('/').to_string())
            .or_else(|| from_domain.clone())
            .ok_or(Auth0Error::NoTenant)?;
        let audience = format!("{}/api/v2/", from_domain.as_deref().unwrap_or(&base));
        Ok(ClientConfig {
            base_url: base,
            audience,
            credentials,
            timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(120),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Auth0Error {
    #[error("no Auth0 Management API credentials: set AUTH0_MGMT_CLIENT_ID and AUTH0_MGMT_CLIENT_SECRET (a Machine-to-Machine application authorized for the Management API), or AUTH0_MGMT_TOKEN")]
    NoCredentials,
    #[error("no Auth0 tenant given: pass --auth0-domain (e.g. example.us.auth0.com), --management-url, or --config with [upstream.management]")]
    NoTenant,
    #[error("the Auth0 Management API at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("the Auth0 Management API at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the Auth0 Management API refused flexgate's client credentials ({status}: {error}); check the client id and secret and that the application is authorized for the Management API")]
    Credentials { status: u16, error: String },
    #[error("the Auth0 Management API refused the token at {url} ({message}); check AUTH0_MGMT_TOKEN or the application's credentials")]
    Unauthorized { url: String, message: String },
    #[error("the Auth0 Management API refused {url} ({message}); grant the Machine-to-Machine application the scope this needs (see the README, Management API)")]
    Forbidden { url: String, message: String },
    #[error("the Auth0 Management API rate limit was reached: the next request could go in {} s, more than the {} s this call may wait", wait.as_secs_f64().ceil(), max_wait.as_secs())]
    RateLimited { wait: Duration, max_wait: Duration },
    #[error("the Auth0 Management API has no user {0:?}")]
    NoSuchUser(String),
    #[error("the Auth0 Management API has no {what} at {url}")]
    NotFound { url: String, what: String },
    #[error("the Auth0 Management API answered HTTP {status} at {url}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the Auth0 Management API sent a response flexgate cannot read at {url}: {reason}")]
    Garbage { url: String, reason: String },
}

impl Auth0Error {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Auth0Error::Timeout { .. })
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, Auth0Error::NotFound { .. })
    }
}

/// The most read of one response: a page of 100 users with their metadata fits easily.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Waits out a 429 without `X-RateLimit-Reset` this long.
const FALLBACK_WAIT: Duration = Duration::from_secs(1);

/// A token whose `expires_in` is missing or unreadable is taken to live this long (Auth0's
/// Management API tokens live 24 h by default; a 401 fetches a new one anyway).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// No token is cached longer than this, whatever its `expires_in` says.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a token answer's `expires_in` lets the token be cached: a minute early (at half-life
/// for short tokens), at most [`MAX_TOKEN_TTL`]; not at all when it is 0 or negative; the
/// default when it is missing or not a number. No value panics or overflows.
fn cache_for(expires_in: &Value) -> Duration {
    let secs = match expires_in {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let ttl = match secs.filter(|s| !s.is_nan()) {
        None => DEFAULT_TOKEN_TTL,
        Some(s) if s <= 0.0 => Duration::ZERO,
        Some(s) => Duration::try_from_secs_f64(s.min(MAX_TOKEN_TTL.as_secs_f64()))
            .unwrap_or(DEFAULT_TOKEN_TTL),
    };
    ttl.saturating_sub((ttl / 2).min(Duration::from_secs(60)))
}

/// An Auth0 Management API client. Cheap to share (`Arc`); one per tenant so pacing is shared.
pub struct Client {
    cfg: ClientConfig,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    pacer: Mutex<Pacer>,
    calls: AtomicU64,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("auth0::Client")
            .field("url", &self.cfg.base_url)
            .finish()
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Auth0's error body, as far as it is there.
fn message_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let pick = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    pick("message")
        .or_else(|| pick("error_description"))
        .or_else(|| pick("error"))
        .unwrap_or_else(|| "no error message".into())
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self, Auth0Error> {
        let http = crate::http_client::build(cfg.timeout).map_err(|e| Auth0Error::Unreachable {
            url: cfg.base_url.clone(),
            reason: e.to_string(),
        })?;
        Ok(Client {
            cfg,
            http,
            token: tokio::sync::Mutex::new(None),
            pacer: Mutex::new(Pacer::new(Instant::now())),
            calls: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Records Management API latency in `m` (label `management`) from now on.
    pub fn set_metrics(&self, m: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(m);
    }

    /// API requests sent so far (token requests not counted), 429s included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn net(&self, url: &str, e: reqwest::Error) -> Auth0Error {
        if e.is_timeout() {
            return Auth0Error::Timeout {
                url: url.to_string(),
                secs: self.cfg.timeout.as_secs(),
            };
        }
        let reason = crate::http_client::error_chain(&e);
        Auth0Error::Unreachable {
            url: url.to_string(),
            reason,
        }
    }

    async fn read(&self, mut resp: reqwest::Response, url: &str) -> Result<Vec<u8>, Auth0Error> {
        let too_big = || Auth0Error::Garbage {
            url: url.to_string(),
            reason: format!("the response is over {MAX_BODY} bytes"),
        };
        if resp.content_length().is_some_and(|n| n as usize > MAX_BODY) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.net(url, e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The bearer token: the fixed one, or a cached client-credentials token.
    async fn token(&self, refresh: bool) -> Result<Secret, Auth0Error> {
        let (client_id, client_secret) = match &self.cfg.credentials {
            Credentials::Token(t) => return Ok(t.clone()),
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => (client_id, client_secret),
        };
        let mut guard = self.token.lock().await;
        if let Some((t, until)) = guard.as_ref().filter(|_| !refresh) {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let url = format!("{}/oauth/token", self.cfg.base_url);
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret.expose(),
            "audience": self.cfg.audience,
        });
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.net(&url, e))?;
        let status = resp.status();
        let bytes = self.read(resp, &url).await?;
        if !status.is_success() {
            return Err(Auth0Error::Credentials {
                status: status.as_u16(),
                error: message_of(&bytes),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            expires_in: Value,
        }
        let t: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| Auth0Error::Garbage {
            url: url.clone(),
            reason: format!("not a token response ({:?})", e.classify()),
        })?;
        let until = Instant::now() + cache_for(&t.expires_in);
        let token = Secret::new(t.access_token);
        *guard = Some((token.clone(), until));
        Ok(token)
    }

    /// The scopes the token carries (its JWT `scope` claim, as Auth0's Management API tokens
    /// have), or `None` when the token is not a readable JWT. For checks ahead of a change; the
    /// API stays the judge.
    pub async fn granted_scopes(&self) -> Result<Option<Vec<String>>, Auth0Error> {
        let token = self.token(false).await?;
        Ok(jwt_scopes(token.expose()))
    }

    /// This call's patience: [`with_patience`]'s, else the client's.
    fn max_wait(&self) -> Duration {
        PATIENCE.try_with(|d| *d).unwrap_or(self.cfg.max_wait)
    }

    /// Waits for the pacer's slot; `Err` when it is beyond the caller's deadline.
    async fn paced(&self, deadline: Instant, max_wait: Duration) -> Result<(), Auth0Error> {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let at = self
            .pacer
            .lock()
            .reserve(now, left)
            .map_err(|wait| Auth0Error::RateLimited { wait, max_wait })?;
        if at > now {
            tokio::time::sleep_until(at.into()).await;
        }
        Ok(())
    }

    /// One API call: paced, authenticated, 401 → new token once, 429 → wait for the reset and
    /// again. Returns the status and the body of any answer that is not 401/429.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), Auth0Error> {
        let url = format!("{}{}", self.cfg.base_url, path_and_query);
        let max_wait = self.max_wait();
        let deadline = Instant::now() + max_wait;
        let mut token = self.token(false).await?;
        let mut refreshed = false;
        loop {
            self.paced(deadline, max_wait).await?;
            let t0 = Instant::now();
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let sent = req.send().await;
            if let Some(m) = self.metrics.get() {
                m.observe_upstream("management", t0);
            }
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.pacer.lock().cancel();
                    return Err(self.net(&url, e));
                }
            };
            let status = resp.status().as_u16();
            let rate = RateHeaders::from_headers(resp.headers(), now_unix());
            if status == 429 {
                let wait =
                    self.pacer
                        .lock()
                        .rate_limited(Instant::now(), rate, FALLBACK_WAIT, max_wait);
                if Instant::now() + wait > deadline {
                    return Err(Auth0Error::RateLimited { wait, max_wait });
                }
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "Auth0 Management API rate limit; waiting for its reset"
                );
                continue; // the pacer holds the next request until the reset
            }
            self.pacer.lock().observe(Instant::now(), rate);
            let bytes = self.read(resp, &url).await?;
            match status {
                401 if !refreshed
                    && matches!(self.cfg.credentials, Credentials::ClientCredentials { .. }) =>
                {
                    refreshed = true;
                    token = self.token(true).await?;
                }
                401 => {
                    return Err(Auth0Error::Unauthorized {
                        url,
                        message: message_of(&bytes),
                    })
                }
                403 => {
                    return Err(Auth0Error::Forbidden {
                        url,
                        message: message_of(&bytes),
                    })
                }
                _ => return Ok((status, bytes)),
            }
        }
    }

    /// A call whose 2xx answer is JSON `T`; 404 → [`Auth0Error::NotFound`] naming `what`,
    /// other statuses → [`Auth0Error::Status`] with Auth0's message.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<T, Auth0Error> {
        let (status, bytes) = self.send(method, path_and_query, body).await?;
        let url = || format!("{}{}", self.cfg.base_url, path_and_query);
        match status {
            200..=299 => {
                let bytes = if bytes.is_empty() {
                    b"null".to_vec()
                } else {
                    bytes
                };
                serde_json::from_slice(&bytes).map_err(|e| Auth0Error::Garbage {
                    url: url(),
                    reason: format!("unexpected JSON ({e})"),
                })
            }
            404 => Err(Auth0Error::NotFound {
                url: url(),
                what: message_of(&bytes),
            }),
            _ => Err(Auth0Error::Status {
                url: url(),
                status,
                message: message_of(&bytes),
            }),
        }
    }

    /// `GET path?query`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Auth0Error> {
        self.json(Method::GET, &with_query(path, query), None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Auth0Error> {
        let b = to_value(body)?;
        self.json(Method::POST, path, Some(&b)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Auth0Error> {
        let b = to_value(body)?;
        self.json(Method::PATCH, path, Some(&b)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Auth0Error> {
        let b = to_value(body)?;
        self.json(Method::PUT, path, Some(&b)).await
    }

    /// `DELETE path` (the answer body, if any, is ignored).
    pub async fn delete(&self, path: &str) -> Result<(), Auth0Error> {
        self.json::<Value>(Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    /// Streams a file Auth0 points to (a users-export `location`: a pre-signed URL on another
    /// host, so no token is sent and no Management API limit applies) into `sink`, chunk by
    /// chunk, at most `max` bytes. Stops early, without error, when the sink's reader is gone.
    /// No error names the URL beyond its host (reqwest's errors carry it: stripped).
    pub async fn download(
        &self,
        url: &PresignedUrl,
        max: u64,
        sink: &tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<(), Auth0Error> {
        let shown = url.shown();
        let net = |e: reqwest::Error| self.net(&shown, e.without_url());
        let mut resp = self.http.get(url.expose()).send().await.map_err(net)?;
        if !resp.status().is_success() {
            return Err(Auth0Error::Status {
                url: shown,
                status: resp.status().as_u16(),
                message: "the users-export file could not be downloaded".into(),
            });
        }
        let too_big = || {
            Auth0Error::Garbage {
            url: url.shown(),
            reason: format!("the users-export file is over {max} bytes, flexgate's cap on an export download; a tenant this large is beyond what flexgate reads in one snapshot"),
        }
        };
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_big());
        }
        let mut got = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(net)? {
            got = got.saturating_add(chunk.len() as u64);
            if got > max {
                return Err(too_big());
            }
            if sink.send(chunk.to_vec()).await.is_err() {
                return Ok(()); // the reader stopped (and says why)
            }
        }
        Ok(())
    }
}

/// A pre-signed download URL (a users-export `location`): whoever reads it gets the file, every
/// user of the tenant. It is never logged, printed, nor part of an error or of `Debug` output;
/// errors show [`PresignedUrl::shown`], its scheme and host.
#[derive(Clone)]
pub struct PresignedUrl(String);

impl PresignedUrl {
    pub fn new(url: String) -> Self {
        PresignedUrl(url)
    }

    fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as errors show it: scheme and host, path and query withheld.
    pub fn shown(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(u) => format!(
                "{}://{}/… (the pre-signed users-export download; its path and query are withheld)",
                u.scheme(),
                u.host_str().unwrap_or("?")
            ),
            Err(_) => "the pre-signed users-export download (withheld)".into(),
        }
    }
}

impl std::fmt::Debug for PresignedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresignedUrl(withheld)")
    }
}

fn to_value<B: Serialize>(body: &B) -> Result<Value, Auth0Error> {
    serde_json::to_value(body).map_err(|e| Auth0Error::Garbage {
        url: String::new(),
        reason: format!("the request body cannot be written as JSON: {e}"),
    })
}

/// `path?k=v&…`, values percent-encoded.
pub fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    format!("{path}?{q}")
}

/// The `scope` claim of a JWT's payload, unverified.
fn jwt_scopes(token: &str) -> Option<Vec<String>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let scope = v.get("scope")?.as_str()?;
    Some(scope.split_whitespace().map(str::to_string).collect())
}

/// One path segment, percent-encoded (user ids contain `|`).
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_lifetime_never_panics_and_stays_bounded() {
        assert_eq!(cache_for(&json!(86400)), Duration::from_secs(86340));
        assert_eq!(cache_for(&json!(60)), Duration::from_secs(30));
        assert_eq!(cache_for(&json!("7200")), Duration::from_secs(7140));
        for hostile in [
            json!(u64::MAX),
            json!(1e300),
            json!(f64::MAX),
            json!("1e400"),
        ] {
            assert_eq!(cache_for(&hostile), MAX_TOKEN_TTL - Duration::from_secs(60));
        }
        for none in [
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(-1e300),
            json!("-5"),
        ] {
            assert_eq!(cache_for(&none), Duration::ZERO, "{none}");
        }
        for unreadable in [
            Value::Null,
            json!("soon"),
            json!([1]),
            json!({}),
            json!("NaN"),
        ] {
            assert_eq!(
                cache_for(&unreadable),
                DEFAULT_TOKEN_TTL - Duration::from_secs(60),
                "{unreadable}"
            );
        }
        // Instant::now() + any of them does not overflow.
        let _ = Instant::now() + cache_for(&json!(u64::MAX));
    }

    #[tokio::test]
    async fn a_task_given_patience_waits_longer_than_the_client_default() {
        let c = Client::new(ClientConfig {
            base_url: "http://127.0.0.1:9".into(),
            audience: "http://127.0.0.1:9/api/v2/".into(),
            credentials: Credentials::Token(Secret::new("t".to_string())),
            timeout: Duration::from_secs(1),
            max_wait: Duration::from_secs(2),
        })
        .unwrap();
        assert_eq!(c.max_wait(), Duration::from_secs(2));
        let patient = with_patience(Duration::from_secs(60), async { c.max_wait() }).await;
        assert_eq!(patient, Duration::from_secs(60));
        // Only inside the scope.
        assert_eq!(c.max_wait(), Duration::from_secs(2));
    }
}
