//! `GET /saml/init/{sp}`: IdP-initiated login (Flex's "Default Redirect URL").

use super::{errors, params, single, AppState};
use crate::login::{self, LoginError};
use crate::saml::request::RequestError;
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
    let relay_state = match single(&query, "RelayState") {
        Ok(r) => r.map(str::to_string),
        Err(m) => {
            return errors::login_failed(
                &st.idp(),
                &LoginError::Request(RequestError::Parameter(m)),
                Some(&sp),
            )
        }
    };
    let idp = st.idp();
    let browser = super::browser_cookie(&headers, idp.config.secure_cookies());
    let idp = &*idp;
    match login::begin_idp_initiated(idp, &sp, relay_state, browser.as_deref()).await {
        Ok(started) => errors::started(idp, &started, errors::Start::Idp),
        Err(e) => errors::login_failed(idp, &e, Some(&sp)),
    }
}
