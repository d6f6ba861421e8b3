//! `GET /oidc/callback`: the upstream sends the browser back here with `code` and `state`.

use super::{errors, pages, params, AppState};
use crate::login::{self, Callback};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::time::Instant;

pub async fn get(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let query = params(q.as_deref().unwrap_or("").as_bytes());
    let first = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let cb = Callback {
        state: first("state"),
        code: first("code"),
        error: first("error"),
        error_description: first("error_description"),
    };
    let browser = super::browser_cookie(&headers);
    match login::finish(&st.idp(), cb, browser.as_deref()).await {
        Ok(issued) if issued.status.is_some() => {
            let reason = issued.status.clone().unwrap_or_default();
            st.idp()
                .metrics
                .logins_failed
                .with_label_values(&[&issued.sp, &reason])
                .inc();
            tracing::info!(sp = %issued.sp, status = ?issued.status, outcome = "status", "login ended with a SAML status Response");
            pages::post_form(
                &issued.acs_url,
                &issued.saml_response,
                issued.relay_state.as_deref(),
            )
        }
        Ok(issued) => {
            let m = &st.idp().metrics;
            m.logins_completed.with_label_values(&[&issued.sp]).inc();
            if let Some(t) = issued.started_at {
                let secs = (chrono::Utc::now().timestamp() - t).max(0) as f64;
                m.login_duration
                    .with_label_values(&[&issued.sp])
                    .observe(secs);
            }
            tracing::info!(
                sp = %issued.sp,
                subject = %super::log_safe(&issued.subject),
                name_id = %super::log_safe(&issued.name_id),
                roles = ?issued.roles,
                outcome = "completed",
                duration_ms = started.elapsed().as_millis() as u64,
                "login completed"
            );
            pages::post_form(
                &issued.acs_url,
                &issued.saml_response,
                issued.relay_state.as_deref(),
            )
        }
        Err(f) => errors::login_failed(&st.idp(), &f.error, f.sp.as_deref()),
    }
}
