//! Application state and the router.

use crate::login::Idp;
use arc_swap::ArcSwap;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// One configuration generation: the login pipeline and what is rendered from it.
pub struct Current {
    pub idp: Arc<Idp>,
    /// IdP metadata, rendered once per generation.
    pub metadata_xml: String,
    /// The last `/readyz` answer.
    pub(crate) ready: super::health::ReadyCache,
}

impl Current {
    pub fn new(idp: Arc<Idp>) -> Self {
        let mut certs = vec![idp.keys.cert.der_b64.clone()];
        if let Some(next) = &idp.keys.next_cert {
            certs.push(next.der_b64.clone());
        }
        let metadata_xml = crate::saml::metadata::idp_metadata(
            &idp.config.idp.entity_id,
            &idp.config.sso_url(),
            &certs,
        );
        Current {
            idp,
            metadata_xml,
            ready: Default::default(),
        }
    }
}

/// What every handler shares. `SIGHUP` swaps in a new generation; requests in flight keep the
/// one they started with.
#[derive(Clone)]
pub struct AppState {
    current: Arc<ArcSwap<Current>>,
}

impl AppState {
    pub fn new(idp: Arc<Idp>) -> Self {
        AppState {
            current: Arc::new(ArcSwap::from_pointee(Current::new(idp))),
        }
    }

    /// The generation a request works with.
    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    pub fn idp(&self) -> Arc<Idp> {
        self.current.load().idp.clone()
    }

    /// Makes `idp` the generation new requests see.
    pub fn swap(&self, idp: Arc<Idp>) {
        self.current.store(Arc::new(Current::new(idp)));
    }
}

/// The proxy's public routes. `/metrics` and the readiness detail are not here: they are the
/// admin listener's (`admin.rs`).
pub fn router(state: AppState) -> Router {
    let idp = state.idp();
    let body_limit =
        idp.config.limits.saml.max_encoded * 2 + idp.config.limits.saml.max_relay_state * 3 + 4096;
    let routes = Router::new()
        .route("/saml/sso", get(super::sso::get).post(super::sso::post))
        .route("/saml/init/{sp}", get(super::init::get))
        .route("/saml/metadata", get(super::metadata::metadata))
        .route("/saml/cert.pem", get(super::metadata::cert_pem))
        .route("/oidc/callback", get(super::callback::get))
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(super::health::readyz))
        .layer(DefaultBodyLimit::max(body_limit));
    hardened(routes, idp.config.server.request_timeout).with_state(state)
}

/// The layers every listener's routes get: the request deadline, pages for axum's own
/// rejections, and the security headers. One `map_response` does both of the last two: each
/// `Router::layer` wraps every route in another boxed future, and five layers cost more per
/// request than what they do (issue 21).
pub(crate) fn hardened(
    routes: Router<AppState>,
    request_timeout: std::time::Duration,
) -> Router<AppState> {
    routes
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::map_response(finish_response))
}

/// The security headers every answer carries unless its handler set them.
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 4] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
];

/// [`friendly_rejections`], then the [`SECURITY_HEADERS`] a handler did not set.
async fn finish_response(resp: axum::response::Response) -> axum::response::Response {
    let mut resp = friendly_rejections(resp);
    let headers = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    resp
}

/// axum's own rejections (an oversize body, a wrong method) are plain text; a person gets a page.
fn friendly_rejections(resp: axum::response::Response) -> axum::response::Response {
    use axum::http::StatusCode as S;
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let status = resp.status();
    if is_html
        || !matches!(
            status,
            S::PAYLOAD_TOO_LARGE | S::METHOD_NOT_ALLOWED | S::GATEWAY_TIMEOUT
        )
    {
        return resp;
    }
    let reference = crate::clock::random_token(9);
    tracing::warn!(
        reference,
        status = status.as_u16(),
        "request refused or cut outside a handler"
    );
    let (title, message) = match status {
        S::PAYLOAD_TOO_LARGE => (
            "This sign-in request is too large",
            "The request carried more data than a SAML sign-in ever needs, so it was refused.",
        ),
        S::GATEWAY_TIMEOUT => (
            "The sign-in took too long",
            "flexgate gave up on this request (server.request_timeout_secs): a service it depends on is slow.",
        ),
        _ => (
            "This address does not accept that kind of request",
            "The request used an HTTP method this endpoint does not serve.",
        ),
    };
    super::pages::error_page(&super::pages::ErrorPage {
        status,
        title,
        message: message.into(),
        hint: "Start again from Flex. If this keeps happening, give your administrator the reference below.".into(),
        reference: &reference,
    })
}
