//! Roles from the Auth0 Management API, for tenants that will not add a post-login Action:
//! a client-credentials token (cached until shortly before it expires), then
//! `GET /api/v2/users/{id}` → `app_metadata`, cached per user for a short time. A 429 is retried
//! once when its `Retry-After` is short; every call has the upstream timeout. Any failure stops
//! the login: never an assertion without roles.

use crate::config::ManagementConfig;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("the Auth0 Management API at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("the Auth0 Management API at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the Auth0 Management API refused flexgate's client credentials ({status}: {error}); check upstream.management.client_id/client_secret and that the application is authorized for the Management API with read:users")]
    Credentials { status: u16, error: String },
    #[error("the Auth0 Management API rate limit was reached (Retry-After {retry_after:?} s)")]
    RateLimited { retry_after: Option<u64> },
    #[error("the Auth0 Management API has no user {0:?}")]
    NoSuchUser(String),
    #[error("the Auth0 Management API answered HTTP {status} at {url}")]
    Status { url: String, status: u16 },
    #[error("the Auth0 Management API sent a response flexgate cannot read at {url}: {reason}")]
    Garbage { url: String, reason: String },
}

impl ManagementError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, ManagementError::Timeout { .. })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// A Management API client.
pub struct Management {
    cfg: ManagementConfig,
    timeout: Duration,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    cache: Mutex<HashMap<String, (Instant, Value)>>,
    metrics: std::sync::OnceLock<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("url", &self.cfg.url)
            .finish()
    }
}

const MAX_RETRY_AFTER: u64 = 2;

impl Management {
    pub fn new(cfg: ManagementConfig, timeout: Duration) -> Result<Self, ManagementError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Drop idle connections before common server keep-alive limits (node: 5 s), so a
            // request never races the server closing the connection it was about to reuse.
            .pool_idle_timeout(Duration::from_secs(4))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flexgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ManagementError::Unreachable {
                url: cfg.url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Management {
            cfg,
            timeout,
            http,
            token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Records Management API latency in `m` from now on.
    pub fn set_metrics(&self, m: std::sync::Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(m);
    }

    fn net(&self, url: &str, e: reqwest::Error) -> ManagementError {
        if e.is_timeout() {
            ManagementError::Timeout {
                url: url.to_string(),
                secs: self.timeout.as_secs(),
            }
        } else {
            ManagementError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            }
        }
    }

    async fn token(&self, refresh: bool) -> Result<String, ManagementError> {
        let mut guard = self.token.lock().await;
        if !refresh {
            if let Some((t, until)) = guard.as_ref() {
                if Instant::now() < *until {
                    return Ok(t.clone());
                }
            }
        }
        let url = format!("{}/oauth/token", self.cfg.url);
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.cfg.client_id,
            "client_secret": self.cfg.client_secret.expose(),
            "audience": format!("{}/api/v2/", self.cfg.url),
        });
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.net(&url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.net(&url, e))?;
        if !status.is_success() {
            let err = serde_json::from_slice::<TokenError>(&bytes)
                .map(|e| {
                    format!(
                        "{}{}",
                        e.error,
                        e.error_description
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|_| "no error body".into());
            return Err(ManagementError::Credentials {
                status: status.as_u16(),
                error: err,
            });
        }
        let t: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| ManagementError::Garbage {
                url: url.clone(),
                reason: format!("not a token response ({:?})", e.classify()),
            })?;
        let ttl = t.expires_in.unwrap_or(3600);
        // Refresh a minute early (or at half-life for short tokens).
        let margin = (ttl / 2).min(60);
        let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(margin));
        *guard = Some((t.access_token.clone(), until));
        Ok(t.access_token)
    }

    /// The user's `app_metadata` (an empty object when the user has none).
    pub async fn app_metadata(&self, user_id: &str) -> Result<Value, ManagementError> {
        let t0 = Instant::now();
        let r = self.app_metadata_uncounted(user_id).await;
        if let Some(m) = self.metrics.get() {
            m.observe_upstream("management", t0);
        }
        r
    }

    async fn app_metadata_uncounted(&self, user_id: &str) -> Result<Value, ManagementError> {
        if let Some((at, v)) = self.cache.lock().get(user_id) {
            if at.elapsed() < self.cfg.cache_ttl {
                return Ok(v.clone());
            }
        }
        let id: String = url::form_urlencoded::byte_serialize(user_id.as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        let url = format!("{}/api/v2/users/{id}", self.cfg.url);
        let mut token = self.token(false).await?;
        let mut refreshed = false;
        let mut retried_429 = false;
        loop {
            let resp = self
                .http
                .get(&url)
                .query(&[
                    ("fields", "user_id,app_metadata"),
                    ("include_fields", "true"),
                ])
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| self.net(&url, e))?;
            match resp.status().as_u16() {
                200 => {
                    let v: Value = resp.json().await.map_err(|e| ManagementError::Garbage {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                    let meta = v
                        .get("app_metadata")
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Default::default()));
                    let mut cache = self.cache.lock();
                    if cache.len() > 10_000 {
                        let ttl = self.cfg.cache_ttl;
                        cache.retain(|_, (at, _)| at.elapsed() < ttl);
                    }
                    cache.insert(user_id.to_string(), (Instant::now(), meta.clone()));
                    return Ok(meta);
                }
                401 if !refreshed => {
                    refreshed = true;
                    token = self.token(true).await?;
                }
                404 => return Err(ManagementError::NoSuchUser(user_id.to_string())),
                429 => {
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    match retry_after {
                        Some(s) if !retried_429 && s <= MAX_RETRY_AFTER => {
                            retried_429 = true;
                            tracing::warn!(
                                retry_after = s,
                                "Auth0 Management API rate limit; retrying once"
                            );
                            tokio::time::sleep(Duration::from_secs(s)).await;
                        }
                        _ => return Err(ManagementError::RateLimited { retry_after }),
                    }
                }
                status => return Err(ManagementError::Status { url, status }),
            }
        }
    }
}
