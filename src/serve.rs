//! `flexgate serve`: wire config, keys, upstream and store into the HTTP service and run it.

use crate::clock::{RandomIds, SystemClock};
use crate::config::{keys, Config, ConfigError};
use crate::login::Idp;
use crate::oidc::management::Management;
use crate::oidc::{OidcError, Upstream};
use crate::store::memory::MemoryStore;
use crate::web::{router, AppState};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Upstream(#[from] OidcError),
    #[error("cannot listen on {addr}: {source}\n  fix: pick a free port in server.listen, or stop the process using it")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the login pipeline from a validated config (reads the key material once).
pub fn build_idp(config: Config) -> Result<Idp, ServeError> {
    let keys = keys::load(&config)?;
    let upstream = Upstream::new(config.upstream.clone(), config.callback_url())?;
    let management = match &config.upstream.management {
        Some(m) => Some(Arc::new(
            Management::new(m.clone(), config.upstream.timeout).map_err(|e| {
                ServeError::Upstream(OidcError::Unreachable {
                    url: m.url.clone(),
                    reason: e.to_string(),
                })
            })?,
        )),
        None => None,
    };
    let store = MemoryStore::new(config.limits.max_pending_logins);
    Ok(Idp {
        config: Arc::new(config),
        keys: Arc::new(keys),
        upstream: Arc::new(upstream),
        management,
        store: Arc::new(store),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    })
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

/// Runs the proxy until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let listen = config.server.listen;
    let idp = Arc::new(build_idp(config)?);
    let cert = &idp.keys.cert;
    if cert.days_left < 0 {
        tracing::warn!(not_after = %cert.not_after, "the signing certificate has expired; most SPs ignore this, but replace it soon (see the README's key rollover)");
    } else if cert.days_left < 30 {
        tracing::warn!(not_after = %cert.not_after, days_left = cert.days_left, "the signing certificate expires soon");
    }
    match idp.upstream.warm_up().await {
        Ok(_) => tracing::info!(issuer = %idp.config.upstream.issuer, "upstream discovery ok"),
        Err(e) => {
            tracing::warn!(error = %e, "upstream discovery failed; /readyz reports not ready and logins retry it")
        }
    }
    let app = router(AppState::new(idp.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, public_url = %idp.config.server.public_url, entity_id = %idp.config.idp.entity_id, sps = idp.config.sps.len(), "flexgate listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
