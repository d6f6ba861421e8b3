//! `GET /saml/init/{sp}`: IdP-initiated login (Flex's "Default Redirect URL").

use super::{errors, params, single, AppState};
use crate::login::{self, LoginError};
use crate::saml::request::RequestError;
use crate::trace::{Kind, StageName};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

pub async fn get(
    State(st): State<AppState>,
    Path(sp): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = params(q.as_deref().unwrap_or("").as_bytes());
    let idp = st.idp();
    let browser = super::browser_cookie(&headers, idp.config.secure_cookies());
    let idp = &*idp;
    let mut rec = idp.recorder(Kind::IdpInitiated);
    rec.with(|t| {
        t.binding = Some("IdP-initiated".into());
        t.sp = Some(sp.clone());
    });
    let relay_state = single(&query, "RelayState")
        .map(|r| r.map(str::to_string))
        .map_err(|m| LoginError::Request(RequestError::Parameter(m)));
    let relay_state = rec.step(StageName::RequestReceived, relay_state, |r| {
        format!(
            "/saml/init/{sp}: RelayState {}",
            r.as_ref()
                .map_or("absent".to_string(), |r| format!("of {} bytes", r.len()))
        )
    });
    let relay_state = match relay_state {
        Ok(r) => r,
        Err(e) => return errors::login_failed(idp, &e, Some(&sp), rec).await,
    };
    match login::begin_idp_initiated(idp, &sp, relay_state, browser.as_deref(), &mut rec).await {
        Ok(started) => errors::started(idp, &started, errors::Start::Idp, rec).await,
        Err(e) => errors::login_failed(idp, &e, Some(&sp), rec).await,
    }
}
