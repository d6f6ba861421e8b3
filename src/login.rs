//! One login, as data flowing through stages (no HTTP types here):
//!
//! ```text
//! begin_sp_initiated: decode → parse → find SP → validate → single-use ID → PendingLogin → authorize URL
//! begin_idp_initiated:                  find SP ───────────────────────────→ PendingLogin → authorize URL
//! finish: take PendingLogin (state) → same browser? → upstream error? → code exchange + ID token
//!         → ForceAuthn → MFA → roles → map → build → sign
//! ```

use crate::auth0::management::Management;
use crate::clock::{random_token, Clock, IdGen};
use crate::config::keys::KeyMaterial;
use crate::config::{Config, SpConfig};
use crate::constant_time;
use crate::flex::{self, MapError, MappedUser};
use crate::mfa::{MfaPolicy, Plan, SignIn};
use crate::oidc::client::AuthorizeParams;
use crate::oidc::{OidcError, Upstream};
use crate::provider::{self, Directory, Preset};
use crate::saml::request::{self, AuthnRequest, RequestError};
use crate::saml::response::{self, ResponseParams};
use crate::saml::sign::SignError;
use crate::store::{Space, Store, StoreError};
use crate::trace::keep::TraceLog;
use crate::trace::{Claim, Expected, Explain, Kind, Outcome, Recorder, SentResponse, StageName};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Everything a login needs, built once at start-up.
pub struct Idp {
    pub config: Arc<Config>,
    pub keys: Arc<KeyMaterial>,
    pub upstream: Arc<Upstream>,
    /// Auth0 Management API client, when roles are read from there.
    pub management: Option<Arc<Management>>,
    /// Microsoft Graph and Google Cloud Identity clients, when the preset reads groups there.
    pub directories: crate::directory::Directories,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGen>,
    /// Where each attempt's trace is kept.
    pub traces: Arc<TraceLog>,
}

impl Idp {
    /// A recorder for a new attempt of `kind`.
    pub fn recorder(&self, kind: Kind) -> Recorder {
        self.traces.recorder(self.clock.clone(), kind)
    }
}

/// Why a login stopped. Each maps to one page and one log line.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error("no service provider is configured under the name {0:?}")]
    UnknownSp(String),
    #[error("the connection hint {0:?} is not a valid connection name")]
    BadConnection(String),
    #[error("the login state is unknown, expired or already used")]
    StateUnknown,
    #[error("the callback has no state parameter")]
    MissingState,
    #[error("the callback has no code parameter")]
    MissingCode,
    #[error("the login was started in another browser (the binding cookie does not match)")]
    BrowserMismatch,
    // Both come from the callback's query string, which anyone can write: Debug-quoted, so a
    // newline in them cannot start a forged log line.
    #[error("the upstream refused the login: {error:?}{}", description.as_deref().map(|d| format!(" ({d:?})")).unwrap_or_default())]
    UpstreamDenied {
        error: String,
        description: Option<String>,
    },
    #[error("{0}")]
    Upstream(#[from] OidcError),
    #[error("user {subject:?}: {source}")]
    Management {
        subject: String,
        #[source]
        source: crate::auth0::management::ManagementError,
    },
    #[error("user {subject:?}: {source}")]
    Mapping {
        subject: String,
        email: Option<String>,
        #[source]
        source: MapError,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("user {subject:?}: the ID token does not show a second factor (amr {amr:?}, acr {acr:?}), and this service provider requires one")]
    MfaMissing {
        subject: String,
        amr: Vec<String>,
        acr: Option<String>,
    },
    #[error("user {subject:?}: ForceAuthn asked for a fresh sign-in, but the upstream reports auth_time {auth_time}, before the request ({started_at})")]
    NotReauthenticated {
        subject: String,
        auth_time: i64,
        started_at: i64,
    },
    /// The provider preset's directory (Microsoft Graph, Google Cloud Identity) could not give
    /// the person's groups.
    #[error("user {subject:?}: {source}")]
    Directory {
        subject: String,
        #[source]
        source: Box<crate::directory::DirectoryError>,
    },
    /// Google Workspace: the ID token's `hd` is not `[upstream] hosted_domain` (a personal
    /// Google account, or another Workspace).
    #[error("user {subject:?}: the ID token's hd claim is {hd:?}, and only accounts of the Google Workspace {want:?} may sign in ([upstream] hosted_domain)")]
    NotInWorkspace {
        subject: String,
        hd: Option<String>,
        want: String,
    },
    #[error("signing failed: {0}")]
    Sign(#[from] SignError),
    #[error("internal error: {0}")]
    Internal(String),
    /// The CPU work queue is full: the request was refused at once (`blocking.rs`).
    #[error("{0}")]
    Busy(crate::blocking::JobError),
}

impl From<crate::blocking::JobError> for LoginError {
    fn from(e: crate::blocking::JobError) -> Self {
        match e {
            crate::blocking::JobError::Failed(m) => LoginError::Internal(m),
            busy => LoginError::Busy(busy),
        }
    }
}

impl LoginError {
    /// A short, stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::Request(RequestError::Replay(_)) => "request_replayed",
            LoginError::Request(RequestError::UnknownIssuer(_)) => "unknown_sp",
            LoginError::Request(_) => "bad_request",
            LoginError::UnknownSp(_) => "unknown_sp",
            LoginError::BadConnection(_) => "bad_request",
            LoginError::StateUnknown | LoginError::MissingState | LoginError::MissingCode => {
                "bad_state"
            }
            LoginError::BrowserMismatch => "browser_mismatch",
            LoginError::UpstreamDenied { .. } => "upstream_denied",
            LoginError::Upstream(e) if e.is_timeout() => "upstream_timeout",
            LoginError::Upstream(_) => "upstream_error",
            LoginError::Management { source, .. } if source.is_timeout() => "management_timeout",
            LoginError::Management { .. } => "management_error",
            LoginError::Directory { source, .. } if source.is_timeout() => "directory_timeout",
            LoginError::Directory { .. } => "directory_error",
            LoginError::Mapping {
                source: MapError::NoRole { .. },
                ..
            } => "no_role",
            LoginError::Mapping { .. } => "no_email",
            LoginError::MfaMissing { .. } => "mfa_missing",
            LoginError::NotReauthenticated { .. } => "not_reauthenticated",
            LoginError::NotInWorkspace { .. } => "not_in_workspace",
            LoginError::Store(_) => "store_error",
            LoginError::Sign(SignError::Token(_)) => "signing_unavailable",
            LoginError::Sign(_) | LoginError::Internal(_) => "internal",
            LoginError::Busy(_) => "busy",
        }
    }

    /// What fixes it, for support (the person's page says what *they* can do).
    pub fn fix(&self) -> String {
        let s = match self.reason() {
            "request_replayed" => "the browser sent the same AuthnRequest twice (a reload or a back button): sign in again from the SP",
            "unknown_sp" => "add the SP as an [[sp]] whose entity_id is the AuthnRequest's Issuer, or correct the Issuer configured at the SP",
            "bad_request" => "compare the AuthnRequest below with the SP's [[sp]] entry (acs_url, request signing) and the SSO URL configured at the SP; check both clocks for an expired request",
            "bad_state" => "the login expired (server.login_timeout_secs), was finished already, or its state is in another store: sign in again; with several instances, share one [store] url",
            "browser_mismatch" => "the callback came in a browser without the cookie set when the login began: cookies blocked, another browser, or server.public_url differs from the URL the browser uses",
            "upstream_denied" => "the upstream refused the login (its error is above): check the user and the application at the upstream, e.g. the Auth0 logs",
            "upstream_timeout" => "the upstream did not answer in time: check its status, the network from flexgate, or raise upstream.timeout_secs",
            "upstream_error" => "the upstream's answer was refused (the error is above): check upstream.issuer, client_id and client_secret with `flexgate check`",
            "management_timeout" | "management_error" => "the Auth0 Management API could not give the user's app_metadata: check [upstream.management] with `flexgate check` and the API's rate limits",
            "directory_timeout" | "directory_error" => "the identity provider's directory could not give the person's groups; the error above names the cause and the fix (Entra ID: GroupMember.Read.All with admin consent; Google: the Cloud Identity API enabled and the service account's Groups Reader role) — `flexgate check` reads [upstream]",
            "no_role" if self.groups_seen() => "none of the person's groups (listed above) is a key of the SP's [sp.role_map]: add the person to a mapped group at the identity provider, or map one of their groups (names and Entra object ids must match exactly)",
            "no_role" => "give the user a Flex role the SP knows: in the claim the SP's [sp.attributes] roles names (Auth0: app_metadata.flex.roles = [\"agent\"], `flexgate roles set`), or through a group in [sp.role_map]",
            "no_email" => "set an email address on the user at the upstream, or map the claim that carries it in [sp.attributes] email",
            "mfa_missing" => "enrol the user in MFA at the upstream and make sure it is enforced for this application (the ID token must show amr mfa)",
            "not_reauthenticated" => "the upstream ignored prompt=login / max_age=0: configure it to honour them, or ask the SP not to send ForceAuthn",
            "not_in_workspace" => "the person signed in with a Google account outside [upstream] hosted_domain: they must use their Workspace account (sign out of other Google accounts first); if the domain is right, correct hosted_domain",
            "store_error" => "the state store is down or full: check [store] (Redis reachable, `flexgate check`) or raise limits.max_pending_logins",
            "signing_unavailable" => "the PKCS#11 token holding the signing key is unreachable: check the module and token (/readyz shows its state)",
            _ => "an internal error: the log line with this reference has the details",
        };
        s.to_string()
    }
}

impl LoginError {
    /// A no-role failure that names the groups the IdP sent (a role map is in use).
    fn groups_seen(&self) -> bool {
        matches!(
            self,
            LoginError::Mapping {
                source: MapError::NoRole {
                    groups: Some(_),
                    ..
                },
                ..
            }
        )
    }
}

impl Explain for LoginError {
    fn reason(&self) -> &'static str {
        LoginError::reason(self)
    }

    fn fix(&self) -> String {
        LoginError::fix(self)
    }
}

/// A login waiting for the upstream, stored under its OIDC `state`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingLogin {
    pub sp: String,
    /// The AuthnRequest ID; `None` for IdP-initiated login.
    pub request_id: Option<String>,
    pub relay_state: Option<String>,
    pub pkce_verifier: String,
    pub nonce: String,
    /// SHA-256 (hex) of the browser-binding cookie.
    pub browser: String,
    /// Unix seconds.
    pub started_at: i64,
    pub force_authn: bool,
    #[serde(default)]
    pub is_passive: bool,
    /// What the login must achieve (MFA) and the AuthnContextClassRef to state.
    #[serde(default)]
    pub plan: crate::mfa::Plan,
    /// The reference of this login's trace (`None` when traces are off).
    #[serde(default)]
    pub trace: Option<String>,
}

/// How the AuthnRequest arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Redirect,
    Post,
}

impl Binding {
    /// The binding's name as SAML writes it.
    pub fn label(self) -> &'static str {
        match self {
            Binding::Redirect => "HTTP-Redirect",
            Binding::Post => "HTTP-POST",
        }
    }
}

/// An incoming SP-initiated request.
#[derive(Debug, Clone)]
pub struct SsoRequest<'a> {
    pub binding: Binding,
    pub saml_request: &'a str,
    /// The query string exactly as received (HTTP-Redirect signatures are over these bytes).
    pub raw_query: &'a str,
    pub relay_state: Option<String>,
    pub connection: Option<String>,
    /// The browser-binding cookie, if the browser has one.
    pub browser: Option<&'a str>,
}

/// The login is under way: send the browser to `location`, set the binding cookie.
#[derive(Debug, Clone)]
pub struct Started {
    pub location: String,
    pub browser_cookie: String,
    pub sp: String,
}

/// The login is done: post `saml_response` (base64) and `relay_state` to `acs_url`.
#[derive(Debug, Clone)]
pub struct Issued {
    pub sp: String,
    pub acs_url: String,
    pub saml_response: String,
    pub relay_state: Option<String>,
    pub subject: String,
    pub name_id: String,
    pub roles: Vec<String>,
    /// `None` for a successful login; else the second-level SAML status sent (e.g. NoPassive).
    pub status: Option<String>,
    /// When the login started (unix seconds), for the end-to-end duration.
    pub started_at: Option<i64>,
}

/// What `begin_*` decided: send the browser upstream, or answer the SP right away with a
/// SAML status Response (e.g. `NoAuthnContext` for a context flexgate cannot produce).
#[derive(Debug, Clone)]
pub enum Begun {
    Upstream(Started),
    Respond(Issued),
}

/// The upstream's answer at the callback.
#[derive(Debug, Clone, Default)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Random bytes in each state, nonce, PKCE verifier and browser-binding cookie.
const TOKEN_BYTES: usize = 32;

/// Length of a [`random_token`] of [`TOKEN_BYTES`] (unpadded base64url).
const TOKEN_LEN: usize = (TOKEN_BYTES * 4).div_ceil(3);

/// A second-level SAML status and the message sent with it.
struct StatusAnswer {
    status: &'static str,
    message: &'static str,
}

const NO_PASSIVE: StatusAnswer = StatusAnswer {
    status: "NoPassive",
    message: "the person is not signed in and the request does not allow interaction",
};

const SIGNED_IN_ANEW: StatusAnswer = StatusAnswer {
    status: "NoPassive",
    message: "the upstream made the person sign in, and the request does not allow interaction",
};

const NO_MFA: StatusAnswer = StatusAnswer {
    status: "NoAuthnContext",
    message: "the requested authentication context (multi-factor) was not satisfied",
};

/// SHA-256 (hex) of the browser-binding cookie, as a [`PendingLogin`] keeps it.
pub fn browser_hash(cookie: &str) -> String {
    hex::encode(crate::digest::sha256(cookie.as_bytes()))
}

fn valid_browser_cookie(c: &str) -> bool {
    c.len() == TOKEN_LEN
        && c.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

/// How much longer than a request can be valid its ID is remembered as used.
const REQUEST_ID_TTL_MARGIN: Duration = Duration::from_secs(60);

/// Decodes, parses and validates an AuthnRequest, and marks its ID used (the request-checks
/// stage). A request refused here never reaches the upstream.
pub async fn accept_request<'i>(
    idp: &'i Idp,
    binding: Binding,
    saml_request: &str,
    raw_query: &str,
    relay_state: Option<&str>,
    rec: &mut Recorder,
) -> Result<(AuthnRequest, &'i SpConfig), LoginError> {
    let r = accept(idp, binding, saml_request, raw_query, relay_state, rec).await;
    rec.step(StageName::RequestChecks, r, |(req, sp)| {
        format!(
            "AuthnRequest {} from {:?} (SP {}): decoded, parsed, signature policy, Destination, ACS and age checked, ID used once; ForceAuthn {}, IsPassive {}",
            req.id, req.issuer, sp.name, req.force_authn, req.is_passive
        )
    })
}

async fn accept<'i>(
    idp: &'i Idp,
    binding: Binding,
    saml_request: &str,
    raw_query: &str,
    relay_state: Option<&str>,
    rec: &mut Recorder,
) -> Result<(AuthnRequest, &'i SpConfig), LoginError> {
    let cfg = &idp.config;
    let (config, keys, now) = (cfg.clone(), idp.keys.clone(), idp.clock.now());
    let (saml_request, raw_query) = (saml_request.to_string(), raw_query.to_string());
    let relay_state = relay_state.map(str::to_string);
    let keep_xml = rec.is_on();
    let (xml, req) = crate::blocking::run(move || {
        let msg = Received {
            binding,
            saml_request: &saml_request,
            raw_query: &raw_query,
            relay_state: relay_state.as_deref(),
        };
        let (xml, req) = read_request(&config, &keys, now, &msg);
        (xml.filter(|_| keep_xml), req)
    })
    .await?;
    if let Some(xml) = xml {
        rec.with(|t| t.authn_request_xml = Some(xml));
    }
    let req = req?;
    rec.with(|t| t.request_id = Some(req.id.clone()));
    let sp = cfg
        .sp_by_entity_id(&req.issuer)
        .ok_or_else(|| RequestError::UnknownIssuer(req.issuer.clone()))?;
    rec.with(|t| t.sp = Some(sp.name.clone()));
    let ttl = cfg.idp.request_max_age + cfg.idp.clock_skew * 2 + REQUEST_ID_TTL_MARGIN;
    let key = format!("{}|{}", req.issuer, req.id);
    if !idp.store.first_use(Space::RequestId, &key, ttl).await? {
        return Err(RequestError::Replay(req.id.clone()).into());
    }
    Ok((req, sp))
}

/// An AuthnRequest as received.
struct Received<'a> {
    binding: Binding,
    saml_request: &'a str,
    raw_query: &'a str,
    relay_state: Option<&'a str>,
}

/// The CPU part of `accept_request`: decode, parse, check the signature, validate. Pure.
/// Gives the decoded XML (for the trace) whenever it could be decoded.
fn read_request(
    cfg: &Config,
    keys: &KeyMaterial,
    now: DateTime<Utc>,
    msg: &Received,
) -> (Option<String>, Result<AuthnRequest, RequestError>) {
    let limits = &cfg.limits.saml;
    if let Err(e) = request::check_relay_state(msg.relay_state, limits) {
        return (None, Err(e));
    }
    let xml = match msg.binding {
        Binding::Redirect => request::decode_redirect(msg.saml_request, limits),
        Binding::Post => request::decode_post(msg.saml_request, limits),
    };
    match xml {
        Ok(xml) => {
            let req = check_request(cfg, keys, now, msg, &xml);
            (Some(xml), req)
        }
        Err(e) => (None, Err(e)),
    }
}

/// Parses and checks a decoded AuthnRequest.
fn check_request(
    cfg: &Config,
    keys: &KeyMaterial,
    now: DateTime<Utc>,
    msg: &Received,
    xml: &str,
) -> Result<AuthnRequest, RequestError> {
    let doc = request::parse_document(xml)?;
    let req = request::read(&doc)?;
    let sp = cfg
        .sp_by_entity_id(&req.issuer)
        .ok_or_else(|| RequestError::UnknownIssuer(req.issuer.clone()))?;
    // The Issuer picked the SP (and its key); nothing else is trusted before the signature.
    if let Some(key) = keys.request_keys.get(&sp.name) {
        let keys = std::slice::from_ref(key);
        match msg.binding {
            Binding::Redirect if request::redirect_is_signed(msg.raw_query) => {
                request::verify_redirect_signature(msg.raw_query, keys, sp.allow_sha1_requests)?
            }
            Binding::Post if req.has_signature => {
                request::verify_post_signature(&doc, keys, sp.allow_sha1_requests)?
            }
            _ if sp.want_signed_requests => return Err(RequestError::Unsigned(sp.name.clone())),
            _ => {}
        }
    }
    let sso_url = cfg.sso_url();
    let policy = request::Policy {
        sso_url: &sso_url,
        now,
        max_age: chrono_dur(cfg.idp.request_max_age),
        skew: chrono_dur(cfg.idp.clock_skew),
    };
    request::validate(&req, &sp.acs_url, &policy)?;
    Ok(req)
}

fn check_connection(c: &str) -> Result<(), LoginError> {
    let ok = !c.is_empty()
        && c.len() <= 128
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if ok {
        Ok(())
    } else {
        Err(LoginError::BadConnection(c.to_string()))
    }
}

/// SP-initiated login: validate the AuthnRequest, then send the person to the upstream.
pub async fn begin_sp_initiated(
    idp: &Idp,
    r: SsoRequest<'_>,
    rec: &mut Recorder,
) -> Result<Begun, LoginError> {
    if let Some(b) = r.browser {
        rec.forbid(b);
    }
    if let Some(c) = &r.connection {
        if let Err(e) = check_connection(c) {
            rec.failed(StageName::RequestChecks, &e);
            return Err(e);
        }
    }
    let (req, sp) = accept_request(
        idp,
        r.binding,
        r.saml_request,
        r.raw_query,
        r.relay_state.as_deref(),
        rec,
    )
    .await?;
    let plan = match idp
        .config
        .mfa
        .plan(sp.mfa, req.requested_authn_context.as_ref())
    {
        Ok(p) => p,
        Err(unsat) => {
            tracing::warn!(sp = %sp.name, error = %unsat, "answering NoAuthnContext");
            rec.ok(StageName::MfaDecision, || {
                format!("{unsat}: answering the SP with the status NoAuthnContext")
            });
            let issued = respond_status(
                idp,
                sp,
                Some(req.id.clone()),
                r.relay_state,
                "NoAuthnContext",
                &unsat.to_string(),
                rec,
            )
            .await?;
            return Ok(Begun::Respond(issued));
        }
    };
    let sp_name = sp.name.clone();
    let start_req = StartRequest {
        sp: &sp_name,
        request_id: Some(req.id.clone()),
        relay_state: r.relay_state,
        connection: r.connection,
        force_authn: req.force_authn,
        is_passive: req.is_passive,
        plan,
        browser: r.browser,
    };
    start(idp, start_req, rec).await.map(Begun::Upstream)
}

/// IdP-initiated login for one SP (`/saml/init/{sp}`).
pub async fn begin_idp_initiated(
    idp: &Idp,
    sp_name: &str,
    relay_state: Option<String>,
    browser: Option<&str>,
    rec: &mut Recorder,
) -> Result<Started, LoginError> {
    if let Some(b) = browser {
        rec.forbid(b);
    }
    let checked = idp_initiated_checks(idp, sp_name, relay_state.as_deref());
    let (sp, plan) = rec.step(StageName::RequestChecks, checked, |(sp, _)| {
        format!("IdP-initiated login for SP {} ({})", sp.name, sp.entity_id)
    })?;
    let relay_state = relay_state.or_else(|| sp.default_relay_state.clone());
    let name = sp.name.clone();
    start(
        idp,
        StartRequest {
            sp: &name,
            request_id: None,
            relay_state,
            connection: None,
            force_authn: false,
            is_passive: false,
            plan,
            browser,
        },
        rec,
    )
    .await
}

fn idp_initiated_checks<'i>(
    idp: &'i Idp,
    sp_name: &str,
    relay_state: Option<&str>,
) -> Result<(&'i SpConfig, Plan), LoginError> {
    let sp = idp
        .config
        .sp_by_name(sp_name)
        .ok_or_else(|| LoginError::UnknownSp(sp_name.to_string()))?;
    request::check_relay_state(relay_state, &idp.config.limits.saml)?;
    let plan = idp
        .config
        .mfa
        .plan(sp.mfa, None)
        .map_err(|e| LoginError::Internal(e.to_string()))?;
    Ok((sp, plan))
}

/// A signed status-only Response to the SP (no assertion).
pub async fn respond_status(
    idp: &Idp,
    sp: &SpConfig,
    request_id: Option<String>,
    relay_state: Option<String>,
    second_status: &str,
    message: &str,
    rec: &mut Recorder,
) -> Result<Issued, LoginError> {
    let r = sign_status(idp, sp, request_id, relay_state, second_status, message).await;
    let r = rec.step(StageName::Signing, r, |(_, (_, id))| {
        format!("status Response {id} ({second_status}) signed")
    });
    let (issued, xml) = r?;
    if rec.is_on() {
        let expected = Expected {
            issuer: idp.config.idp.entity_id.clone(),
            destination: sp.acs_url.clone(),
            audience: sp.entity_id.clone(),
            in_response_to: issued_irt(&xml.0),
            name_id: String::new(),
            required_attributes: Vec::new(),
            status: Some(second_status.to_string()),
        };
        let sent_at_ms = idp.clock.now().timestamp_millis();
        rec.with(|t| {
            t.response_id = Some(xml.1);
            t.outcome = Outcome::Status;
            t.reason = Some(second_status.to_string());
            t.response = Some(SentResponse::new(&xml.0, expected, sent_at_ms));
        });
    }
    Ok(issued)
}

/// The InResponseTo of a Response flexgate wrote (its root element's first attributes).
fn issued_irt(xml: &str) -> Option<String> {
    let root_end = xml.find('>')?;
    let root = &xml[..root_end];
    let at = root.find(" InResponseTo=\"")? + " InResponseTo=\"".len();
    let len = root[at..].find('"')?;
    Some(root[at..at + len].to_string())
}

/// Builds and signs a status Response; gives it with its (XML, ID).
async fn sign_status(
    idp: &Idp,
    sp: &SpConfig,
    request_id: Option<String>,
    relay_state: Option<String>,
    second_status: &str,
    message: &str,
) -> Result<(Issued, (String, String)), LoginError> {
    let keys = idp.keys.clone();
    let ids = idp.ids.clone();
    let issuer = idp.config.idp.entity_id.clone();
    let acs = sp.acs_url.clone();
    let now = idp.clock.now();
    let irt = request_id.clone();
    let second = format!("urn:oasis:names:tc:SAML:2.0:status:{second_status}");
    let message = message.to_string();
    let (xml, id) = tokio::task::spawn_blocking(move || {
        let unsigned = response::build_status(
            &issuer,
            &acs,
            irt.as_deref(),
            crate::saml::ns::STATUS_RESPONDER,
            Some(&second),
            Some(&message),
            now,
            ids.as_ref(),
        );
        keys.signer
            .sign_status_response(&unsigned)
            .map(|x| (x, unsigned.response_id))
    })
    .await
    .map_err(signing_task_failed)??;
    let issued = Issued {
        sp: sp.name.clone(),
        acs_url: sp.acs_url.clone(),
        saml_response: base64::engine::general_purpose::STANDARD.encode(&xml),
        relay_state,
        subject: String::new(),
        name_id: String::new(),
        roles: Vec::new(),
        status: Some(second_status.to_string()),
        started_at: None,
    };
    Ok((issued, (xml, id)))
}

fn signing_task_failed(e: tokio::task::JoinError) -> LoginError {
    LoginError::Internal(format!("signing task failed: {e}"))
}

/// [`respond_status`] to the request a pending login was for.
async fn respond_to_pending(
    idp: &Idp,
    sp: &SpConfig,
    pending: PendingLogin,
    answer: StatusAnswer,
    rec: &mut Recorder,
) -> Result<Issued, LoginError> {
    respond_status(
        idp,
        sp,
        pending.request_id,
        pending.relay_state,
        answer.status,
        answer.message,
        rec,
    )
    .await
}

struct StartRequest<'a> {
    sp: &'a str,
    request_id: Option<String>,
    relay_state: Option<String>,
    connection: Option<String>,
    force_authn: bool,
    is_passive: bool,
    plan: crate::mfa::Plan,
    browser: Option<&'a str>,
}

/// The to-the-upstream stage: a pending login in the store, the browser sent to `/authorize`.
async fn start(idp: &Idp, r: StartRequest<'_>, rec: &mut Recorder) -> Result<Started, LoginError> {
    let started = send_upstream(idp, r, rec).await;
    let timeout = idp.config.server.login_timeout;
    let r = rec.step(StageName::ToUpstream, started, |(_, why)| {
        format!("{why}; the login waits up to {} s", timeout.as_secs())
    });
    let (started, _) = r?;
    let expires = idp.clock.now().timestamp_millis() + timeout.as_millis() as i64;
    rec.with(|t| {
        t.outcome = Outcome::Upstream;
        t.expires_at_ms = expires;
    });
    Ok(started)
}

async fn send_upstream(
    idp: &Idp,
    r: StartRequest<'_>,
    rec: &mut Recorder,
) -> Result<(Started, String), LoginError> {
    let meta = idp.upstream.metadata().await?;
    let browser_cookie = match r.browser {
        Some(b) if valid_browser_cookie(b) => b.to_string(),
        _ => random_token(TOKEN_BYTES),
    };
    let state = random_token(TOKEN_BYTES);
    let pending = PendingLogin {
        sp: r.sp.to_string(),
        request_id: r.request_id,
        relay_state: r.relay_state,
        pkce_verifier: random_token(TOKEN_BYTES),
        nonce: random_token(TOKEN_BYTES),
        browser: browser_hash(&browser_cookie),
        started_at: idp.clock.now().timestamp(),
        force_authn: r.force_authn,
        is_passive: r.is_passive,
        plan: r.plan,
        trace: rec.is_on().then(|| rec.reference().to_string()),
    };
    for secret in [
        &browser_cookie,
        &state,
        &pending.pkce_verifier,
        &pending.nonce,
    ] {
        rec.forbid(secret);
    }
    // IsPassive wins over ForceAuthn: the upstream must not interact, and answers
    // login_required when it cannot sign the person in silently (→ NoPassive).
    let prompt = if pending.is_passive {
        Some("none")
    } else if pending.force_authn {
        Some("login")
    } else {
        None
    };
    let acr_values = pending
        .plan
        .require_mfa
        .then_some(idp.config.mfa.acr_values.as_str());
    let location = idp.upstream.authorize_url(
        &meta,
        &AuthorizeParams {
            state: &state,
            nonce: &pending.nonce,
            pkce_verifier: &pending.pkce_verifier,
            connection: r.connection.as_deref(),
            prompt,
            max_age: pending.force_authn.then_some(0),
            acr_values,
        },
    );
    let why = if rec.is_on() {
        format!(
            "sent to {} (connection {:?}, prompt {:?}, acr_values {:?}, MFA required {})",
            meta.authorization_endpoint,
            r.connection.as_deref().unwrap_or("-"),
            prompt.unwrap_or("-"),
            acr_values.unwrap_or("-"),
            pending.plan.require_mfa
        )
    } else {
        String::new()
    };
    let bytes = serde_json::to_vec(&pending).map_err(|e| LoginError::Internal(e.to_string()))?;
    idp.store
        .put(
            Space::Pending,
            &state,
            bytes,
            idp.config.server.login_timeout,
        )
        .await?;
    let started = Started {
        location,
        browser_cookie,
        sp: r.sp.to_string(),
    };
    Ok((started, why))
}

/// A failed callback, with the SP it was for when that is known (for logs and metrics).
#[derive(Debug)]
pub struct Failed {
    pub sp: Option<String>,
    pub error: LoginError,
}

/// The callback from the upstream: finish the login and produce the signed Response.
///
/// ```text
/// take_pending → same_browser → upstream_answer → authenticate → fresh_sign_in
///              → mfa_outcome → add_roles → map_person → sign_assertion
/// ```
/// `NoPassive` (from `upstream_answer`) and `NoAuthnContext` (from `mfa_outcome`) end the
/// login early with a signed status Response.
///
/// `rec` records each stage; with the pending login found, it continues the trace begun when
/// the login went upstream (same reference id).
pub async fn finish(
    idp: &Idp,
    cb: Callback,
    browser: Option<&str>,
    rec: &mut Recorder,
) -> Result<Issued, Failed> {
    for secret in [cb.code.as_deref(), cb.state.as_deref(), browser]
        .into_iter()
        .flatten()
    {
        rec.forbid(secret);
    }
    let pending = match take_pending(idp.store.as_ref(), cb.state.as_deref()).await {
        Ok(p) => p,
        Err(error) => {
            rec.failed(StageName::Callback, &error);
            return Err(Failed { sp: None, error });
        }
    };
    if let Some(r) = &pending.trace {
        let kind = if pending.request_id.is_some() {
            Kind::SpInitiated
        } else {
            Kind::IdpInitiated
        };
        rec.continue_login(r, kind, pending.started_at.saturating_mul(1000));
    }
    let sp = pending.sp.clone();
    finish_pending(idp, pending, cb, browser, rec)
        .await
        .map_err(|error| Failed {
            sp: Some(sp),
            error,
        })
}

async fn finish_pending(
    idp: &Idp,
    pending: PendingLogin,
    cb: Callback,
    browser: Option<&str>,
    rec: &mut Recorder,
) -> Result<Issued, LoginError> {
    rec.forbid(&pending.pkce_verifier);
    rec.forbid(&pending.nonce);
    rec.with(|t| {
        t.sp = Some(pending.sp.clone());
        t.request_id = pending.request_id.clone();
    });
    let answer = callback_checks(idp, &pending, cb, browser);
    let (sp, answer) = rec.step(StageName::Callback, answer, |(_, a)| match a {
        Answer::Code(_) => "same browser; the upstream sent an authorization code".into(),
        Answer::NoPassive => "same browser; the upstream needs interaction and the SP asked IsPassive: answering NoPassive".into(),
    })?;
    let code = match answer {
        Answer::Code(code) => code,
        Answer::NoPassive => return respond_to_pending(idp, sp, pending, NO_PASSIVE, rec).await,
    };
    let person = token_stage(idp, sp, &pending, &code, rec).await?;
    if let Some(want) = &idp.config.upstream.hosted_domain {
        let hd = in_workspace(want, &person);
        rec.step(StageName::IdTokenChecks, hd, |_| {
            format!("hd {want:?} is the Google Workspace of [upstream] hosted_domain")
        })?;
    }
    if pending.force_authn || pending.is_passive {
        let window = idp.config.mfa.reauth_window;
        let fits = fresh_sign_in(&pending, &person, window);
        let fits = rec.step(StageName::IdTokenChecks, fits, |fits| {
            if *fits {
                format!(
                    "auth_time {:?} fits the request (ForceAuthn {}, within {} s of {}; IsPassive {})",
                    person.auth_time, pending.force_authn, window.as_secs(), pending.started_at, pending.is_passive
                )
            } else {
                format!(
                    "IsPassive, but auth_time {:?} shows a sign-in after the request ({}): the upstream ignored prompt=none; answering NoPassive",
                    person.auth_time, pending.started_at
                )
            }
        })?;
        if !fits {
            tracing::warn!(sp = %sp.name, subject = %person.subject, "IsPassive, but the upstream made the person sign in (it ignored prompt=none); answering NoPassive");
            return respond_to_pending(idp, sp, pending, SIGNED_IN_ANEW, rec).await;
        }
    }
    let mfa = mfa_outcome(&idp.config.mfa, &pending.plan, &person);
    let mfa = rec.step(StageName::MfaDecision, mfa, |m| match m {
        Mfa::Class(c) if c.is_empty() => {
            "no second factor needed; the IdP's default AuthnContextClassRef".into()
        }
        Mfa::Class(c) => format!(
            "AuthnContextClassRef {c} (MFA required: {}, proven: {})",
            pending.plan.require_mfa,
            idp.config.mfa.proven(&person.claims)
        ),
        Mfa::NotSatisfied => {
            "the SP asked for MFA and the ID token does not show it: answering NoAuthnContext"
                .into()
        }
    })?;
    let class = match mfa {
        Mfa::Class(class) => class,
        Mfa::NotSatisfied => {
            tracing::warn!(sp = %sp.name, subject = %person.subject, "the SP asked for MFA and the upstream did not show it; answering NoAuthnContext");
            return respond_to_pending(idp, sp, pending, NO_MFA, rec).await;
        }
    };
    let roles = add_roles(idp, sp, person).await;
    let (person, _) = rec.step(StageName::RolesSource, roles, |(_, source)| source.clone())?;
    rec.with(|t| t.claims = claims_read(&person, sp));
    let mapped = map_person(&person, sp);
    let mapped = rec.step(StageName::Mapping, mapped, |m| {
        let mut d = format!("NameID {:?}; {} attributes", m.name_id, m.attributes.len());
        if !m.dropped_roles.is_empty() {
            d.push_str(&format!(
                "; role values Flex does not know, dropped: {:?}",
                m.dropped_roles
            ));
        }
        if !m.missing.is_empty() {
            d.push_str(&format!(
                "; claims absent (attributes left out): {:?}",
                m.missing
            ));
        }
        d
    })?;
    rec.with(|t| {
        t.email = Some(mapped.name_id.clone());
        t.attributes = mapped.attributes.clone();
    });
    sign_assertion(idp, sp, pending, person, mapped, class, rec).await
}

/// The callback stage: the browser that began the login, its SP, and the upstream's answer.
fn callback_checks<'i>(
    idp: &'i Idp,
    pending: &PendingLogin,
    cb: Callback,
    browser: Option<&str>,
) -> Result<(&'i SpConfig, Answer), LoginError> {
    same_browser(browser, &pending.browser)?;
    let sp = idp
        .config
        .sp_by_name(&pending.sp)
        .ok_or_else(|| LoginError::UnknownSp(pending.sp.clone()))?;
    Ok((sp, upstream_answer(cb, pending.is_passive)?))
}

/// The token and ID-token-checks stages: a refused ID token (or a userinfo for someone else)
/// stops the second, anything else the first.
async fn token_stage(
    idp: &Idp,
    sp: &SpConfig,
    pending: &PendingLogin,
    code: &str,
    rec: &mut Recorder,
) -> Result<Person, LoginError> {
    match authenticate(idp, sp, pending, code).await {
        Ok(person) => {
            rec.ok(StageName::Token, || {
                "the code was exchanged at the token endpoint (PKCE)".into()
            });
            rec.ok(StageName::IdTokenChecks, || {
                format!(
                    "signature (JWKS), issuer, audience, expiry and nonce verified; sub {:?}",
                    person.subject
                )
            });
            rec.with(|t| {
                t.subject = Some(person.subject.clone());
                t.email = claim_str(&person.claims, "email");
            });
            Ok(person)
        }
        Err(e) => {
            let id_token = matches!(
                e,
                LoginError::Upstream(OidcError::IdToken(_) | OidcError::UserinfoSubject { .. })
            );
            if id_token {
                rec.ok(StageName::Token, || {
                    "the code was exchanged at the token endpoint (PKCE)".into()
                });
                rec.failed(StageName::IdTokenChecks, &e);
            } else {
                rec.failed(StageName::Token, &e);
            }
            Err(e)
        }
    }
}

/// The claims the login read, with their values (`null`: absent). Only claims: the tokens
/// themselves never reach the login.
fn claims_read(person: &Person, sp: &SpConfig) -> Vec<Claim> {
    let mut out = vec![Claim {
        claim: "sub".into(),
        used_for: "the subject".into(),
        value: Value::String(person.subject.clone()),
    }];
    for (name, used_for) in [("amr", "MFA"), ("acr", "MFA"), ("auth_time", "ForceAuthn")] {
        if let Some(v) = person.claims.get(name) {
            out.push(Claim {
                claim: name.into(),
                used_for: used_for.into(),
                value: v.clone(),
            });
        }
    }
    for c in sp.role_map.iter().flat_map(|rm| &rm.claims) {
        out.push(Claim {
            claim: c.clone(),
            used_for: "groups for [sp.role_map]".into(),
            value: flex::lookup(&person.claims, c)
                .cloned()
                .unwrap_or(Value::Null),
        });
    }
    for m in &sp.attributes {
        out.push(Claim {
            claim: m.claim.clone(),
            used_for: format!("attribute {}", m.saml_name),
            value: flex::lookup(&person.claims, &m.claim)
                .cloned()
                .unwrap_or(Value::Null),
        });
    }
    out
}

/// Takes the pending login stored under the callback's `state` (each `state` works once).
async fn take_pending(store: &dyn Store, state: Option<&str>) -> Result<PendingLogin, LoginError> {
    let state = state
        .filter(|s| !s.is_empty())
        .ok_or(LoginError::MissingState)?;
    let bytes = store
        .take(Space::Pending, state)
        .await?
        .ok_or(LoginError::StateUnknown)?;
    serde_json::from_slice(&bytes).map_err(|_| LoginError::StateUnknown)
}

/// The callback must come from the browser that started the login (its cookie hashes to the
/// stored hash).
fn same_browser(cookie: Option<&str>, stored_hash: &str) -> Result<(), LoginError> {
    match cookie {
        Some(c) if constant_time::eq(browser_hash(c).as_bytes(), stored_hash.as_bytes()) => Ok(()),
        _ => Err(LoginError::BrowserMismatch),
    }
}

/// What the upstream said at the callback.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// An authorization code to exchange.
    Code(String),
    /// The person must interact, and the SP asked for a passive login.
    NoPassive,
}

/// Upstream errors that mean "the person would have to interact" (OpenID Connect Core 3.1.2.6).
const NEEDS_INTERACTION: [&str; 4] = [
    "login_required",
    "interaction_required",
    "consent_required",
    "account_selection_required",
];

fn upstream_answer(cb: Callback, is_passive: bool) -> Result<Answer, LoginError> {
    if let Some(error) = cb.error {
        // IsPassive: SAML's answer is a Responder/NoPassive Response, not a page.
        if is_passive && NEEDS_INTERACTION.contains(&error.as_str()) {
            return Ok(Answer::NoPassive);
        }
        return Err(LoginError::UpstreamDenied {
            error,
            description: cb.error_description,
        });
    }
    cb.code
        .filter(|c| !c.is_empty())
        .map(Answer::Code)
        .ok_or(LoginError::MissingCode)
}

/// The signed-in person: the upstream's claims, and what the stages read from them (once).
#[derive(Debug, Clone, Default)]
struct Person {
    claims: Map<String, Value>,
    subject: String,
    /// `auth_time` (unix seconds), when the upstream sent a real one: `0` or less counts as
    /// missing (glewlwyd 2.7 sends `auth_time: 0` from its token endpoint, which would otherwise
    /// become an AuthnInstant of 1970 and fail every ForceAuthn).
    auth_time: Option<i64>,
}

impl Person {
    fn new(claims: Map<String, Value>) -> Person {
        let subject = claim_str(&claims, "sub").unwrap_or_default();
        let auth_time = claims
            .get("auth_time")
            .and_then(Value::as_i64)
            .filter(|t| *t > 0);
        Person {
            claims,
            subject,
            auth_time,
        }
    }
}

fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_string)
}

/// Exchanges the code for the ID token (and userinfo for the claims the SP's mapping needs).
async fn authenticate(
    idp: &Idp,
    sp: &SpConfig,
    pending: &PendingLogin,
    code: &str,
) -> Result<Person, LoginError> {
    let needed: Vec<&str> = sp.attributes.iter().map(|a| a.claim.as_str()).collect();
    let auth = idp
        .upstream
        .authenticate_for(code, &pending.pkce_verifier, &pending.nonce, Some(&needed))
        .await?;
    Ok(Person::new(auth.claims))
}

/// ForceAuthn / IsPassive against the upstream's `auth_time` (see [`crate::mfa::sign_in_fits`]):
/// `Ok(true)` goes on, `Ok(false)` is answered NoPassive.
fn fresh_sign_in(
    pending: &PendingLogin,
    person: &Person,
    window: Duration,
) -> Result<bool, LoginError> {
    let ask = crate::mfa::SignInAsk {
        force_authn: pending.force_authn,
        is_passive: pending.is_passive,
        started_at: pending.started_at,
    };
    match crate::mfa::sign_in_fits(ask, person.auth_time, window) {
        SignIn::Fits => Ok(true),
        SignIn::NotPassive => Ok(false),
        SignIn::NotFresh => Err(LoginError::NotReauthenticated {
            subject: person.subject.clone(),
            auth_time: person.auth_time.unwrap_or(0),
            started_at: pending.started_at,
        }),
    }
}

/// What the MFA stage decided.
#[derive(Debug, PartialEq, Eq)]
enum Mfa {
    /// Go on, stating this AuthnContextClassRef (empty: the IdP's default).
    Class(String),
    /// The SP asked for MFA and did not get it: answer NoAuthnContext.
    NotSatisfied,
}

fn mfa_outcome(policy: &MfaPolicy, plan: &Plan, person: &Person) -> Result<Mfa, LoginError> {
    let proven = policy.proven(&person.claims);
    if proven {
        return Ok(Mfa::Class(plan.class_if_mfa.clone()));
    }
    if !plan.require_mfa {
        return Ok(Mfa::Class(plan.class_if_plain.clone()));
    }
    if plan.requested_by_sp {
        return Ok(Mfa::NotSatisfied);
    }
    let amr = person
        .claims
        .get("amr")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Err(LoginError::MfaMissing {
        subject: person.subject.clone(),
        amr,
        acr: claim_str(&person.claims, "acr"),
    })
}

/// Google Workspace: only people whose ID token says `hd` = `[upstream] hosted_domain` (a
/// personal Google account has no `hd`).
fn in_workspace(want: &str, person: &Person) -> Result<(), LoginError> {
    let hd = claim_str(&person.claims, "hd");
    if hd.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(want)) {
        return Ok(());
    }
    Err(LoginError::NotInWorkspace {
        subject: person.subject.clone(),
        hd,
        want: want.to_string(),
    })
}

/// The roles stage: the directory lookup of the provider preset, when it applies, adds to the
/// person's claims. Gives where the roles came from, for the trace.
async fn add_roles(
    idp: &Idp,
    sp: &SpConfig,
    person: Person,
) -> Result<(Person, String), LoginError> {
    let preset = idp.config.upstream.preset();
    match (preset.directory, idp.management.as_deref()) {
        (Directory::Auth0Management, Some(m)) => management_roles(m, person).await,
        (Directory::Graph | Directory::CloudIdentity, _) if sp.role_map.is_some() => {
            directory_groups(idp, sp, person, preset).await
        }
        _ => Ok((person, tokens_only(preset))),
    }
}

/// The person's `app_metadata` (where Auth0 keeps Flex roles) from the Management API.
async fn management_roles(
    m: &Management,
    mut person: Person,
) -> Result<(Person, String), LoginError> {
    let (meta, source) = m
        .app_metadata_from(&person.subject)
        .await
        .map_err(|source| LoginError::Management {
            subject: person.subject.clone(),
            source,
        })?;
    person.claims.insert("app_metadata".into(), meta);
    let how = match source {
        "snapshot" => "from the shared roles snapshot (read in bulk from the Auth0 Management API)",
        "cache" => "from this instance's cache of the Auth0 Management API",
        _ => "read from the Auth0 Management API now",
    };
    let said = format!("app_metadata of {:?} {how}", person.subject);
    Ok((person, said))
}

/// The person's groups from the preset's directory, within the upstream timeout, written to the
/// role map's groups claim: Microsoft Graph on Entra's groups overage (by `oid`), Google Cloud
/// Identity (by email). When the lookup does not apply, the tokens' claims stand.
async fn directory_groups(
    idp: &Idp,
    sp: &SpConfig,
    mut person: Person,
    preset: &Preset,
) -> Result<(Person, String), LoginError> {
    use crate::directory::DirectoryError;
    let deadline = tokio::time::Instant::now() + idp.config.upstream.timeout;
    let dirs = &idp.directories;
    let found: Option<Result<(Vec<String>, String), DirectoryError>> = match preset.directory {
        Directory::Graph if provider::groups_overage(&person.claims) => match &dirs.graph {
            Some(graph) => {
                // The object id Graph knows the person by; an Entra ID token always has it.
                let oid = claim_str(&person.claims, "oid").unwrap_or_default();
                Some(graph.transitive_groups(&oid, deadline).await.map(|g| {
                    let said = format!("groups overage in the ID token: {} group(s) of oid {oid:?} read from Microsoft Graph (transitiveMemberOf)", g.len());
                    (g.into_iter().map(|g| g.id).collect(), said)
                }).map_err(DirectoryError::from))
            }
            None => None,
        },
        // No email: the mapping refuses the login and says so.
        Directory::CloudIdentity => match (&dirs.google, claim_str(&person.claims, "email")) {
            (Some(ci), Some(email)) => Some(ci.transitive_groups(&email, deadline).await.map(|g| {
                let said = format!("{} group(s) of {email:?} from Google Cloud Identity (searchTransitiveGroups, as {})", g.len(), ci.client_email());
                (g.into_iter().map(|g| g.id).collect(), said)
            }).map_err(DirectoryError::from)),
            _ => None,
        },
        _ => None,
    };
    let Some(found) = found else {
        return Ok((person, tokens_only(preset)));
    };
    let (ids, said) = found.map_err(|e| LoginError::Directory {
        subject: person.subject.clone(),
        source: Box::new(e),
    })?;
    let ids = ids.into_iter().map(Value::String).collect();
    person.claims.insert(groups_claim(sp), Value::Array(ids));
    Ok((person, said))
}

/// The claim a directory's groups are written to: the role map's (last) groups claim, which is
/// `groups` unless `[sp.attributes] groups` names another.
fn groups_claim(sp: &SpConfig) -> String {
    sp.role_map
        .as_ref()
        .and_then(|rm| rm.claims.last())
        .cloned()
        .unwrap_or_else(|| "groups".into())
}

/// The roles stage's account when the tokens carried everything.
fn tokens_only(preset: &Preset) -> String {
    format!(
        "the upstream's ID token and userinfo claims (provider preset {})",
        preset.name
    )
}

/// Claims → the SP's attributes and NameID.
fn map_person(person: &Person, sp: &SpConfig) -> Result<MappedUser, LoginError> {
    let mapped = flex::map(&person.claims, sp).map_err(|source| LoginError::Mapping {
        subject: person.subject.clone(),
        email: claim_str(&person.claims, "email"),
        source,
    })?;
    if !mapped.dropped_roles.is_empty() {
        tracing::warn!(sp = %sp.name, subject = %person.subject, dropped = ?mapped.dropped_roles, "role values Flex does not know were dropped");
    }
    Ok(mapped)
}

/// Builds and signs the Response with its assertion (RSA work off the async reactor).
async fn sign_assertion(
    idp: &Idp,
    sp: &SpConfig,
    pending: PendingLogin,
    person: Person,
    mapped: MappedUser,
    class: String,
    rec: &mut Recorder,
) -> Result<Issued, LoginError> {
    let expected = rec.is_on().then(|| Expected {
        issuer: idp.config.idp.entity_id.clone(),
        destination: sp.acs_url.clone(),
        audience: sp.entity_id.clone(),
        in_response_to: pending.request_id.clone(),
        name_id: mapped.name_id.clone(),
        required_attributes: if sp.kind.is_flex() {
            ["email", "full_name", "roles"].map(String::from).to_vec()
        } else {
            Vec::new()
        },
        status: None,
    });
    let signed = sign(idp, sp, pending, person, mapped, class).await;
    let (issued, xml, id) = rec.step(StageName::Signing, signed, |(_, _, id)| {
        format!("Response {id} built and signed ({:?})", sp.sign)
    })?;
    let sent_at_ms = idp.clock.now().timestamp_millis();
    rec.with(|t| {
        t.response_id = Some(id);
        t.outcome = Outcome::Completed;
        t.response = expected.map(|expected| SentResponse::new(&xml, expected, sent_at_ms));
    });
    Ok(issued)
}

/// Builds and signs the Response; gives it with its XML and ID.
async fn sign(
    idp: &Idp,
    sp: &SpConfig,
    pending: PendingLogin,
    person: Person,
    mapped: MappedUser,
    class: String,
) -> Result<(Issued, String, String), LoginError> {
    let now = idp.clock.now();
    let authn_instant = person
        .auth_time
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
        .unwrap_or(now);
    let roles = mapped
        .attributes
        .iter()
        .find(|(n, _)| n == flex::ROLES)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let name_id = mapped.name_id.clone();
    let keys = idp.keys.clone();
    let ids = idp.ids.clone();
    let cfg = idp.config.clone();
    let metrics = idp.metrics.clone();
    let sp_for_sign = sp.clone();
    let request_id = pending.request_id;
    let xml = tokio::task::spawn_blocking(move || {
        let _timer = metrics.signing_duration.start_timer();
        let params = ResponseParams {
            issuer: &cfg.idp.entity_id,
            destination: &sp_for_sign.acs_url,
            audience: &sp_for_sign.entity_id,
            in_response_to: request_id.as_deref(),
            name_id: &mapped.name_id,
            name_id_format: crate::saml::ns::NAMEID_EMAIL,
            authn_instant,
            authn_context_class: if class.is_empty() {
                &cfg.idp.authn_context_class
            } else {
                &class
            },
            attributes: &mapped.attributes,
            lifetime: chrono_dur(cfg.idp.assertion_lifetime),
            skew: chrono_dur(cfg.idp.clock_skew),
        };
        let unsigned = response::build(&params, now, ids.as_ref());
        keys.signer
            .sign_response(&unsigned, sp_for_sign.sign)
            .map(|x| (x, unsigned.response_id))
    })
    .await
    .map_err(signing_task_failed)??;
    let (xml, id) = xml;
    let issued = Issued {
        sp: sp.name.clone(),
        acs_url: sp.acs_url.clone(),
        saml_response: base64::engine::general_purpose::STANDARD.encode(&xml),
        relay_state: pending.relay_state,
        subject: person.subject,
        name_id,
        roles,
        status: None,
        started_at: Some(pending.started_at),
    };
    Ok((issued, xml, id))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use serde_json::json;

    /// A real pipeline (the demo's) with an in-memory store; its upstream is never reached.
    pub(crate) fn test_idp() -> Idp {
        crate::demo::idp("http://127.0.0.1:9", "test-secret").expect("demo idp")
    }

    pub(crate) fn pending(browser: &str) -> PendingLogin {
        PendingLogin {
            sp: "flex".into(),
            request_id: Some("_req1".into()),
            relay_state: None,
            pkce_verifier: "v".repeat(43),
            nonce: "n".repeat(43),
            browser: browser.into(),
            started_at: 1_000,
            force_authn: false,
            is_passive: false,
            plan: Plan::default(),
            trace: None,
        }
    }

    fn person(claims: Value) -> Person {
        match claims {
            Value::Object(m) => Person::new(m),
            _ => unreachable!("claims are an object"),
        }
    }

    #[test]
    fn browser_cookie_length_is_that_of_a_token() {
        assert_eq!(random_token(TOKEN_BYTES).len(), TOKEN_LEN);
        assert!(valid_browser_cookie(&random_token(TOKEN_BYTES)));
        assert!(!valid_browser_cookie(&random_token(TOKEN_BYTES - 1)));
    }

    #[tokio::test]
    async fn take_pending_works_once_and_refuses_what_it_cannot_read() {
        let store = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        let p = pending(&browser_hash("cookie"));
        store
            .put(Space::Pending, "s1", serde_json::to_vec(&p).unwrap(), ttl)
            .await
            .unwrap();
        store
            .put(Space::Pending, "s2", b"{not json".to_vec(), ttl)
            .await
            .unwrap();
        assert_eq!(take_pending(&store, Some("s1")).await.unwrap(), p);
        for (state, want) in [
            (Some("s1"), "bad_state"),
            (Some("s2"), "bad_state"),
            (Some("nope"), "bad_state"),
        ] {
            let e = take_pending(&store, state).await.unwrap_err();
            assert!(matches!(e, LoginError::StateUnknown), "{state:?}: {e}");
            assert_eq!(e.reason(), want);
        }
        for state in [None, Some("")] {
            let e = take_pending(&store, state).await.unwrap_err();
            assert!(matches!(e, LoginError::MissingState), "{state:?}: {e}");
        }
    }

    #[test]
    fn same_browser_needs_the_cookie_whose_hash_was_stored() {
        let stored = browser_hash("cookie");
        assert!(same_browser(Some("cookie"), &stored).is_ok());
        for (cookie, stored) in [
            (None, stored.clone()),
            (Some("other"), stored.clone()),
            (Some(""), stored.clone()),
            // A corrupt or foreign store entry: hashes of other lengths are a mismatch, not a panic.
            (Some("cookie"), String::new()),
            (Some("cookie"), stored[..10].to_string()),
            (Some("cookie"), format!("{stored}00")),
        ] {
            let e = same_browser(cookie, &stored).unwrap_err();
            assert!(matches!(e, LoginError::BrowserMismatch), "{cookie:?}");
        }
    }

    #[tokio::test]
    async fn a_store_entry_with_a_foreign_browser_hash_is_a_mismatch() {
        let idp = test_idp();
        let p = pending("not-a-sha256-hex-digest");
        let bytes = serde_json::to_vec(&p).unwrap();
        idp.store
            .put(Space::Pending, "st", bytes, Duration::from_secs(60))
            .await
            .unwrap();
        let cb = Callback {
            state: Some("st".into()),
            code: Some("code".into()),
            ..Callback::default()
        };
        let mut rec = idp.recorder(Kind::Callback);
        let failed = finish(&idp, cb, Some(&random_token(TOKEN_BYTES)), &mut rec)
            .await
            .unwrap_err();
        assert!(matches!(failed.error, LoginError::BrowserMismatch));
        assert_eq!(failed.sp.as_deref(), Some("flex"));
    }

    fn callback(code: Option<&str>, error: Option<&str>) -> Callback {
        Callback {
            state: Some("s".into()),
            code: code.map(str::to_string),
            error: error.map(str::to_string),
            error_description: Some("why".into()),
        }
    }

    #[test]
    fn upstream_answer_table() {
        let code = |c: &str| Ok::<_, &str>(Answer::Code(c.into()));
        let cases: [(Callback, bool, Result<Answer, &str>); 8] = [
            (callback(Some("c"), None), false, code("c")),
            (callback(Some("c"), None), true, code("c")),
            (callback(Some(""), None), false, Err("bad_state")),
            (callback(None, None), false, Err("bad_state")),
            (
                callback(None, Some("login_required")),
                true,
                Ok(Answer::NoPassive),
            ),
            (
                callback(None, Some("account_selection_required")),
                true,
                Ok(Answer::NoPassive),
            ),
            (
                callback(None, Some("login_required")),
                false,
                Err("upstream_denied"),
            ),
            (
                callback(Some("c"), Some("access_denied")),
                true,
                Err("upstream_denied"),
            ),
        ];
        for (i, (cb, passive, want)) in cases.into_iter().enumerate() {
            let got = upstream_answer(cb, passive).map_err(|e| e.reason());
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn fresh_sign_in_only_matters_with_force_authn_or_is_passive() {
        let window = Duration::from_secs(5);
        let at = |t: Option<i64>| person(json!({ "sub": "u1", "auth_time": t }));
        let mut p = pending("");
        assert!(fresh_sign_in(&p, &at(None), window).unwrap());
        p.force_authn = true;
        assert!(fresh_sign_in(&p, &at(Some(1_000)), window).unwrap());
        assert!(fresh_sign_in(&p, &at(Some(995)), window).unwrap());
        for t in [Some(994), Some(950), None] {
            match fresh_sign_in(&p, &at(t), window) {
                Err(LoginError::NotReauthenticated {
                    subject,
                    auth_time,
                    started_at,
                }) => {
                    assert_eq!(subject, "u1");
                    assert_eq!(auth_time, t.unwrap_or(0));
                    assert_eq!(started_at, 1_000);
                }
                other => panic!("{t:?}: {other:?}"),
            }
        }
        p.force_authn = false;
        p.is_passive = true;
        assert!(fresh_sign_in(&p, &at(Some(900)), window).unwrap());
        assert!(!fresh_sign_in(&p, &at(Some(1_001)), window).unwrap());
    }

    #[test]
    fn mfa_outcome_table() {
        let policy = MfaPolicy::default();
        let plan = |require_mfa, requested_by_sp| Plan {
            require_mfa,
            requested_by_sp,
            class_if_mfa: "strong".into(),
            class_if_plain: "plain".into(),
        };
        let with_mfa = person(json!({ "sub": "u1", "amr": ["pwd", "mfa"] }));
        let without = person(json!({ "sub": "u1", "amr": ["pwd"], "acr": "x" }));
        let class = |c: &str| Ok::<_, &str>(Mfa::Class(c.into()));
        let cases = [
            (plan(false, false), &with_mfa, class("strong")),
            (plan(false, false), &without, class("plain")),
            (plan(true, false), &with_mfa, class("strong")),
            (plan(true, true), &with_mfa, class("strong")),
            (plan(true, true), &without, Ok(Mfa::NotSatisfied)),
            (plan(true, false), &without, Err("mfa_missing")),
        ];
        for (i, (plan, who, want)) in cases.into_iter().enumerate() {
            let got = mfa_outcome(&policy, &plan, who).map_err(|e| e.reason());
            assert_eq!(got, want, "case {i}");
        }
        match mfa_outcome(&policy, &plan(true, false), &without) {
            Err(LoginError::MfaMissing { subject, amr, acr }) => {
                assert_eq!(subject, "u1");
                assert_eq!(amr, ["pwd"]);
                assert_eq!(acr.as_deref(), Some("x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn without_management_the_roles_stage_keeps_the_claims() {
        let idp = test_idp();
        assert!(idp.management.is_none());
        let sp = &idp.config.sps[0];
        let who = person(json!({ "sub": "u1", "roles": ["agent"] }));
        let (after, source) = add_roles(&idp, sp, who.clone()).await.unwrap();
        assert_eq!(after.claims, who.claims);
        assert!(source.starts_with("the upstream's ID token"), "{source}");
    }

    #[test]
    fn only_the_hosted_domain_is_in_the_workspace() {
        let ok = person(json!({ "sub": "1", "hd": "Example.com" }));
        assert!(in_workspace("example.com", &ok).is_ok());
        for claims in [
            json!({ "sub": "1" }),
            json!({ "sub": "1", "hd": "other.example" }),
            json!({ "sub": "1", "hd": "example.com.evil" }),
            json!({ "sub": "1", "hd": ["example.com"] }),
        ] {
            let e = in_workspace("example.com", &person(claims.clone())).unwrap_err();
            assert_eq!(e.reason(), "not_in_workspace", "{claims}");
        }
    }

    #[test]
    fn map_person_names_the_person_when_mapping_fails() {
        let idp = test_idp();
        let sp = idp.config.sp_by_name("flex").unwrap();
        let roles = crate::demo::issuer::ROLES_CLAIM;
        let ok =
            person(json!({ "sub": "u1", "email": "a@example.com", "name": "A", roles: ["agent"] }));
        assert_eq!(map_person(&ok, sp).unwrap().name_id, "a@example.com");
        let no_role = person(json!({ "sub": "u1", "email": "a@example.com", "name": "A" }));
        match map_person(&no_role, sp) {
            Err(e @ LoginError::Mapping { .. }) => {
                assert_eq!(e.reason(), "no_role");
                assert!(e.to_string().contains("u1"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn person_reads_subject_and_auth_time_once() {
        let who = person(json!({ "sub": "u1", "auth_time": 1234 }));
        assert_eq!((who.subject.as_str(), who.auth_time), ("u1", Some(1234)));
        let nobody = person(json!({ "auth_time": "soon" }));
        assert_eq!((nobody.subject.as_str(), nobody.auth_time), ("", None));
    }

    #[test]
    fn auth_time_zero_or_negative_counts_as_missing() {
        // glewlwyd 2.7's token endpoint sends `auth_time: 0`.
        for t in [0, -1] {
            let who = person(json!({ "sub": "u1", "auth_time": t }));
            assert_eq!(who.auth_time, None, "auth_time {t}");
        }
        assert_eq!(person(json!({ "auth_time": 1 })).auth_time, Some(1));
    }
}
