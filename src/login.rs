//! One login, as data flowing through stages (no HTTP types here):
//!
//! ```text
//! begin_sp_initiated: decode → parse → find SP → validate → single-use ID → PendingLogin → authorize URL
//! begin_idp_initiated:                  find SP ───────────────────────────→ PendingLogin → authorize URL
//! finish: take PendingLogin (state) → same browser? → code exchange + ID token → map → build → sign
//! ```

use crate::clock::{random_token, Clock, IdGen};
use crate::config::keys::KeyMaterial;
use crate::config::{Config, SpConfig};
use crate::flex::{self, MapError};
use crate::oidc::client::AuthorizeParams;
use crate::oidc::{OidcError, Upstream};
use crate::saml::request::{self, AuthnRequest, RequestError};
use crate::saml::response::{self, ResponseParams};
use crate::saml::sign::SignError;
use crate::store::{Space, Store, StoreError};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Everything a login needs, built once at start-up.
pub struct Idp {
    pub config: Arc<Config>,
    pub keys: Arc<KeyMaterial>,
    pub upstream: Arc<Upstream>,
    /// Auth0 Management API client, when roles are read from there.
    pub management: Option<Arc<crate::oidc::management::Management>>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGen>,
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
        source: crate::oidc::management::ManagementError,
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
    #[error("signing failed: {0}")]
    Sign(#[from] SignError),
    #[error("internal error: {0}")]
    Internal(String),
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
            LoginError::Mapping {
                source: MapError::NoRole { .. },
                ..
            } => "no_role",
            LoginError::Mapping { .. } => "no_email",
            LoginError::MfaMissing { .. } => "mfa_missing",
            LoginError::NotReauthenticated { .. } => "not_reauthenticated",
            LoginError::Store(_) => "store_error",
            LoginError::Sign(_) | LoginError::Internal(_) => "internal",
        }
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
}

/// How the AuthnRequest arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Redirect,
    Post,
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

pub fn browser_hash(cookie: &str) -> String {
    hex::encode(openssl::sha::sha256(cookie.as_bytes()))
}

fn valid_browser_cookie(c: &str) -> bool {
    c.len() == 43
        && c.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

/// Decodes, parses and validates an AuthnRequest, and marks its ID used.
/// A request refused here never reaches the upstream.
pub async fn accept_request<'i>(
    idp: &'i Idp,
    binding: Binding,
    saml_request: &str,
    raw_query: &str,
    relay_state: Option<&str>,
) -> Result<(AuthnRequest, &'i SpConfig), LoginError> {
    let cfg = &idp.config;
    let limits = &cfg.limits.saml;
    request::check_relay_state(relay_state, limits)?;
    let xml = match binding {
        Binding::Redirect => request::decode_redirect(saml_request, limits)?,
        Binding::Post => request::decode_post(saml_request, limits)?,
    };
    let req = request::parse(&xml)?;
    let sp = cfg
        .sp_by_entity_id(&req.issuer)
        .ok_or_else(|| RequestError::UnknownIssuer(req.issuer.clone()))?;
    // The Issuer picked the SP (and its key); nothing else is trusted before the signature.
    if let Some(key) = idp.keys.request_keys.get(&sp.name) {
        let keys = std::slice::from_ref(key);
        match binding {
            Binding::Redirect if request::redirect_is_signed(raw_query) => {
                request::verify_redirect_signature(raw_query, keys, sp.allow_sha1_requests)?
            }
            Binding::Post if req.has_signature => {
                request::verify_post_signature(&xml, keys, sp.allow_sha1_requests)?
            }
            _ if sp.want_signed_requests => {
                return Err(RequestError::Unsigned(sp.name.clone()).into())
            }
            _ => {}
        }
    }
    let sso_url = cfg.sso_url();
    let policy = request::Policy {
        sso_url: &sso_url,
        now: idp.clock.now(),
        max_age: chrono_dur(cfg.idp.request_max_age),
        skew: chrono_dur(cfg.idp.clock_skew),
    };
    request::validate(&req, &sp.acs_url, &policy)?;
    let ttl = cfg.idp.request_max_age + cfg.idp.clock_skew * 2 + Duration::from_secs(60);
    let key = format!("{}|{}", req.issuer, req.id);
    if !idp.store.first_use(Space::RequestId, &key, ttl).await? {
        return Err(RequestError::Replay(req.id.clone()).into());
    }
    Ok((req, sp))
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
pub async fn begin_sp_initiated(idp: &Idp, r: SsoRequest<'_>) -> Result<Begun, LoginError> {
    if let Some(c) = &r.connection {
        check_connection(c)?;
    }
    let (req, sp) = accept_request(
        idp,
        r.binding,
        r.saml_request,
        r.raw_query,
        r.relay_state.as_deref(),
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
            let issued = respond_status(
                idp,
                sp,
                Some(req.id.clone()),
                r.relay_state,
                "NoAuthnContext",
                &unsat.to_string(),
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
    start(idp, start_req).await.map(Begun::Upstream)
}

/// IdP-initiated login for one SP (`/saml/init/{sp}`).
pub async fn begin_idp_initiated(
    idp: &Idp,
    sp_name: &str,
    relay_state: Option<String>,
    browser: Option<&str>,
) -> Result<Started, LoginError> {
    let sp = idp
        .config
        .sp_by_name(sp_name)
        .ok_or_else(|| LoginError::UnknownSp(sp_name.to_string()))?;
    request::check_relay_state(relay_state.as_deref(), &idp.config.limits.saml)?;
    let relay_state = relay_state.or_else(|| sp.default_relay_state.clone());
    let plan = idp
        .config
        .mfa
        .plan(sp.mfa, None)
        .map_err(|e| LoginError::Internal(e.to_string()))?;
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
    )
    .await
}

/// A signed status-only Response to the SP (no assertion).
pub async fn respond_status(
    idp: &Idp,
    sp: &SpConfig,
    request_id: Option<String>,
    relay_state: Option<String>,
    second_status: &str,
    message: &str,
) -> Result<Issued, LoginError> {
    let keys = idp.keys.clone();
    let ids = idp.ids.clone();
    let issuer = idp.config.idp.entity_id.clone();
    let acs = sp.acs_url.clone();
    let now = idp.clock.now();
    let irt = request_id.clone();
    let second = format!("urn:oasis:names:tc:SAML:2.0:status:{second_status}");
    let message = message.to_string();
    let xml = tokio::task::spawn_blocking(move || {
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
        keys.signer.sign_status_response(&unsigned)
    })
    .await
    .map_err(|e| LoginError::Internal(format!("signing task failed: {e}")))??;
    Ok(Issued {
        sp: sp.name.clone(),
        acs_url: sp.acs_url.clone(),
        saml_response: base64::engine::general_purpose::STANDARD.encode(xml),
        relay_state,
        subject: String::new(),
        name_id: String::new(),
        roles: Vec::new(),
        status: Some(second_status.to_string()),
        started_at: None,
    })
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

async fn start(idp: &Idp, r: StartRequest<'_>) -> Result<Started, LoginError> {
    let meta = idp.upstream.metadata().await?;
    let browser_cookie = match r.browser {
        Some(b) if valid_browser_cookie(b) => b.to_string(),
        _ => random_token(32),
    };
    let state = random_token(32);
    let pending = PendingLogin {
        sp: r.sp.to_string(),
        request_id: r.request_id,
        relay_state: r.relay_state,
        pkce_verifier: random_token(32),
        nonce: random_token(32),
        browser: browser_hash(&browser_cookie),
        started_at: idp.clock.now().timestamp(),
        force_authn: r.force_authn,
        is_passive: r.is_passive,
        plan: r.plan,
    };
    // IsPassive wins over ForceAuthn: the upstream must not interact, and answers
    // login_required when it cannot sign the person in silently (→ NoPassive).
    let prompt = if pending.is_passive {
        Some("none")
    } else if pending.force_authn {
        Some("login")
    } else {
        None
    };
    let location = idp.upstream.authorize_url(
        &meta,
        &AuthorizeParams {
            state: &state,
            nonce: &pending.nonce,
            pkce_verifier: &pending.pkce_verifier,
            connection: r.connection.as_deref(),
            prompt,
            max_age: pending.force_authn.then_some(0),
            acr_values: pending
                .plan
                .require_mfa
                .then_some(idp.config.mfa.acr_values.as_str()),
        },
    );
    let bytes = serde_json::to_vec(&pending).map_err(|e| LoginError::Internal(e.to_string()))?;
    idp.store
        .put(
            Space::Pending,
            &state,
            bytes,
            idp.config.server.login_timeout,
        )
        .await?;
    Ok(Started {
        location,
        browser_cookie,
        sp: r.sp.to_string(),
    })
}

/// A failed callback, with the SP it was for when that is known (for logs and metrics).
#[derive(Debug)]
pub struct Failed {
    pub sp: Option<String>,
    pub error: LoginError,
}

/// The callback from the upstream: finish the login and produce the signed Response.
pub async fn finish(idp: &Idp, cb: Callback, browser: Option<&str>) -> Result<Issued, Failed> {
    let mut sp = None;
    match finish_inner(idp, cb, browser, &mut sp).await {
        Ok(issued) => Ok(issued),
        Err(error) => Err(Failed { sp, error }),
    }
}

async fn finish_inner(
    idp: &Idp,
    cb: Callback,
    browser: Option<&str>,
    sp_seen: &mut Option<String>,
) -> Result<Issued, LoginError> {
    let state = cb
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(LoginError::MissingState)?;
    let bytes = idp
        .store
        .take(Space::Pending, state)
        .await?
        .ok_or(LoginError::StateUnknown)?;
    let pending: PendingLogin =
        serde_json::from_slice(&bytes).map_err(|_| LoginError::StateUnknown)?;
    *sp_seen = Some(pending.sp.clone());
    let same_browser = browser
        .map(|b| {
            openssl::memcmp::eq(browser_hash(b).as_bytes(), pending.browser.as_bytes())
                && browser_hash(b).len() == pending.browser.len()
        })
        .unwrap_or(false);
    if !same_browser {
        return Err(LoginError::BrowserMismatch);
    }
    let sp = idp
        .config
        .sp_by_name(&pending.sp)
        .ok_or_else(|| LoginError::UnknownSp(pending.sp.clone()))?
        .clone();
    if let Some(error) = cb.error {
        let needs_interaction = matches!(
            error.as_str(),
            "login_required"
                | "interaction_required"
                | "consent_required"
                | "account_selection_required"
        );
        if pending.is_passive && needs_interaction {
            // IsPassive: SAML's answer is a Responder/NoPassive Response, not a page.
            return respond_status(
                idp,
                &sp,
                pending.request_id,
                pending.relay_state,
                "NoPassive",
                "the person is not signed in and the request does not allow interaction",
            )
            .await;
        }
        return Err(LoginError::UpstreamDenied {
            error,
            description: cb.error_description,
        });
    }
    let code = cb
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or(LoginError::MissingCode)?;

    let needed: Vec<&str> = sp.attributes.iter().map(|a| a.claim.as_str()).collect();
    let mut auth = idp
        .upstream
        .authenticate_for(code, &pending.pkce_verifier, &pending.nonce, Some(&needed))
        .await?;
    let subject = auth
        .claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let auth_time = auth.claims.get("auth_time").and_then(|v| v.as_i64());
    if pending.force_authn {
        let skew = idp.config.idp.clock_skew.as_secs() as i64;
        match auth_time {
            Some(t) if t + skew >= pending.started_at => {}
            other => {
                return Err(LoginError::NotReauthenticated {
                    subject,
                    auth_time: other.unwrap_or(0),
                    started_at: pending.started_at,
                })
            }
        }
    }
    let mfa_proven = idp.config.mfa.proven(&auth.claims);
    if pending.plan.require_mfa && !mfa_proven {
        if pending.plan.requested_by_sp {
            tracing::warn!(sp = %sp.name, subject = %subject, "the SP asked for MFA and the upstream did not show it; answering NoAuthnContext");
            return respond_status(
                idp,
                &sp,
                pending.request_id,
                pending.relay_state,
                "NoAuthnContext",
                "the requested authentication context (multi-factor) was not satisfied",
            )
            .await;
        }
        let amr = auth
            .claims
            .get("amr")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Err(LoginError::MfaMissing {
            subject,
            amr,
            acr: auth
                .claims
                .get("acr")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        });
    }
    let authn_context_class = if mfa_proven {
        pending.plan.class_if_mfa.clone()
    } else {
        pending.plan.class_if_plain.clone()
    };
    if let Some(m) = &idp.management {
        let meta = m
            .app_metadata(&subject)
            .await
            .map_err(|source| LoginError::Management {
                subject: subject.clone(),
                source,
            })?;
        auth.claims.insert("app_metadata".into(), meta);
    }
    let mapped = flex::map(&auth.claims, &sp).map_err(|source| LoginError::Mapping {
        subject: subject.clone(),
        email: auth
            .claims
            .get("email")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        source,
    })?;
    if !mapped.dropped_roles.is_empty() {
        tracing::warn!(sp = %sp.name, subject = %subject, dropped = ?mapped.dropped_roles, "role values Flex does not know were dropped");
    }
    let now = idp.clock.now();
    let authn_instant = auth
        .claims
        .get("auth_time")
        .and_then(|v| v.as_i64())
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
        .unwrap_or(now);
    let roles = mapped
        .attributes
        .iter()
        .find(|(n, _)| n == flex::ROLES)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();

    let keys = idp.keys.clone();
    let ids = idp.ids.clone();
    let cfg = idp.config.clone();
    let request_id = pending.request_id.clone();
    let name_id = mapped.name_id.clone();
    let sp_for_sign = sp.clone();
    // RSA work happens off the async reactor.
    let metrics = idp.metrics.clone();
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
            authn_context_class: if authn_context_class.is_empty() {
                &cfg.idp.authn_context_class
            } else {
                &authn_context_class
            },
            attributes: &mapped.attributes,
            lifetime: chrono_dur(cfg.idp.assertion_lifetime),
            skew: chrono_dur(cfg.idp.clock_skew),
        };
        let unsigned = response::build(&params, now, ids.as_ref());
        keys.signer.sign_response(&unsigned, sp_for_sign.sign)
    })
    .await
    .map_err(|e| LoginError::Internal(format!("signing task failed: {e}")))??;

    Ok(Issued {
        sp: sp.name.clone(),
        acs_url: sp.acs_url.clone(),
        saml_response: base64::engine::general_purpose::STANDARD.encode(xml),
        relay_state: pending.relay_state,
        subject,
        name_id,
        roles,
        status: None,
        started_at: Some(pending.started_at),
    })
}
