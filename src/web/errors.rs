//! LoginError → the page a person sees and the line the log gets.

use super::pages::{error_page, ErrorPage};
use crate::flex::MapError;
use crate::login::LoginError;
use crate::saml::request::RequestError;
use axum::http::StatusCode;
use axum::response::Response;

/// Logs `e` with a fresh reference and renders its page.
pub fn login_failed(idp: &crate::login::Idp, e: &LoginError, sp: Option<&str>) -> Response {
    let reference = crate::clock::random_token(9);
    let sp = sp.unwrap_or("-");
    idp.metrics
        .logins_failed
        .with_label_values(&[sp, e.reason()])
        .inc();
    if matches!(e, LoginError::Store(_)) {
        idp.metrics.store_errors.with_label_values(&["login"]).inc();
    }
    match e {
        LoginError::Store(_) | LoginError::Sign(_) | LoginError::Internal(_) => {
            tracing::error!(reference, sp, outcome = "failed", reason = e.reason(), error = %e, "login failed")
        }
        LoginError::Upstream(_) | LoginError::Management { .. } => {
            tracing::error!(reference, sp, outcome = "failed", reason = e.reason(), error = %e, "login failed")
        }
        _ => {
            tracing::warn!(reference, sp, outcome = "failed", reason = e.reason(), error = %e, "login failed")
        }
    }
    let (status, title, message, hint): (StatusCode, &str, String, String) = match e {
        LoginError::Request(RequestError::UnknownIssuer(issuer)) => (
            StatusCode::BAD_REQUEST,
            "This application is not set up for single sign-on here",
            format!("The sign-in request came from {issuer:?}, which this identity provider does not know."),
            "Ask your administrator to add it as an [[sp]] in flexgate's configuration, or to check the Identity Provider Issuer and entity id in Flex Console.".into(),
        ),
        LoginError::Request(RequestError::Replay(_)) => (
            StatusCode::BAD_REQUEST,
            "This sign-in request was already used",
            "The same sign-in request arrived twice; it is accepted only once.".into(),
            "Go back to Flex and press Log in again.".into(),
        ),
        LoginError::Request(RequestError::Stale(..)) | LoginError::Request(RequestError::Future(..)) => (
            StatusCode::BAD_REQUEST,
            "This sign-in request has expired",
            e.to_string(),
            "Go back to Flex and press Log in again. If it happens every time, the clocks of Flex and flexgate disagree: ask your administrator.".into(),
        ),
        LoginError::Request(_) | LoginError::BadConnection(_) => (
            StatusCode::BAD_REQUEST,
            "This sign-in request cannot be accepted",
            e.to_string(),
            "Start again from Flex. If this keeps happening, give your administrator the reference below.".into(),
        ),
        LoginError::UnknownSp(name) => (
            StatusCode::NOT_FOUND,
            "Unknown application",
            format!("No application called {name:?} is set up for single sign-on here."),
            "Check the link, or ask your administrator for the right one.".into(),
        ),
        LoginError::StateUnknown | LoginError::MissingState | LoginError::MissingCode => (
            StatusCode::BAD_REQUEST,
            "This sign-in has expired or was already completed",
            "The sign-in could not be matched with one in progress: it took too long, or this page was reloaded or opened twice.".into(),
            "Go back to Flex and sign in again.".into(),
        ),
        LoginError::BrowserMismatch => (
            StatusCode::BAD_REQUEST,
            "This sign-in was started in another browser",
            "For your safety a sign-in must finish in the browser that started it (and with cookies enabled).".into(),
            "Go back to Flex in this browser and sign in again.".into(),
        ),
        LoginError::UpstreamDenied { error, description } => {
            let why = match error.as_str() {
                "access_denied" => "Sign-in was cancelled or not allowed at the identity provider.".to_string(),
                "login_required" | "interaction_required" | "consent_required" => "The identity provider needs you to sign in interactively.".to_string(),
                other => format!("The identity provider stopped the sign-in ({other})."),
            };
            let message = match description {
                Some(d) => format!("{why} It said: {d}"),
                None => why,
            };
            (
                StatusCode::FORBIDDEN,
                "Sign-in did not complete",
                message,
                "Try again from Flex. If you believe you should have access, contact your administrator.".into(),
            )
        }
        LoginError::Upstream(u) if u.is_timeout() => (
            StatusCode::GATEWAY_TIMEOUT,
            "The sign-in service did not answer in time",
            "The identity provider behind this page is slow or unreachable right now.".into(),
            "Wait a minute and sign in again from Flex. If it persists, tell your administrator.".into(),
        ),
        LoginError::Upstream(_) => (
            StatusCode::BAD_GATEWAY,
            "The sign-in service is unavailable",
            "The identity provider behind this page answered with an error.".into(),
            "Wait a minute and sign in again from Flex. If it persists, give your administrator the reference below.".into(),
        ),
        LoginError::Management { source, .. } => (
            if source.is_timeout() { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY },
            "Your Flex roles could not be read",
            "You signed in, but flexgate could not read your Flex roles from the identity provider's directory, so it cannot let you into Flex.".into(),
            "Try again in a minute. If it persists, give your administrator the reference below.".into(),
        ),
        LoginError::Mapping { email, source, .. } => {
            let who = email.as_deref().map(|e| format!("Your account ({e})")).unwrap_or_else(|| "Your account".into());
            match source {
                MapError::NoRole { claim, .. } => (
                    StatusCode::FORBIDDEN,
                    "Your account has no Flex role",
                    format!("{who} signed in, but it has no role that Flex knows (admin, supervisor, agent, …), so Flex cannot let you in."),
                    format!("Ask your administrator to give your user a Flex role (flexgate reads it from the claim {claim:?}, e.g. app_metadata.flex.roles = [\"agent\"])."),
                ),
                MapError::NoEmail { claim } => (
                    StatusCode::FORBIDDEN,
                    "Your account has no email address",
                    "Flex identifies people by email address, and your account has none.".into(),
                    format!("Ask your administrator to set an email address on your user (flexgate reads the claim {claim:?})."),
                ),
            }
        }
        LoginError::MfaMissing { .. } => (
            StatusCode::FORBIDDEN,
            "A second factor is required",
            "You signed in, but without a second factor (for example a code sent to your phone), and this application requires one.".into(),
            "Sign in again from Flex and complete the second step when the identity provider asks. If it never asks, tell your administrator: multi-factor authentication must be enabled for your account.".into(),
        ),
        LoginError::NotReauthenticated { .. } => (
            StatusCode::FORBIDDEN,
            "Please sign in again",
            "This application asked for a fresh sign-in, but the identity provider reused an earlier one.".into(),
            "Sign in again from Flex. If this keeps happening, tell your administrator (the identity provider ignores prompt=login).".into(),
        ),
        LoginError::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is temporarily unavailable",
            "flexgate cannot keep track of sign-ins right now.".into(),
            "Try again in a minute. If it persists, give your administrator the reference below.".into(),
        ),
        LoginError::Sign(_) | LoginError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "flexgate could not finish the sign-in.".into(),
            "Try again. If it persists, give your administrator the reference below.".into(),
        ),
    };
    error_page(&ErrorPage {
        status,
        title,
        message,
        hint,
        reference: &reference,
    })
}
