//! The admin listener's routes (`server.admin_listen`): `/metrics`, the detailed `/readyz`
//! and the admin pages. It is plain HTTP with no authentication, for a private address only
//! (loopback, a pod address scraped inside the cluster); a reverse proxy never forwards to it.
//!
//! An admin page module adds itself with one line in [`routes`]:
//! `.merge(super::admin_logins::routes())`, where `routes()` returns a `Router<AppState>`.

use super::AppState;
use axum::routing::get;
use axum::Router;

/// Every admin route, before the shared layers and state.
fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(super::health::readyz_detail))
        .route("/metrics", get(super::health::metrics))
        .merge(super::admin_logins::routes())
}

/// The admin listener's router, sharing the public listener's state (the same generation,
/// swapped by SIGHUP for both).
pub fn router(state: AppState) -> Router {
    let request_timeout = state.idp().config.server.request_timeout;
    super::app::hardened(routes(), request_timeout).with_state(state)
}
