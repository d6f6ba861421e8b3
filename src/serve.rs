//! `flexgate serve`: wire config, keys, upstream and store into the HTTP service and run it —
//! with a bounded graceful shutdown on SIGTERM/SIGINT, configuration and key reload on SIGHUP
//! (a bad new configuration is refused and the running one kept), and optional TLS.

use crate::auth0::management::Management;
use crate::clock::{Clock, RandomIds, SystemClock};
use crate::config::{keys, Config, ConfigError, StoreConfig};
use crate::login::Idp;
use crate::metrics::Metrics;
use crate::oidc::{OidcError, Upstream};
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::Store;
use crate::web::{admin, router, server, AppState};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Upstream(#[from] OidcError),
    #[error("the state store cannot be set up: {0}\n  fix: check [store] url")]
    Store(String),
    #[error("cannot listen on {addr} ({key}): {source}\n  fix: pick a free port in {key}, or stop the process using it")]
    Bind {
        key: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS cannot be set up from [server.tls] ({cert}, {key}): {reason}\n  fix: point cert at a PEM certificate chain and key at its PEM private key")]
    Tls {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("the provider's directory client cannot be set up: {0}")]
    Directory(String),
    #[error("metrics cannot be set up: {0}")]
    Metrics(String),
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// The state store the config names.
pub fn make_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    Ok(match &config.store {
        StoreConfig::Memory => Arc::new(MemoryStore::new(config.limits.max_pending_logins)),
        StoreConfig::Redis {
            url,
            prefix,
            timeout,
        } => Arc::new(
            RedisStore::new(url.expose(), prefix, *timeout)
                .map_err(|e| ServeError::Store(e.to_string()))?,
        ),
    })
}

/// Builds the login pipeline from a validated config (reads the key material once).
pub fn build_idp(
    config: Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) -> Result<Idp, ServeError> {
    let keys = keys::load(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let upstream = Upstream::new(config.upstream.clone(), config.callback_url())?
        .with_clock(clock.clone(), config.idp.clock_skew);
    upstream.set_metrics(metrics.clone());
    let management = match &config.upstream.management {
        Some(m) => {
            let unusable = |e: crate::auth0::management::ManagementError| {
                ServeError::Upstream(OidcError::Unreachable {
                    url: m.url.clone(),
                    reason: e.to_string(),
                })
            };
            let mgmt = Management::new(m.clone(), config.upstream.timeout).map_err(unusable)?;
            mgmt.set_metrics(metrics.clone());
            mgmt.start_prefetch(store.clone()).map_err(unusable)?;
            Some(Arc::new(mgmt))
        }
        None => None,
    };
    let directories = crate::directory::Directories::build(&config.upstream).map_err(|e| {
        ServeError::Directory(format!(
            "{e}\n  fix: see [upstream] in the README's section for {}",
            config.upstream.preset().title
        ))
    })?;
    let traces = Arc::new(crate::trace::keep::TraceLog::new(&config, store.clone()));
    Ok(Idp {
        config: Arc::new(config),
        keys: Arc::new(keys),
        upstream: Arc::new(upstream),
        management,
        directories,
        store,
        metrics,
        clock,
        ids: Arc::new(RandomIds),
        traces,
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

fn warn_cert(idp: &Idp) {
    let cert = &idp.keys.cert;
    if cert.days_left < 0 {
        tracing::warn!(not_after = %cert.not_after, "the signing certificate has expired; most SPs ignore this, but replace it soon (see the README's key rollover)");
    } else if cert.days_left < 30 {
        tracing::warn!(not_after = %cert.not_after, days_left = cert.days_left, "the signing certificate expires soon");
    }
}

/// Re-reads the config and keys on every SIGHUP; a config that fails to load is refused and the
/// running generation kept.
#[cfg(unix)]
fn spawn_reload(path: PathBuf, state: AppState, store: Arc<dyn Store>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be handled here; reload needs a restart");
            return;
        };
        while hup.recv().await.is_some() {
            let old = state.idp();
            let loaded = Config::load(&path).map_err(ServeError::from).and_then(|cfg| {
                if cfg.store != old.config.store {
                    tracing::warn!("[store] changed; the running store is kept until a restart");
                }
                if cfg.server.listen != old.config.server.listen
                    || cfg.server.admin_listen != old.config.server.admin_listen
                    || cfg.server.tls != old.config.server.tls
                {
                    tracing::warn!("server.listen / server.admin_listen / [server.tls] changed; they take effect at the next restart");
                }
                build_idp(cfg, store.clone(), metrics.clone())
            });
            match loaded {
                Ok(idp) => {
                    warn_cert(&idp);
                    let idp = Arc::new(idp);
                    if let Err(e) = idp.upstream.warm_up().await {
                        tracing::warn!(error = %e, "upstream discovery failed after reload; logins retry it");
                    }
                    state.swap(idp);
                    tracing::info!(config = %path.display(), "configuration and keys reloaded");
                }
                Err(e) => {
                    tracing::error!(config = %path.display(), error = %e, "reload refused; the running configuration is kept")
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload(_: PathBuf, _: AppState, _: Arc<dyn Store>, _: Arc<Metrics>) {}

/// Binds `addr` for the config key `key`.
async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            key,
            addr: addr.to_string(),
            source,
        })
}

/// One SIGTERM/SIGINT, seen by every listener: they stop accepting together and drain within
/// the same grace period.
pub fn shared_shutdown() -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    move || {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    }
}

/// The end of an accept loop's task: a panic in it goes on unwinding, as it did when the loop
/// ran inside `run` itself. (It cannot be cancelled: `run` holds the handle until it ends, and
/// the runtime is not shut down while `run` is being driven.)
fn joined(r: Result<server::Stopped, tokio::task::JoinError>) -> server::Stopped {
    match r {
        Ok(stopped) => stopped,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => server::Stopped::GraceExpired,
        },
    }
}

/// Runs the proxy until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let listen = config.server.listen;
    let admin_listen = config.server.admin_listen;
    let grace = config.server.shutdown_grace;
    let tls = config.server.tls.clone();
    let header_timeout = config.server.header_timeout;
    let path = config.source.clone();
    let metrics = Arc::new(Metrics::new().map_err(|e| ServeError::Metrics(e.to_string()))?);
    let store = make_store(&config)?;
    let idp = Arc::new(build_idp(config, store.clone(), metrics.clone())?);
    warn_cert(&idp);
    match idp.upstream.warm_up().await {
        Ok(_) => tracing::info!(issuer = %idp.config.upstream.issuer, "upstream discovery ok"),
        Err(e) => {
            tracing::warn!(error = %e, "upstream discovery failed; /readyz reports not ready and logins retry it")
        }
    }
    if let Err(e) = idp.store.ping().await {
        tracing::warn!(error = %e, "the state store is not reachable; /readyz reports not ready");
    }
    let state = AppState::new(idp.clone());
    spawn_reload(path, state.clone(), store, metrics);

    let tls = match tls {
        Some(t) => Some(
            server::tls_config(&t.cert, &t.key).map_err(|reason| ServeError::Tls {
                cert: t.cert.display().to_string(),
                key: t.key.display().to_string(),
                reason,
            })?,
        ),
        None => None,
    };
    let listener = bind("server.listen", listen).await?;
    let admin = match admin_listen {
        Some(addr) => Some(bind("server.admin_listen", addr).await?),
        None => None,
    };
    tracing::info!(listen = %listen, public_url = %idp.config.server.public_url, entity_id = %idp.config.idp.entity_id, sps = idp.config.sps.len(), tls = tls.is_some(), "flexgate listening");
    let opts = server::Listen {
        header_timeout,
        grace,
        tls,
    };
    let shutdown = shared_shutdown();
    // The accept loops run as tasks on the runtime's workers, not on the thread that called
    // `block_on`: a connection task spawned from a worker starts on that worker (tokio's LIFO
    // slot), where one spawned from the `block_on` thread goes through the injection queue and
    // wakes a parked worker (a futex wake and a context switch per connection).
    let public = tokio::spawn(server::serve(
        listener,
        router(state.clone()),
        opts.clone(),
        shutdown(),
    ));
    let admin = tokio::spawn(async move {
        let Some(listener) = admin else {
            return server::Stopped::Drained;
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(admin_listen = %addr, "admin listener (plain HTTP): /metrics, /readyz detail");
        }
        let admin_opts = server::Listen { tls: None, ..opts };
        server::serve(listener, admin::router(state), admin_opts, shutdown()).await
    });
    let (public, admin) = tokio::join!(public, admin);
    let (public, admin) = (joined(public), joined(admin));
    if public == server::Stopped::GraceExpired || admin == server::Stopped::GraceExpired {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight after the grace period were cut"
        );
    }
    tracing::info!("flexgate stopped");
    Ok(())
}
