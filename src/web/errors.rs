//! How each end of a login step is answered, logged, counted and traced, in one place:
//! a failure → [`page_for`] (pure) plus its log line and metric ([`login_failed`]); a login sent
//! upstream ([`started`]); a SAML status Response ([`status_sent`]); an assertion ([`completed`]).
//! Each saves the step's trace (`trace::keep`) once, under the reference the page and log show.

use super::pages::{self, error_page, ErrorPage};
use super::redirect_with_cookie;
use crate::flex::MapError;
use crate::login::{Idp, Issued, LoginError, Started};
use crate::saml::request::RequestError;
use crate::saml::sign::SignError;
use crate::trace::{Recorder, StageName};
use axum::http::StatusCode;
use axum::response::Response;

/// What a person sees for a failed login (the page adds the log reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    pub title: &'static str,
    /// What happened, in words a person understands.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

fn page(
    status: StatusCode,
    title: &'static str,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> Page {
    Page {
        status,
        title,
        message: message.into(),
        hint: hint.into(),
    }
}

const HINT_RETRY_ADMIN: &str =
    "Try again in a minute. If it persists, give your administrator the reference below.";
const HINT_WAIT_REFERENCE: &str =
    "Wait a minute and sign in again from Flex. If it persists, give your administrator the reference below.";

/// The page for a failed login.
pub fn page_for(e: &LoginError) -> Page {
    use StatusCode as S;
    match e {
        LoginError::Request(r) => request_page(e, r),
        LoginError::BadConnection(_) => unacceptable_request(e),
        LoginError::UnknownSp(name) => page(
            S::NOT_FOUND,
            "Unknown application",
            format!("No application called {name:?} is set up for single sign-on here."),
            "Check the link, or ask your administrator for the right one.",
        ),
        LoginError::StateUnknown | LoginError::MissingState | LoginError::MissingCode => page(
            S::BAD_REQUEST,
            "This sign-in has expired or was already completed",
            "The sign-in could not be matched with one in progress: it took too long, or this page was reloaded or opened twice.",
            "Go back to Flex and sign in again.",
        ),
        LoginError::BrowserMismatch => page(
            S::BAD_REQUEST,
            "This sign-in was started in another browser",
            "For your safety a sign-in must finish in the browser that started it (and with cookies enabled).",
            "Go back to Flex in this browser and sign in again.",
        ),
        LoginError::UpstreamDenied { error, description } => {
            upstream_denied_page(error, description.as_deref())
        }
        LoginError::Upstream(u) if u.is_timeout() => page(
            S::GATEWAY_TIMEOUT,
            "The sign-in service did not answer in time",
            "The identity provider behind this page is slow or unreachable right now.",
            "Wait a minute and sign in again from Flex. If it persists, tell your administrator.",
        ),
        LoginError::Upstream(_) => page(
            S::BAD_GATEWAY,
            "The sign-in service is unavailable",
            "The identity provider behind this page answered with an error.",
            HINT_WAIT_REFERENCE,
        ),
        LoginError::Management { source, .. } => page(
            if source.is_timeout() { S::GATEWAY_TIMEOUT } else { S::BAD_GATEWAY },
            "Your Flex roles could not be read",
            "You signed in, but flexgate could not read your Flex roles from the identity provider's directory, so it cannot let you into Flex.",
            HINT_RETRY_ADMIN,
        ),
        LoginError::Directory { source, .. } => page(
            if source.is_timeout() { S::GATEWAY_TIMEOUT } else { S::BAD_GATEWAY },
            "Your Flex roles could not be read",
            "You signed in, but flexgate could not read your groups from the identity provider's directory, so it cannot tell which Flex roles you have.",
            HINT_RETRY_ADMIN,
        ),
        LoginError::Mapping { email, source, .. } => mapping_page(email.as_deref(), source),
        LoginError::MfaMissing { .. } => page(
            S::FORBIDDEN,
            "A second factor is required",
            "You signed in, but without a second factor (for example a code sent to your phone), and this application requires one.",
            "Sign in again from Flex and complete the second step when the identity provider asks. If it never asks, tell your administrator: multi-factor authentication must be enabled for your account.",
        ),
        LoginError::NotReauthenticated { .. } => page(
            S::FORBIDDEN,
            "Please sign in again",
            "This application asked for a fresh sign-in, but the identity provider reused an earlier one.",
            "Sign in again from Flex. If this keeps happening, tell your administrator (the identity provider ignores prompt=login).",
        ),
        LoginError::NotInWorkspace { want, .. } => page(
            S::FORBIDDEN,
            "Use your work account",
            format!("You signed in with a Google account that is not part of {want}, and only {want} accounts can use Flex here."),
            format!("Sign out of other Google accounts, then sign in again from Flex with your {want} account."),
        ),
        LoginError::Store(_) => page(
            S::SERVICE_UNAVAILABLE,
            "Sign-in is temporarily unavailable",
            "flexgate cannot keep track of sign-ins right now.",
            HINT_RETRY_ADMIN,
        ),
        LoginError::Sign(SignError::Token(_)) => page(
            S::SERVICE_UNAVAILABLE,
            "Sign-in is temporarily unavailable",
            "You signed in, but flexgate cannot reach the security module that holds its signing key, so it cannot vouch for you to Flex.",
            "Try again in a minute. If it persists, give your administrator the reference below (the /readyz of flexgate's admin listener shows the module's state).",
        ),
        LoginError::Busy(_) => page(
            S::SERVICE_UNAVAILABLE,
            "flexgate is busy",
            "Too many sign-in requests are being checked right now, so this one was turned away at once rather than kept waiting.",
            "Wait a few seconds and try again from Flex. If it keeps happening, give your administrator the reference below.",
        ),
        LoginError::Sign(_) | LoginError::Internal(_) => page(
            S::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "flexgate could not finish the sign-in.",
            "Try again. If it persists, give your administrator the reference below.",
        ),
    }
}

/// A refused AuthnRequest (or connection hint); `e` is the whole error, for its text.
fn request_page(e: &LoginError, r: &RequestError) -> Page {
    match r {
        RequestError::UnknownIssuer(issuer) => page(
            StatusCode::BAD_REQUEST,
            "This application is not set up for single sign-on here",
            format!("The sign-in request came from {issuer:?}, which this identity provider does not know."),
            "Ask your administrator to add it as an [[sp]] in flexgate's configuration, or to check the Identity Provider Issuer and entity id in Flex Console.",
        ),
        RequestError::Replay(_) => page(
            StatusCode::BAD_REQUEST,
            "This sign-in request was already used",
            "The same sign-in request arrived twice; it is accepted only once.",
            "Go back to Flex and press Log in again.",
        ),
        RequestError::Stale(..) | RequestError::Future(..) => page(
            StatusCode::BAD_REQUEST,
            "This sign-in request has expired",
            e.to_string(),
            "Go back to Flex and press Log in again. If it happens every time, the clocks of Flex and flexgate disagree: ask your administrator.",
        ),
        _ => unacceptable_request(e),
    }
}

fn unacceptable_request(e: &LoginError) -> Page {
    page(
        StatusCode::BAD_REQUEST,
        "This sign-in request cannot be accepted",
        e.to_string(),
        "Start again from Flex. If this keeps happening, give your administrator the reference below.",
    )
}

fn upstream_denied_page(error: &str, description: Option<&str>) -> Page {
    let why = match error {
        "access_denied" => {
            "Sign-in was cancelled or not allowed at the identity provider.".to_string()
        }
        "login_required" | "interaction_required" | "consent_required" => {
            "The identity provider needs you to sign in interactively.".to_string()
        }
        other => format!("The identity provider stopped the sign-in ({other})."),
    };
    let message = match description {
        Some(d) => format!("{why} It said: {d}"),
        None => why,
    };
    page(
        StatusCode::FORBIDDEN,
        "Sign-in did not complete",
        message,
        "Try again from Flex. If you believe you should have access, contact your administrator.",
    )
}

fn mapping_page(email: Option<&str>, source: &MapError) -> Page {
    let who = email
        .map(|e| format!("Your account ({e})"))
        .unwrap_or_else(|| "Your account".into());
    match source {
        MapError::NoRole {
            claim,
            groups: None,
            ..
        } => page(
            StatusCode::FORBIDDEN,
            "Your account has no Flex role",
            format!("{who} signed in, but it has no role that Flex knows (admin, supervisor, agent, …), so Flex cannot let you in."),
            format!("Ask your administrator to give your user a Flex role (flexgate reads it from the claim {claim:?}, e.g. app_metadata.flex.roles = [\"agent\"])."),
        ),
        MapError::NoRole {
            groups: Some(groups),
            ..
        } => page(
            StatusCode::FORBIDDEN,
            "Your account has no Flex role",
            format!("{who} signed in, but none of its groups maps to a Flex role, so Flex cannot let you in. Groups your identity provider sent: {}.", crate::flex::groups_shown(groups)),
            "Ask your administrator to add you to a group that flexgate maps to a Flex role ([sp.role_map]), or to give your user a Flex role.".to_string(),
        ),
        MapError::NoEmail { claim } => page(
            StatusCode::FORBIDDEN,
            "Your account has no email address",
            "Flex identifies people by email address, and your account has none.",
            format!("Ask your administrator to set an email address on your user (flexgate reads the claim {claim:?})."),
        ),
    }
}

/// Logs `e` under the attempt's reference, counts it, saves its trace, and renders its page.
pub async fn login_failed(
    idp: &Idp,
    e: &LoginError,
    sp: Option<&str>,
    mut rec: Recorder,
) -> Response {
    if !rec.has_failed() {
        rec.failed(StageName::RequestReceived, e);
    }
    let reference = rec.reference().to_string();
    idp.traces.save(rec).await;
    let sp = sp.unwrap_or("-");
    count_failed(idp, sp, e.reason());
    if matches!(e, LoginError::Store(_)) {
        idp.metrics.store_errors.with_label_values(&["login"]).inc();
    }
    match e {
        LoginError::Store(_)
        | LoginError::Sign(_)
        | LoginError::Internal(_)
        | LoginError::Upstream(_)
        | LoginError::Management { .. } => {
            tracing::error!(reference, sp, outcome = "failed", reason = e.reason(), error = %e, "login failed")
        }
        _ => {
            tracing::warn!(reference, sp, outcome = "failed", reason = e.reason(), error = %e, "login failed")
        }
    }
    let p = page_for(e);
    let mut resp = error_page(&ErrorPage {
        status: p.status,
        title: p.title,
        message: p.message,
        hint: p.hint,
        reference: &reference,
    });
    if matches!(e, LoginError::Busy(_)) {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    resp
}

fn count_failed(idp: &Idp, sp: &str, reason: &str) {
    idp.metrics
        .logins_failed
        .with_label_values(&[sp, reason])
        .inc();
}

/// How a login was started, for its log line.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// By the SP's AuthnRequest, in this binding.
    Sp(crate::login::Binding),
    /// By `/saml/init/{sp}`.
    Idp,
}

/// A login sent to the upstream: counted, logged, its trace begun in the store (so a login
/// that never comes back is found), and the browser redirected with its cookie.
pub async fn started(idp: &Idp, s: &Started, how: Start, rec: Recorder) -> Response {
    idp.metrics.logins_started.with_label_values(&[&s.sp]).inc();
    let reference = rec.reference().to_string();
    idp.traces.save(rec).await;
    match how {
        Start::Sp(binding) => {
            tracing::info!(reference, sp = %s.sp, binding = ?binding, "login started")
        }
        Start::Idp => tracing::info!(reference, sp = %s.sp, "IdP-initiated login started"),
    }
    redirect_with_cookie(
        &s.location,
        &s.browser_cookie,
        idp.config.secure_cookies(),
        idp.config.server.login_timeout.as_secs(),
    )
}

/// A SAML status Response (e.g. NoAuthnContext, NoPassive), wherever in the login it was
/// decided: counted as a failed login with the status as the reason, logged, and posted to the SP.
pub async fn status_sent(idp: &Idp, issued: &Issued, mut rec: Recorder) -> Response {
    let reason = issued.status.as_deref().unwrap_or_default();
    count_failed(idp, &issued.sp, reason);
    rec.ok(StageName::ResponseSent, || {
        format!("status Response ({reason}) posted to {}", issued.acs_url)
    });
    let reference = rec.reference().to_string();
    idp.traces.save(rec).await;
    tracing::info!(reference, sp = %issued.sp, status = ?issued.status, outcome = "status", "answered the SP with a SAML status");
    post_to_sp(issued)
}

/// A signed assertion: counted with the login's duration, logged, and posted to the SP.
pub async fn completed(
    idp: &Idp,
    issued: &Issued,
    elapsed: std::time::Duration,
    mut rec: Recorder,
) -> Response {
    rec.ok(StageName::ResponseSent, || {
        format!(
            "posted to {} with {}",
            issued.acs_url,
            if issued.relay_state.is_some() {
                "RelayState"
            } else {
                "no RelayState"
            }
        )
    });
    let reference = rec.reference().to_string();
    idp.traces.save(rec).await;
    let m = &idp.metrics;
    m.logins_completed.with_label_values(&[&issued.sp]).inc();
    if let Some(t) = issued.started_at {
        let secs = (idp.clock.now().timestamp() - t).max(0) as f64;
        m.login_duration
            .with_label_values(&[&issued.sp])
            .observe(secs);
    }
    tracing::info!(
        reference,
        sp = %issued.sp,
        subject = %super::log_safe(&issued.subject),
        name_id = %super::log_safe(&issued.name_id),
        roles = ?issued.roles,
        outcome = "completed",
        duration_ms = elapsed.as_millis() as u64,
        "login completed"
    );
    post_to_sp(issued)
}

fn post_to_sp(issued: &Issued) -> Response {
    pages::post_form(
        &issued.acs_url,
        &issued.saml_response,
        issued.relay_state.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth0::management::ManagementError;
    use crate::oidc::OidcError;
    use crate::store::StoreError;

    /// One of each kind of failure, with the label it is counted under.
    fn every_failure() -> Vec<LoginError> {
        let url = || "https://op.example/token".to_string();
        let mgmt = |source| LoginError::Management {
            subject: "auth0|u1".into(),
            source,
        };
        let mapping = |source| LoginError::Mapping {
            subject: "auth0|u1".into(),
            email: Some("a@example.com".into()),
            source,
        };
        vec![
            RequestError::UnknownIssuer("urn:flex:JQ9".into()).into(),
            RequestError::Replay("_r1".into()).into(),
            RequestError::Stale("2020-01-01T00:00:00Z".into(), 300).into(),
            RequestError::Future("2999-01-01T00:00:00Z".into()).into(),
            RequestError::MissingRequest.into(),
            LoginError::BadConnection("a b".into()),
            LoginError::UnknownSp("nope".into()),
            LoginError::StateUnknown,
            LoginError::MissingState,
            LoginError::MissingCode,
            LoginError::BrowserMismatch,
            LoginError::UpstreamDenied {
                error: "access_denied".into(),
                description: Some("blocked".into()),
            },
            LoginError::UpstreamDenied {
                error: "login_required".into(),
                description: None,
            },
            LoginError::UpstreamDenied {
                error: "server_error".into(),
                description: None,
            },
            OidcError::Timeout {
                url: url(),
                secs: 5,
            }
            .into(),
            OidcError::Status {
                url: url(),
                status: 500,
            }
            .into(),
            mgmt(ManagementError::Timeout {
                url: url(),
                secs: 5,
            }),
            mgmt(ManagementError::NoSuchUser("auth0|u1".into())),
            LoginError::Directory {
                subject: "1234".into(),
                source: Box::new(
                    crate::directory::google::GoogleError::Timeout {
                        what: "group search",
                        url: url(),
                        waited_ms: 5000,
                    }
                    .into(),
                ),
            },
            LoginError::Directory {
                subject: "1234".into(),
                source: Box::new(
                    crate::directory::google::GoogleError::PermissionDenied {
                        client_email: "flexgate@proj.iam.gserviceaccount.com".into(),
                        message: "The caller does not have permission".into(),
                    }
                    .into(),
                ),
            },
            mapping(MapError::NoRole {
                claim: "app_metadata.flex.roles".into(),
                found: "missing".into(),
                groups: None,
            }),
            mapping(MapError::NoEmail {
                claim: "email".into(),
            }),
            LoginError::MfaMissing {
                subject: "auth0|u1".into(),
                amr: vec!["pwd".into()],
                acr: None,
            },
            LoginError::NotReauthenticated {
                subject: "auth0|u1".into(),
                auth_time: 1,
                started_at: 2,
            },
            LoginError::NotInWorkspace {
                subject: "1234".into(),
                hd: None,
                want: "example.com".into(),
            },
            StoreError::Unavailable("down".into()).into(),
            crate::saml::sign::SignError::WeakKey.into(),
            LoginError::Internal("boom".into()),
            crate::blocking::JobError::Busy(128).into(),
        ]
    }

    #[test]
    fn pages_table() {
        let table: String = every_failure()
            .iter()
            .map(|e| {
                let p = page_for(e);
                format!(
                    "{} {} | {}\n    {}\n    {}\n",
                    p.status.as_u16(),
                    e.reason(),
                    p.title,
                    p.message,
                    p.hint
                )
            })
            .collect();
        insta::assert_snapshot!(table);
    }

    #[test]
    fn statuses_by_kind_of_failure() {
        for e in every_failure() {
            let status = page_for(&e).status;
            let want = match e.reason() {
                "bad_request" | "request_replayed" | "bad_state" | "browser_mismatch" => 400,
                "unknown_sp" if matches!(e, LoginError::UnknownSp(_)) => 404,
                "unknown_sp" => 400,
                "upstream_denied"
                | "no_role"
                | "no_email"
                | "mfa_missing"
                | "not_in_workspace"
                | "not_reauthenticated" => 403,
                "upstream_timeout" | "management_timeout" | "directory_timeout" => 504,
                "upstream_error" | "management_error" | "directory_error" => 502,
                "store_error" => 503,
                "internal" => 500,
                "busy" => 503,
                other => panic!("no expected status for {other}"),
            };
            assert_eq!(status.as_u16(), want, "{e:?}");
        }
    }

    #[test]
    fn what_the_person_wrote_is_quoted_not_trusted() {
        let p = page_for(&LoginError::UpstreamDenied {
            error: "x".into(),
            description: Some("<script>".into()),
        });
        assert!(p.message.ends_with("It said: <script>"), "{}", p.message);
        let html = pages::error_page_html(&ErrorPage {
            status: p.status,
            title: p.title,
            message: p.message,
            hint: p.hint,
            reference: "r",
        });
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
    }
}
