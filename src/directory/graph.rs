//! Microsoft Graph: a person's transitive groups when Entra ID sends the groups overage.
//!
//! Entra ID puts at most 200 groups into a JWT; a person in more gets `hasgroups: true` (implicit
//! flow) or `_claim_names: {"groups": "src1"}` instead of the `groups` list ([`crate::provider::groups_overage`]).
//! flexgate then reads the groups itself, with the app registration's own credentials:
//!
//! - Token: the client-credentials grant at the tenant's v2.0 token endpoint
//!   (`https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`), form fields `client_id`,
//!   `client_secret`, `grant_type=client_credentials`, `scope=https://graph.microsoft.com/.default`;
//!   answer `{"token_type":"Bearer","expires_in":3599,"access_token":…}`, errors
//!   `{"error","error_description":"AADSTS…","error_codes":[…],…}` (Microsoft identity platform,
//!   "OAuth 2.0 client credentials flow"). The token is cached until shortly before `expires_in`.
//! - Groups: `GET {graph}/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group
//!   ?$select=id,displayName&$top=999&$count=true` with `ConsistencyLevel: eventual` (the OData
//!   cast is an advanced query) → `{"@odata.count":n,"value":[{"id","displayName"}…],
//!   "@odata.nextLink":…}` (Graph v1.0 "List a user's memberships (direct and transitive)",
//!   "Advanced query capabilities on Microsoft Entra ID objects"; page size at most 999).
//!   `@odata.nextLink` pages are followed on the Graph URL's own origin only, at most
//!   [`MAX_PAGES`] pages and [`MAX_GROUPS`] groups.
//! - Errors: Graph's `{"error":{"code","message","innerError":{…}}}`; 403
//!   `Authorization_RequestDenied` means the app lacks the application permission; 429/503 carry
//!   `Retry-After`, honoured only while the caller's deadline allows.
//!
//! Everything runs under the caller's deadline (the login's time budget). Tokens and the client
//! secret never enter an error or a log line.

use crate::secret::Secret;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// The Graph scope of a client-credentials token: the app's granted application permissions.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The most `@odata.nextLink` pages read for one person (999 groups a page).
pub const MAX_PAGES: usize = 20;
/// The most groups read for one person.
pub const MAX_GROUPS: usize = 10_000;
/// The most read of one answer: a page of 999 groups with names is far below.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Retries of one request after a 429/503 (each also bounded by the deadline).
const MAX_RETRIES: u32 = 3;
/// The wait after a 429/503 without a readable `Retry-After`.
const FALLBACK_RETRY: Duration = Duration::from_secs(1);
/// A token whose `expires_in` is missing or unreadable is cached this long (Entra: ~1 h).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// No token is cached longer than this, whatever its `expires_in` says.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The most of a peer's error text carried into an error.
const MAX_MESSAGE: usize = 300;

/// Where and how to reach Graph. Built by the caller from its configuration.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// `https://graph.microsoft.com` (national clouds: their Graph host), no trailing `/v1.0`.
    pub graph_url: String,
    /// The tenant's token endpoint: `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    pub client_secret: Secret,
    /// Timeout of each HTTP call (the caller's deadline bounds the whole lookup besides).
    pub timeout: Duration,
}

/// One group a person is a (direct or transitive) member of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group's object id (what Entra ID puts into the `groups` claim).
    pub id: String,
    /// `displayName`; `None` when Graph does not send it (e.g. the app may read only ids).
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("the Microsoft Graph {what} {value:?} is not a usable URL ({reason}); give an absolute http(s) URL such as {example}")]
    BadUrl {
        what: &'static str,
        value: String,
        reason: String,
        example: &'static str,
    },
    #[error("the Entra ID object id {0:?} is not a GUID; flexgate reads groups by the ID token's `oid` claim, which Entra ID always sends as a GUID")]
    BadUserId(String),
    #[error("the Microsoft identity platform at {url} refused flexgate's client credentials (HTTP {status}, {error}: {description}); check the application (client) id and the client secret of the app registration (Certificates & secrets: has it expired?) and that the token URL names its tenant")]
    TokenRefused {
        url: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("Microsoft Graph refused to list the groups of user {oid} (HTTP 403, {code}: {message}); grant the app registration the Microsoft Graph application permission GroupMember.Read.All (API permissions → Add a permission → Application permissions) and grant admin consent for the tenant")]
    Forbidden {
        oid: String,
        code: String,
        message: String,
    },
    #[error("Microsoft Graph rejected flexgate's access token (HTTP 401, {code}: {message}) even after fetching a new one; check that the token URL and the Graph URL belong to the same cloud and tenant")]
    Unauthorized { code: String, message: String },
    #[error("Microsoft Graph has no user with object id {oid} (HTTP 404, {code}); the ID token must come from the tenant whose app registration flexgate uses for Graph")]
    UserNotFound { oid: String, code: String },
    #[error("Microsoft Graph is busy (HTTP {status}) and asked to retry in {} s, beyond this login's time budget; the login can be tried again shortly", retry_after.as_secs_f64().ceil())]
    Throttled { status: u16, retry_after: Duration },
    #[error("Microsoft Graph stayed busy (HTTP {status}) after {MAX_RETRIES} retries; the login can be tried again shortly")]
    StillThrottled { status: u16 },
    #[error("the {stage} did not answer within this login's time budget; check that flexgate reaches it (proxy, firewall) or raise the login timeout")]
    Timeout { stage: &'static str },
    #[error("the {stage} at {url} cannot be reached: {reason}")]
    Unreachable {
        stage: &'static str,
        url: String,
        reason: String,
    },
    #[error("Microsoft Graph answered HTTP {status} at {url} ({code}: {message})")]
    Status {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the {stage} sent an answer flexgate cannot read at {url}: {reason}")]
    Malformed {
        stage: &'static str,
        url: String,
        reason: String,
    },
    #[error("Microsoft Graph's next-page link points to {link_origin}, not to {graph_origin}; flexgate follows page links on the Graph URL's own origin only (is a proxy rewriting answers?)")]
    ForeignNextLink {
        link_origin: String,
        graph_origin: String,
    },
    #[error("user {oid} has more groups than flexgate reads (over {limit}); reduce the person's group memberships or use group filtering (groupMembershipClaims: ApplicationGroup) in the app registration")]
    TooManyGroups { oid: String, limit: String },
}

impl GraphError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, GraphError::Timeout { .. })
    }
}

/// How long a token answer's `expires_in` lets the token be cached: a minute early (at half-life
/// for short tokens), at most [`MAX_TOKEN_TTL`]; not at all when 0 or negative; the default when
/// missing or unreadable. No value panics or overflows.
fn cache_for(expires_in: &Value) -> Duration {
    let secs = match expires_in {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
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

/// A `Retry-After` of delta-seconds; `None` when missing or an HTTP date (then the fallback).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(24 * 3600)))
}

/// A peer's text, cut to [`MAX_MESSAGE`] characters and to its first line (Entra appends trace
/// and correlation ids after a line break).
fn short(s: &str) -> String {
    let first = s.lines().next().unwrap_or("").trim();
    let mut out: String = first.chars().take(MAX_MESSAGE).collect();
    if first.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// Graph's error body `{"error":{"code","message"}}`, as far as it is there.
fn graph_error(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error");
    let pick = |k: &str| {
        e.and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(short)
            .filter(|s| !s.is_empty())
    };
    (
        pick("code").unwrap_or_else(|| "no error code".into()),
        pick("message").unwrap_or_else(|| "no error message".into()),
    )
}

/// An Entra object id: a GUID (hex digits and dashes), which also keeps the URL path intact.
fn valid_oid(oid: &str) -> bool {
    !oid.is_empty() && oid.len() <= 64 && oid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn parse_url(
    what: &'static str,
    value: &str,
    example: &'static str,
) -> Result<url::Url, GraphError> {
    let bad = |reason: String| GraphError::BadUrl {
        what,
        value: value.to_string(),
        reason,
        example,
    };
    let u = url::Url::parse(value).map_err(|e| bad(e.to_string()))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
        return Err(bad("not an http(s) URL with a host".into()));
    }
    Ok(u)
}

/// A Microsoft Graph client for group lookups. Share it (`Arc`): the token cache is per client.
pub struct Graph {
    cfg: GraphConfig,
    graph_base: String,
    graph_origin: url::Origin,
    token_url: url::Url,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("graph_url", &self.graph_base)
            .field("token_url", &self.cfg.token_url)
            .finish()
    }
}

const TOKEN: &str = "Microsoft identity platform token endpoint";
const GRAPH: &str = "Microsoft Graph";

/// The error of a request that failed on the wire.
fn net(stage: &'static str, url: &str, e: reqwest::Error) -> GraphError {
    if e.is_timeout() {
        return GraphError::Timeout { stage };
    }
    let reason = crate::http_client::error_chain(&e);
    GraphError::Unreachable {
        stage,
        url: url.to_string(),
        reason,
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes.
async fn read(
    stage: &'static str,
    url: &str,
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, GraphError> {
    let too_big = || GraphError::Malformed {
        stage,
        url: url.to_string(),
        reason: format!("the answer is over {MAX_BODY} bytes"),
    };
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| net(stage, url, e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Graph {
    pub fn new(cfg: GraphConfig) -> Result<Self, GraphError> {
        let graph = parse_url("URL", &cfg.graph_url, "https://graph.microsoft.com")?;
        let token_url = parse_url(
            "token URL",
            &cfg.token_url,
            "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        )?;
        let http = crate::http_client::build(cfg.timeout).map_err(|e| GraphError::Unreachable {
            stage: GRAPH,
            url: cfg.graph_url.clone(),
            reason: e.to_string(),
        })?;
        Ok(Graph {
            graph_base: cfg.graph_url.trim_end_matches('/').to_string(),
            graph_origin: graph.origin(),
            token_url,
            cfg,
            http,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The groups `oid` (the ID token's `oid` claim) is a direct or transitive member of, read
    /// before `deadline` (the login's time budget) or [`GraphError::Timeout`].
    pub async fn transitive_groups(
        &self,
        oid: &str,
        deadline: Instant,
    ) -> Result<Vec<Group>, GraphError> {
        if !valid_oid(oid) {
            return Err(GraphError::BadUserId(short(oid)));
        }
        if Instant::now() >= deadline {
            return Err(GraphError::Timeout { stage: GRAPH });
        }
        let stage = std::sync::atomic::AtomicBool::new(false);
        match tokio::time::timeout_at(deadline, self.collect(oid, deadline, &stage)).await {
            Ok(r) => r,
            Err(_) => Err(GraphError::Timeout {
                stage: if stage.load(std::sync::atomic::Ordering::Relaxed) {
                    GRAPH
                } else {
                    TOKEN
                },
            }),
        }
    }

    /// Gets a client-credentials token before `deadline` (`flexgate check`): proves the client
    /// id, secret and token URL, not yet the Graph permission (that needs a user to read).
    pub async fn check_token(&self, deadline: Instant) -> Result<(), GraphError> {
        match tokio::time::timeout_at(deadline, self.token(true)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(GraphError::Timeout { stage: TOKEN }),
        }
    }

    /// All pages; `past_token` is set once a token is in hand (for the timeout's wording).
    async fn collect(
        &self,
        oid: &str,
        deadline: Instant,
        past_token: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<Group>, GraphError> {
        let mut token = self.token(false).await?;
        past_token.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut refreshed = false;
        let first = format!(
            "{}/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$top=999&$count=true",
            self.graph_base
        );
        let mut next = Some(first);
        let mut groups = Vec::new();
        let mut pages = 0usize;
        while let Some(url) = next.take() {
            if pages == MAX_PAGES {
                return Err(GraphError::TooManyGroups {
                    oid: oid.to_string(),
                    limit: format!("{MAX_PAGES} pages"),
                });
            }
            pages += 1;
            let page = loop {
                match self.page(&url, &token, oid, deadline).await {
                    Err(GraphError::Unauthorized { .. }) if !refreshed => {
                        // The cached token may have been revoked or expired early: once more.
                        refreshed = true;
                        token = self.token(true).await?;
                    }
                    other => break other?,
                }
            };
            for g in page.value {
                if groups.len() == MAX_GROUPS {
                    return Err(GraphError::TooManyGroups {
                        oid: oid.to_string(),
                        limit: format!("{MAX_GROUPS} groups"),
                    });
                }
                groups.push(g);
            }
            next = match page.next {
                None => None,
                Some(link) => Some(self.same_origin(&link)?),
            };
        }
        Ok(groups)
    }

    /// `link` when it is on the Graph URL's origin.
    fn same_origin(&self, link: &str) -> Result<String, GraphError> {
        let u = url::Url::parse(link).map_err(|e| GraphError::Malformed {
            stage: GRAPH,
            url: self.graph_base.clone(),
            reason: format!("@odata.nextLink is not a URL ({e})"),
        })?;
        if u.origin() != self.graph_origin {
            return Err(GraphError::ForeignNextLink {
                link_origin: u.origin().ascii_serialization(),
                graph_origin: self.graph_origin.ascii_serialization(),
            });
        }
        Ok(u.into())
    }

    /// One page, with 429/503 retried while `deadline` allows.
    async fn page(
        &self,
        url: &str,
        token: &Secret,
        oid: &str,
        deadline: Instant,
    ) -> Result<Page, GraphError> {
        let mut retries = 0;
        loop {
            let resp = self
                .http
                .get(url)
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                // The OData cast to microsoft.graph.group is an advanced query: Graph wants
                // `ConsistencyLevel: eventual` and `$count=true` with it.
                .header("ConsistencyLevel", "eventual")
                .send()
                .await
                .map_err(|e| net(GRAPH, url, e))?;
            let status = resp.status().as_u16();
            let wait = retry_after(resp.headers());
            let body = read(GRAPH, url, resp).await?;
            match status {
                200 => return parse_page(url, &body),
                429 | 503 => {
                    let wait = wait.unwrap_or(FALLBACK_RETRY);
                    if Instant::now() + wait >= deadline {
                        return Err(GraphError::Throttled {
                            status,
                            retry_after: wait,
                        });
                    }
                    if retries == MAX_RETRIES {
                        return Err(GraphError::StillThrottled { status });
                    }
                    retries += 1;
                    tracing::warn!(
                        status,
                        wait_ms = wait.as_millis() as u64,
                        "Microsoft Graph is busy; retrying after its Retry-After"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    let (code, message) = graph_error(&body);
                    return Err(match status {
                        401 => GraphError::Unauthorized { code, message },
                        403 => GraphError::Forbidden {
                            oid: oid.to_string(),
                            code,
                            message,
                        },
                        404 => GraphError::UserNotFound {
                            oid: oid.to_string(),
                            code,
                        },
                        _ => GraphError::Status {
                            url: url.to_string(),
                            status,
                            code,
                            message,
                        },
                    });
                }
            }
        }
    }

    /// A cached client-credentials token, or a new one (`refresh`: always a new one).
    async fn token(&self, refresh: bool) -> Result<Secret, GraphError> {
        let mut guard = self.token.lock().await;
        if let Some((t, until)) = guard.as_ref().filter(|_| !refresh) {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let url = self.token_url.as_str();
        let form = [
            ("client_id", self.cfg.client_id.as_str()),
            ("client_secret", self.cfg.client_secret.expose()),
            ("grant_type", "client_credentials"),
            ("scope", GRAPH_SCOPE),
        ];
        let resp = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| net(TOKEN, url, e))?;
        let status = resp.status().as_u16();
        let body = read(TOKEN, url, resp).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 {
            let pick = |k: &str| v.get(k).and_then(Value::as_str).map(short);
            return Err(GraphError::TokenRefused {
                url: url.to_string(),
                status,
                error: pick("error").unwrap_or_else(|| "no error code".into()),
                description: pick("error_description")
                    .unwrap_or_else(|| "no error description".into()),
            });
        }
        let access = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| GraphError::Malformed {
                stage: TOKEN,
                url: url.to_string(),
                reason: "the answer has no access_token".into(),
            })?;
        let token = Secret::new(access);
        let ttl = cache_for(v.get("expires_in").unwrap_or(&Value::Null));
        *guard = Instant::now()
            .checked_add(ttl)
            .map(|until| (token.clone(), until));
        Ok(token)
    }
}

/// One page of `transitiveMemberOf/microsoft.graph.group`.
struct Page {
    value: Vec<Group>,
    next: Option<String>,
}

fn parse_page(url: &str, body: &[u8]) -> Result<Page, GraphError> {
    let bad = |reason: String| GraphError::Malformed {
        stage: GRAPH,
        url: url.to_string(),
        reason,
    };
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not JSON ({:?})", e.classify())))?;
    let items = v
        .get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `value` list".into()))?;
    let mut value = Vec::with_capacity(items.len());
    for item in items {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("a group without an `id`".into()))?;
        value.push(Group {
            id: id.to_string(),
            name: item
                .get("displayName")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    let next = match v.get("@odata.nextLink") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("`@odata.nextLink` is not a string".into())),
    };
    Ok(Page { value, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_cache_time_is_bounded_and_never_panics() {
        assert_eq!(cache_for(&json!(3599)), Duration::from_secs(3539));
        assert_eq!(cache_for(&json!("3599")), Duration::from_secs(3539));
        assert_eq!(cache_for(&json!(10)), Duration::from_secs(5));
        assert_eq!(cache_for(&json!(0)), Duration::ZERO);
        assert_eq!(cache_for(&json!(-5)), Duration::ZERO);
        assert_eq!(cache_for(&json!(i64::MIN)), Duration::ZERO);
        let max = MAX_TOKEN_TTL - Duration::from_secs(60);
        assert_eq!(cache_for(&json!(1e300)), max);
        assert_eq!(cache_for(&json!(u64::MAX)), max);
        assert_eq!(cache_for(&json!("inf")), cache_for(&Value::Null));
        assert_eq!(cache_for(&json!("NaN")), cache_for(&Value::Null));
        assert_eq!(
            cache_for(&json!({})),
            DEFAULT_TOKEN_TTL - Duration::from_secs(60)
        );
    }

    #[test]
    fn only_guid_like_object_ids_go_into_the_url() {
        assert!(valid_oid("6b1a5c3e-0d4f-4a3b-9c2d-1e0f2a3b4c5d"));
        assert!(!valid_oid(""));
        assert!(!valid_oid("../groups"));
        assert!(!valid_oid("a@example.com"));
        assert!(!valid_oid("6b1a5c3e?$top=1"));
    }

    #[test]
    fn peer_text_is_cut_to_its_first_line() {
        assert_eq!(
            short("AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"),
            "AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(short(&"x".repeat(1000)).chars().count(), MAX_MESSAGE + 1);
    }

    #[test]
    fn a_page_needs_ids_and_a_string_next_link() {
        let p = parse_page(
            "u",
            br#"{"value":[{"id":"g1","displayName":"Agents"},{"id":"g2"}],"@odata.nextLink":"https://x/next"}"#,
        )
        .map_err(|e| e.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.value,
            vec![
                Group {
                    id: "g1".into(),
                    name: Some("Agents".into())
                },
                Group {
                    id: "g2".into(),
                    name: None
                }
            ]
        );
        assert_eq!(p.next.as_deref(), Some("https://x/next"));
        assert!(parse_page("u", br#"{"value":[{"displayName":"x"}]}"#).is_err());
        assert!(parse_page("u", br#"{"value":[],"@odata.nextLink":5}"#).is_err());
        assert!(parse_page("u", br#"{"groups":[]}"#).is_err());
        assert!(parse_page("u", b"<html>").is_err());
    }
}
