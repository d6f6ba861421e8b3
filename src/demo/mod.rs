//! `flexgate demo`: the whole flow on one machine, no account and no config. One listener
//! serves three things:
//! - the proxy itself (the same router `serve` runs),
//! - `/dev-oidc`: a development OpenID issuer with a few users (`issuer.rs`),
//! - `/flex`: a Flex stand-in that starts logins and verifies what it receives (`flex_standin.rs`).
//!
//! A second loopback port serves the admin routes (`/metrics`, the detailed `/readyz`), as
//! `server.admin_listen` does for `serve`; both addresses are printed at start.
//!
//! The key pair is generated in memory at start. Nothing here is reachable from `serve`.

pub mod flex_standin;
pub mod issuer;

use crate::clock::{random_token, Clock, RandomIds, SystemClock};
use crate::config::keys::{describe_cert, KeyMaterial};
use crate::config::Config;
use crate::login::Idp;
use crate::oidc::Upstream;
use crate::saml::sign::Signer;
use crate::store::memory::MemoryStore;
use std::path::Path;
use std::sync::Arc;

/// The demo's Flex SSO connection id (a syntactically valid, made-up one).
pub const DEMO_JQ: &str = "JQ00000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}\n  fix: pass --port with a free port")]
    Bind { port: u16, source: std::io::Error },
    #[error("demo setup failed: {0}")]
    Setup(String),
    #[error("the demo server stopped: {0}")]
    Io(#[from] std::io::Error),
}

fn setup<E: std::fmt::Display>(e: E) -> DemoError {
    DemoError::Setup(e.to_string())
}

/// The demo's configuration, as a user would write it.
pub fn demo_config_toml(base: &str, client_secret: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
public_url = "{base}"

[idp]
key = "in-memory"
cert = "in-memory"

[upstream]
issuer = "{base}/dev-oidc"
client_id = "flexgate-demo"
client_secret = "{client_secret}"

[[sp]]
name = "flex"
kind = "flex-enhanced"
flex_connection = "{DEMO_JQ}"
acs_url = "{base}/flex/acs"
default_relay_state = "{base}/flex"

[sp.attributes]
email = "email"
full_name = "name"
image_url = "picture"
roles = "{roles}"
"#,
        roles = issuer::ROLES_CLAIM
    )
}

/// The proxy's login pipeline as the demo runs it: the demo's config for `base`, a throwaway
/// key pair made in memory, an in-memory store.
pub fn idp(base: &str, client_secret: &str) -> Result<Idp, DemoError> {
    let config = Config::from_toml(
        &demo_config_toml(base, client_secret),
        Path::new("<demo>"),
        |_| None,
    )
    .map_err(setup)?;
    let (key, cert) =
        crate::keygen::generate(2048, 30, "flexgate demo (throwaway)").map_err(setup)?;
    let signer = Signer::new(key, &cert).map_err(setup)?;
    let keys = KeyMaterial {
        signer,
        cert: describe_cert(&cert).map_err(setup)?,
        next_cert: None,
        request_keys: Default::default(),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let upstream = Upstream::new(config.upstream.clone(), config.callback_url())
        .map_err(setup)?
        .with_clock(clock.clone(), config.idp.clock_skew);
    let metrics = Arc::new(crate::metrics::Metrics::new().map_err(setup)?);
    upstream.set_metrics(metrics.clone());
    let store: Arc<dyn crate::store::Store> =
        Arc::new(MemoryStore::new(config.limits.max_pending_logins));
    let traces = Arc::new(crate::trace::keep::TraceLog::new(&config, store.clone()));
    Ok(Idp {
        store,
        traces,
        keys: Arc::new(keys),
        upstream: Arc::new(upstream),
        management: None,
        directories: Default::default(),
        metrics,
        clock,
        ids: Arc::new(RandomIds),
        config: Arc::new(config),
    })
}

/// The demo's two routers: the public app (proxy + dev issuer + Flex stand-in) for `base`
/// (`http://127.0.0.1:PORT`), and the admin listener's (`/metrics`, the detailed `/readyz`).
pub struct Apps {
    pub public: axum::Router,
    pub admin: axum::Router,
}

/// Builds the demo's apps for `base`.
pub fn app(base: &str) -> Result<Apps, DemoError> {
    let secret = random_token(24);
    let idp = Arc::new(idp(base, &secret)?);
    let cert_pem = idp.keys.cert.pem.clone();
    let sp = idp.config.sps[0].clone();
    let dev = issuer::router(issuer::DevIssuerConfig {
        issuer: format!("{base}/dev-oidc"),
        client_id: "flexgate-demo".into(),
        client_secret: secret,
        redirect_uri: idp.config.callback_url(),
        users: issuer::default_users(),
    })
    .map_err(setup)?;
    let standin = flex_standin::router(
        flex_standin::StandIn::new(
            &cert_pem,
            &sp.entity_id,
            &sp.acs_url,
            &idp.config.sso_url(),
            &idp.config.idp.entity_id,
            &idp.config.init_url(&sp),
        )
        .map_err(setup)?,
    );
    let state = crate::web::AppState::new(idp);
    let public = crate::web::router(state.clone())
        .nest("/dev-oidc", dev)
        .nest("/flex", standin)
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Redirect::to("/flex") }),
        );
    Ok(Apps {
        public,
        admin: crate::web::admin::router(state),
    })
}

async fn bind(port: u16) -> Result<tokio::net::TcpListener, DemoError> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| DemoError::Bind { port, source })
}

/// Runs the demo on 127.0.0.1:`port`, and its admin listener on 127.0.0.1:`admin_port`
/// (0: a free port; both printed), until Ctrl-C.
pub async fn run(port: u16, admin_port: u16) -> Result<(), DemoError> {
    let listener = bind(port).await?;
    let admin_listener = bind(admin_port).await?;
    let port = listener.local_addr()?.port();
    let admin_port = admin_listener.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let apps = app(&base)?;
    println!("flexgate demo is running.\n\n  Open {base}/flex and press \"Log in with SSO\".\n\n  Users: Alice (agent), Sam (supervisor), Ada (admin), Nora (no Flex role), Zoë (markup in her name).\n  Proxy metadata: {base}/saml/metadata · dev issuer: {base}/dev-oidc/.well-known/openid-configuration\n  Admin listener: http://127.0.0.1:{admin_port}/metrics · http://127.0.0.1:{admin_port}/readyz\n  Press Ctrl-C to stop.");
    let opts = crate::web::server::Listen {
        header_timeout: std::time::Duration::from_secs(15),
        grace: std::time::Duration::from_secs(2),
        tls: None,
    };
    let shutdown = crate::serve::shared_shutdown();
    tokio::join!(
        crate::web::server::serve(listener, apps.public, opts.clone(), shutdown()),
        crate::web::server::serve(admin_listener, apps.admin, opts, shutdown()),
    );
    Ok(())
}
