//! `GET /healthz` (the process answers) and `GET /readyz` (it can complete a login).

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(st): State<AppState>) -> Response {
    let idp = st.idp();
    let idp = &*idp;
    let upstream = match idp.upstream.warm_up().await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let store = idp.store.ping().await.map_err(|e| e.to_string());
    let ready = upstream.is_ok() && store.is_ok();
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "keys": "ok",
            "upstream": show(&upstream),
            "store": show(&store),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut r = st.idp().metrics.render().into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
