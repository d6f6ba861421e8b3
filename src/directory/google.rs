//! Google Cloud Identity: a person's transitive groups (Google Workspace preset).
//!
//! - Credentials: a service-account JSON key (`type: service_account`, `client_email`,
//!   `private_key`, `private_key_id`, `token_uri`), parsed once by [`ServiceAccount`]. Access
//!   tokens come from the JWT-bearer grant (RFC 7523; Google's "Using OAuth 2.0 for Server to
//!   Server Applications"): an RS256 JWT `{iss: client_email, scope, aud: token URL, iat, exp}`
//!   POSTed as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`. The token is
//!   cached until shortly before it expires (at most an hour) and fetched again after a 401.
//! - Groups: `GET {cloud_identity_url}/v1/groups/-/memberships:searchTransitiveGroups` with
//!   `query=member_key_id == 'EMAIL' && 'cloudidentity.googleapis.com/groups.discussion_forum'
//!   in labels`, paged by `pageToken`/`nextPageToken`; each `memberships[]` entry (a
//!   `GroupRelation`) gives `groupKey.id` (the group's email) and `displayName`.
//! - Every call runs under the caller's deadline and the configured per-request timeout; pages,
//!   groups and bodies are capped; the next page is always asked of the configured URL.
//! - Errors name the cause and the fix; none carries the private key, the JWT or a token.
//!
//! Google's error body: `{"error":{"code":403,"message":"…","status":"PERMISSION_DENIED",
//! "details":[…]}}` (Cloud APIs "Errors" guide); the token endpoint's:
//! `{"error":"invalid_grant","error_description":"…"}` (RFC 6749 §5.2).

use crate::secret::Secret;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::Signer;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The one scope flexgate asks for: reading groups and memberships.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-identity.groups.readonly";
/// The label every Google Group (a "discussion forum") carries; the search must name a label.
pub const DISCUSSION_FORUM_LABEL: &str = "cloudidentity.googleapis.com/groups.discussion_forum";
/// The JWT-bearer grant type (RFC 7523 §2.1).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Pages asked for one person at most.
pub const MAX_PAGES: usize = 20;
/// Groups one person may be in (transitively) at most; more is an error, not a silent cut.
pub const MAX_GROUPS: usize = 2000;
/// The page size asked for (Google's default 200, max 1000).
const PAGE_SIZE: usize = 200;
/// The most read of one answer.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The biggest key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// The JWT's lifetime: Google accepts at most one hour.
const JWT_LIFETIME: u64 = 3600;
/// A token is never cached longer than this (Google's tokens from this grant live an hour).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// A token answer without a readable `expires_in` is cached this long.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    #[error("cannot read the Google service-account key file {path}: {reason}; set the path of the JSON key downloaded from the Cloud console (IAM & Admin > Service accounts > Keys > Add key > JSON)")]
    KeyFile { path: String, reason: String },
    #[error("not a Google service-account JSON key: {reason}; download a JSON key of the service account (IAM & Admin > Service accounts > Keys > Add key > Create new key > JSON) and use the file as it is")]
    NotServiceAccountKey { reason: String },
    #[error("the Google directory setting {what} is not usable: {reason}")]
    Config { what: &'static str, reason: String },
    #[error("cannot look up the Google groups of {email:?}: {reason}")]
    Email { email: String, reason: String },
    #[error("Google's token endpoint {url} refused the service account {client_email} (HTTP {status}, {error}: {description}); {fix}")]
    TokenRefused {
        url: String,
        client_email: String,
        status: u16,
        error: String,
        description: String,
        fix: &'static str,
    },
    #[error("Cloud Identity refused the service account {client_email} ({message}); in the Google Admin console assign it the Groups Reader admin role (Account > Admin roles > Groups Reader > Admins > Assign service accounts), or give its client ID domain-wide delegation for the scope {SCOPE} (Security > Access and data control > API controls); searchTransitiveGroups also needs Google Workspace Enterprise or Cloud Identity Premium")]
    PermissionDenied {
        client_email: String,
        message: String,
    },
    #[error("the Cloud Identity API is not enabled in the service account's project ({message}); enable it: Cloud console > APIs & Services > Library > Cloud Identity API > Enable")]
    ApiDisabled { message: String },
    #[error("Cloud Identity refused the access token of {client_email} twice at {url} ({message}); check that the service account and its key are still enabled")]
    Unauthorized {
        url: String,
        client_email: String,
        message: String,
    },
    #[error("Google is throttling or unavailable at {url} (HTTP {status}: {message}){}; try again later or raise the Cloud Identity API quota", retry_after.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    Throttled {
        url: String,
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
    #[error("{what} at {url} did not answer in time (gave up after {waited_ms} ms: the per-call timeout or the login's time budget ran out)")]
    Timeout {
        what: &'static str,
        url: String,
        waited_ms: u64,
    },
    #[error("{what} at {url} cannot be reached: {reason}")]
    Unreachable {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("Cloud Identity answered HTTP {status} at {url}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{what} at {url} sent an answer flexgate cannot read: {reason}")]
    Malformed {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{email:?} is in more Google groups than flexgate reads ({limit}); take the person out of groups Flex does not need, or ask for a higher limit")]
    TooManyGroups { email: String, limit: String },
}

impl GoogleError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, GoogleError::Timeout { .. })
    }
}

/// A Google service-account key, parsed once. `Debug` shows the account, never the key.
pub struct ServiceAccount {
    client_email: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    key: PKey<Private>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccount {
    /// Parses a service-account JSON key (the file Google hands out).
    pub fn from_json(bytes: &[u8]) -> Result<Self, GoogleError> {
        let bad = |reason: String| GoogleError::NotServiceAccountKey { reason };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            // serde's message may quote the input (the private key): give the place only.
            bad(format!(
                "not JSON (line {}, column {}, {:?})",
                e.line(),
                e.column(),
                e.classify()
            ))
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the JSON is not an object".into()))?;
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::trim);
        match text("type") {
            Some("service_account") => {}
            Some(other) => {
                return Err(bad(format!(
                    "its \"type\" is {other:?}, not \"service_account\" (an OAuth client or user credential cannot sign for itself)"
                )))
            }
            None => return Err(bad("it has no \"type\": \"service_account\"".into())),
        }
        let client_email = text("client_email")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("it has no \"client_email\"".into()))?
            .to_string();
        let pem = text("private_key")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("it has no \"private_key\"".into()))?;
        let key = PKey::private_key_from_pem(pem.as_bytes()).map_err(|_| {
            bad("its \"private_key\" is not a PEM private key (it must start with -----BEGIN PRIVATE KEY-----)".into())
        })?;
        if key.id() != Id::RSA {
            return Err(bad(
                "its \"private_key\" is not an RSA key (Google signs service-account JWTs with RS256)"
                    .into(),
            ));
        }
        if key.bits() < 2048 {
            return Err(bad(format!(
                "its RSA key has {} bits; Google's have 2048",
                key.bits()
            )));
        }
        let private_key_id = text("private_key_id")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let token_uri = text("token_uri")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(ServiceAccount {
            client_email,
            private_key_id,
            token_uri,
            key,
        })
    }

    /// Reads and parses a service-account JSON key file.
    pub fn from_file(path: &Path) -> Result<Self, GoogleError> {
        use std::io::Read;
        let fail = |reason: String| GoogleError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(fail(format!(
                "it is over {MAX_KEY_FILE} bytes; a JSON key is about 2 KB"
            )));
        }
        Self::from_json(&bytes)
    }

    /// The service account (`client_email`), the JWT's issuer.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's `token_uri`, if it names one.
    pub fn token_uri(&self) -> Option<&str> {
        self.token_uri.as_deref()
    }

    /// The RS256-signed JWT-bearer assertion for `aud`, issued at `iat` (Unix seconds).
    fn assertion(&self, aud: &str, iat: u64) -> Result<Secret, GoogleError> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = Value::String(kid.clone());
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": aud,
            "iat": iat,
            "exp": iat + JWT_LIFETIME,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sign_err = |e: openssl::error::ErrorStack| GoogleError::NotServiceAccountKey {
            reason: format!("its key cannot sign ({e})"),
        };
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key).map_err(sign_err)?;
        signer.update(input.as_bytes()).map_err(sign_err)?;
        let sig = signer.sign_to_vec().map_err(sign_err)?;
        Ok(Secret::new(format!("{input}.{}", b64(&sig))))
    }
}

/// Where and how to reach Google.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// `https://cloudidentity.googleapis.com` (no trailing `/v1`).
    pub cloud_identity_url: String,
    /// Overrides the key's `token_uri` (`https://oauth2.googleapis.com/token`).
    pub token_url: Option<String>,
    /// Timeout of each HTTP call (the caller's deadline may cut it shorter).
    pub timeout: Duration,
}

/// One group a person is in, directly or through other groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `groupKey.id`: the group's email address.
    pub id: String,
    /// `displayName`, when Google gives one.
    pub name: Option<String>,
}

/// A Cloud Identity groups client. Cheap to share behind an `Arc`; the token is shared.
pub struct CloudIdentity {
    sa: ServiceAccount,
    search_url: String,
    token_url: String,
    timeout: Duration,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for CloudIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudIdentity")
            .field("client_email", &self.sa.client_email)
            .field("search_url", &self.search_url)
            .field("token_url", &self.token_url)
            .finish()
    }
}

/// An `http(s)` URL with a host and no query, fragment or credentials; trailing `/` dropped.
fn base_url(what: &'static str, raw: &str) -> Result<String, GoogleError> {
    let bad = |reason: String| GoogleError::Config { what, reason };
    let u = url::Url::parse(raw.trim()).map_err(|e| bad(format!("{raw:?} is not a URL ({e})")))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
        return Err(bad(format!("{raw:?} is not an http(s) URL with a host")));
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(bad(format!(
            "{raw:?} must not carry a query, fragment or credentials"
        )));
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long a token answer's `expires_in` lets the token be cached: a minute early (at half-life
/// for short tokens), at most [`MAX_TOKEN_TTL`]; not at all when 0 or negative. Never panics.
fn cache_for(expires_in: Option<&Value>) -> Duration {
    let secs = match expires_in {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let ttl = match secs.filter(|s| s.is_finite()) {
        None => DEFAULT_TOKEN_TTL,
        Some(s) if s <= 0.0 => Duration::ZERO,
        Some(s) => Duration::try_from_secs_f64(s.min(MAX_TOKEN_TTL.as_secs_f64()))
            .unwrap_or(DEFAULT_TOKEN_TTL),
    };
    ttl.saturating_sub((ttl / 2).min(Duration::from_secs(60)))
}

/// The email, checked to go between single quotes of a CEL string literal unchanged.
fn checked_email(email: &str) -> Result<&str, GoogleError> {
    let bad = |reason: &str| GoogleError::Email {
        email: email.chars().take(320).collect(),
        reason: reason.to_string(),
    };
    if email.is_empty() || email.len() > 254 {
        return Err(bad("an email address has 1 to 254 characters"));
    }
    if email
        .chars()
        .any(|c| c == '\'' || c == '"' || c == '\\' || c.is_control() || c.is_whitespace())
    {
        return Err(bad(
            "it holds a quote, backslash, space or control character, which cannot go into a Cloud Identity query safely",
        ));
    }
    match email.split_once('@') {
        Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@') => Ok(email),
        _ => Err(bad("it is not an email address (local@domain)")),
    }
}

/// Google's error body `{"error":{"code","message","status","details"}}`, or the OAuth one.
struct ApiError {
    message: String,
    status: Option<String>,
    reasons: Vec<String>,
}

fn api_error(body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error");
    let s = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(300).collect::<String>())
    };
    let reasons = e
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|x| x.get("reason").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    ApiError {
        message: s(e, "message")
            .or_else(|| s(Some(&v), "error_description"))
            .or_else(|| e.and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "no error message".into()),
        status: s(e, "status"),
        reasons,
    }
}

/// What to do about a refused JWT-bearer grant, by its `error`.
fn token_fix(error: &str, description: &str) -> &'static str {
    match error {
        "invalid_grant" if description.to_ascii_lowercase().contains("signature") => {
            "the key file's private key is not (any longer) a key of this service account: create a new JSON key and use it"
        }
        "invalid_grant" => {
            "check that the service account and its key exist and are enabled, and that this machine's clock is right (the JWT holds the time)"
        }
        "unauthorized_client" => {
            "the service account may not ask for this scope: assign it the Groups Reader admin role or give it domain-wide delegation for the scope"
        }
        "invalid_scope" => "the scope was refused: check the service account's domain-wide delegation scopes",
        "invalid_client" => "the service account is unknown or disabled: check client_email in the key file",
        _ => "check the service account and its key in the Cloud console",
    }
}

impl CloudIdentity {
    pub fn new(sa: ServiceAccount, cfg: GoogleConfig) -> Result<Self, GoogleError> {
        let base = base_url("cloud_identity_url", &cfg.cloud_identity_url)?;
        let token_raw = cfg
            .token_url
            .clone()
            .or_else(|| sa.token_uri.clone())
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
        let token_url = base_url("token_url", &token_raw)?;
        if cfg.timeout.is_zero() {
            return Err(GoogleError::Config {
                what: "timeout",
                reason: "it must be more than 0".into(),
            });
        }
        let http = crate::http_client::build(cfg.timeout).map_err(|e| GoogleError::Config {
            what: "HTTP client",
            reason: e.to_string(),
        })?;
        Ok(CloudIdentity {
            sa,
            search_url: format!("{base}/v1/groups/-/memberships:searchTransitiveGroups"),
            token_url,
            timeout: cfg.timeout,
            http,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The service account this client speaks as.
    pub fn client_email(&self) -> &str {
        &self.sa.client_email
    }

    fn timeout_err(&self, what: &'static str, url: &str, started: Instant) -> GoogleError {
        GoogleError::Timeout {
            what,
            url: url.to_string(),
            waited_ms: started.elapsed().as_millis().min(u64::MAX as u128) as u64,
        }
    }

    fn net(&self, what: &'static str, url: &str, e: reqwest::Error, t0: Instant) -> GoogleError {
        if e.is_timeout() {
            return self.timeout_err(what, url, t0);
        }
        let reason = crate::http_client::error_chain(&e);
        GoogleError::Unreachable {
            what,
            url: url.to_string(),
            reason,
        }
    }

    /// Sends `req` and reads the answer (capped), all before `deadline`.
    async fn call(
        &self,
        what: &'static str,
        url: &str,
        req: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), GoogleError> {
        let t0 = Instant::now();
        let fut = async {
            let mut resp = req.send().await.map_err(|e| self.net(what, url, e, t0))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let too_big = || GoogleError::Malformed {
                what,
                url: url.to_string(),
                reason: format!("the answer is over {MAX_BODY} bytes"),
            };
            if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
                return Err(too_big());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.net(what, url, e, t0))? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_big());
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, headers, body))
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_err(what, url, t0)),
        }
    }

    /// An access token: the cached one, or a new one from the JWT-bearer grant.
    async fn token(&self, refresh: bool, deadline: Instant) -> Result<Secret, GoogleError> {
        let t0 = Instant::now();
        let mut guard = tokio::time::timeout_at(deadline, self.token.lock())
            .await
            .map_err(|_| self.timeout_err("Google's token endpoint", &self.token_url, t0))?;
        if let Some((t, until)) = guard.as_ref().filter(|_| !refresh) {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        *guard = None;
        let what = "Google's token endpoint";
        let url = &self.token_url;
        let jwt = self.sa.assertion(url, now_unix())?;
        let req = self
            .http
            .post(url)
            .form(&[("grant_type", JWT_BEARER), ("assertion", jwt.expose())]);
        let (status, _, body) = self.call(what, url, req, deadline).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let s = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(300).collect::<String>())
            };
            let error = s("error").unwrap_or_else(|| "no error code".into());
            let description = s("error_description").unwrap_or_else(|| "no description".into());
            if matches!(status.as_u16(), 429 | 500..=599) {
                return Err(GoogleError::Throttled {
                    url: url.clone(),
                    status: status.as_u16(),
                    message: format!("{error}: {description}"),
                    retry_after: None,
                });
            }
            return Err(GoogleError::TokenRefused {
                url: url.clone(),
                client_email: self.sa.client_email.clone(),
                status: status.as_u16(),
                fix: token_fix(&error, &description),
                error,
                description,
            });
        }
        let malformed = |reason: &str| GoogleError::Malformed {
            what,
            url: url.clone(),
            reason: reason.to_string(),
        };
        let access = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("no access_token in a 200 answer"))?;
        if let Some(tt) = v.get("token_type").and_then(Value::as_str) {
            if !tt.eq_ignore_ascii_case("bearer") {
                return Err(malformed("the token_type is not Bearer"));
            }
        }
        let token = Secret::new(access);
        let ttl = cache_for(v.get("expires_in"));
        if let Some(until) = Instant::now().checked_add(ttl) {
            *guard = Some((token.clone(), until));
        }
        Ok(token)
    }

    /// Gets an access token before `deadline` (`flexgate check`): proves the key, the account and
    /// the token URL, not yet the Groups Reader role (that needs a person to search for).
    pub async fn check_token(&self, deadline: Instant) -> Result<(), GoogleError> {
        self.token(true, deadline).await.map(|_| ())
    }

    /// Every group `email` is in, directly or through other groups (Google Groups only: the
    /// discussion-forum label), all before `deadline`.
    pub async fn transitive_groups(
        &self,
        email: &str,
        deadline: Instant,
    ) -> Result<Vec<Group>, GoogleError> {
        let email = checked_email(email)?;
        let query = format!("member_key_id == '{email}' && '{DISCUSSION_FORUM_LABEL}' in labels");
        let what = "Cloud Identity";
        let url = &self.search_url;
        let mut token = self.token(false, deadline).await?;
        let mut refreshed = false;
        let mut groups: Vec<Group> = Vec::new();
        let mut seen_ids: HashSet<String> = HashSet::new();
        let mut seen_tokens: HashSet<String> = HashSet::new();
        let mut page_token: Option<String> = None;
        let mut pages = 0usize;
        loop {
            if pages >= MAX_PAGES {
                return Err(GoogleError::TooManyGroups {
                    email: email.to_string(),
                    limit: format!("{MAX_PAGES} pages"),
                });
            }
            let page_size = PAGE_SIZE.to_string();
            let mut params: Vec<(&str, &str)> =
                vec![("query", query.as_str()), ("pageSize", page_size.as_str())];
            if let Some(t) = &page_token {
                params.push(("pageToken", t.as_str()));
            }
            let req = self
                .http
                .get(url)
                .bearer_auth(token.expose())
                .query(&params);
            let (status, headers, body) = self.call(what, url, req, deadline).await?;
            if status.as_u16() == 401 && !refreshed {
                refreshed = true;
                token = self.token(true, deadline).await?;
                continue;
            }
            pages += 1;
            if !status.is_success() {
                return Err(self.status_error(status.as_u16(), &headers, &body));
            }
            let malformed = |reason: String| GoogleError::Malformed {
                what,
                url: url.clone(),
                reason,
            };
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| malformed(format!("not JSON ({:?})", e.classify())))?;
            let list = match v.get("memberships") {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(a)) => a.as_slice(),
                Some(_) => return Err(malformed("memberships is not a list".into())),
            };
            for m in list {
                let id = m
                    .get("groupKey")
                    .and_then(|k| k.get("id"))
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| malformed("a membership has no groupKey.id".into()))?;
                if !seen_ids.insert(id.to_ascii_lowercase()) {
                    continue;
                }
                if groups.len() >= MAX_GROUPS {
                    return Err(GoogleError::TooManyGroups {
                        email: email.to_string(),
                        limit: format!("{MAX_GROUPS} groups"),
                    });
                }
                groups.push(Group {
                    id: id.to_string(),
                    name: m
                        .get("displayName")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                });
            }
            match v.get("nextPageToken") {
                None | Some(Value::Null) => break,
                Some(Value::String(t)) if t.is_empty() => break,
                Some(Value::String(t)) => {
                    if t.len() > 4096 || !seen_tokens.insert(t.clone()) {
                        return Err(malformed(
                            "nextPageToken repeats an earlier one or is over 4096 bytes".into(),
                        ));
                    }
                    page_token = Some(t.clone());
                }
                Some(_) => return Err(malformed("nextPageToken is not a string".into())),
            }
        }
        tracing::debug!(
            groups = groups.len(),
            pages,
            "Cloud Identity transitive groups read"
        );
        Ok(groups)
    }

    fn status_error(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> GoogleError {
        let e = api_error(body);
        let url = self.search_url.clone();
        match status {
            403 if e.reasons.iter().any(|r| r == "SERVICE_DISABLED")
                || e.status.as_deref() == Some("SERVICE_DISABLED") =>
            {
                GoogleError::ApiDisabled { message: e.message }
            }
            403 => GoogleError::PermissionDenied {
                client_email: self.sa.client_email.clone(),
                message: e.message,
            },
            401 => GoogleError::Unauthorized {
                url,
                client_email: self.sa.client_email.clone(),
                message: e.message,
            },
            429 | 500 | 502..=504 => GoogleError::Throttled {
                url,
                status,
                message: e.message,
                retry_after: headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok()),
            },
            _ => GoogleError::Status {
                url,
                status,
                message: e.message,
            },
        }
    }

    /// The timeout of each HTTP call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_for_never_panics_and_stays_bounded() {
        for v in [
            serde_json::json!(3599),
            serde_json::json!(1e300),
            serde_json::json!(-5),
            serde_json::json!(0),
            serde_json::json!("abc"),
            serde_json::json!(u64::MAX),
            serde_json::json!("1e309"),
            serde_json::json!(null),
        ] {
            assert!(cache_for(Some(&v)) <= MAX_TOKEN_TTL, "{v}");
        }
        assert_eq!(
            cache_for(Some(&serde_json::json!(3600))),
            Duration::from_secs(3540)
        );
        assert_eq!(cache_for(Some(&serde_json::json!(-5))), Duration::ZERO);
        assert_eq!(cache_for(None), DEFAULT_TOKEN_TTL - Duration::from_secs(60));
    }

    #[test]
    fn emails_that_would_break_the_query_are_refused() {
        assert!(checked_email("ada@example.com").is_ok());
        for e in [
            "",
            "o'brien@example.com",
            "a\\@example.com",
            "a\"b@example.com",
            "a b@example.com",
            "noat",
            "@example.com",
            "a@",
            "a@b@c",
        ] {
            assert!(checked_email(e).is_err(), "{e:?}");
        }
    }
}
