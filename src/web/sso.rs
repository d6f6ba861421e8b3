//! `GET, POST /saml/sso`: the SAML SSO service (HTTP-Redirect and HTTP-POST bindings).

use super::{errors, params, single, AppState};
use crate::login::{self, Binding, LoginError, SsoRequest};
use crate::saml::request::RequestError;
use crate::trace::{Kind, StageName};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

pub async fn get(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = params(q.as_deref().unwrap_or("").as_bytes());
    handle(
        &st,
        Binding::Redirect,
        &query,
        &query,
        q.as_deref().unwrap_or(""),
        &headers,
    )
    .await
}

pub async fn post(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = params(q.as_deref().unwrap_or("").as_bytes());
    let form = params(&body);
    handle(
        &st,
        Binding::Post,
        &form,
        &query,
        q.as_deref().unwrap_or(""),
        &headers,
    )
    .await
}

async fn handle(
    st: &AppState,
    binding: Binding,
    msg: &[(String, String)],
    query: &[(String, String)],
    raw_query: &str,
    headers: &HeaderMap,
) -> Response {
    let read = || -> Result<(String, Option<String>, Option<String>), LoginError> {
        let bad = |m: String| LoginError::Request(RequestError::Parameter(m));
        let req = single(msg, "SAMLRequest")
            .map_err(bad)?
            .ok_or(RequestError::MissingRequest)?;
        let relay = single(msg, "RelayState").map_err(bad)?.map(str::to_string);
        // `connection` may come in the query (Flex Console's SSO URL) or the form.
        let conn = match single(query, "connection").map_err(bad)? {
            Some(c) => Some(c.to_string()),
            None => single(msg, "connection").map_err(bad)?.map(str::to_string),
        };
        Ok((req.to_string(), relay, conn))
    };
    let idp = st.idp();
    let browser = super::browser_cookie(headers, idp.config.secure_cookies());
    let idp = &*idp;
    let mut rec = idp.recorder(Kind::SpInitiated);
    rec.with(|t| t.binding = Some(binding.label().to_string()));
    let read = rec.step(StageName::RequestReceived, read(), |(req, relay, conn)| {
        format!(
            "{}: SAMLRequest of {} bytes, RelayState {}, connection {:?}",
            binding.label(),
            req.len(),
            relay
                .as_ref()
                .map_or("absent".to_string(), |r| format!("of {} bytes", r.len())),
            conn.as_deref().unwrap_or("-")
        )
    });
    let (saml_request, relay_state, connection) = match read {
        Ok(v) => v,
        Err(e) => return errors::login_failed(idp, &e, None, rec).await,
    };
    let r = SsoRequest {
        binding,
        saml_request: &saml_request,
        raw_query,
        relay_state,
        connection,
        browser: browser.as_deref(),
    };
    match login::begin_sp_initiated(idp, r, &mut rec).await {
        Ok(login::Begun::Upstream(started)) => {
            errors::started(idp, &started, errors::Start::Sp(binding), rec).await
        }
        Ok(login::Begun::Respond(issued)) => errors::status_sent(idp, &issued, rec).await,
        Err(e) => errors::login_failed(idp, &e, None, rec).await,
    }
}
