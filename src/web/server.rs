//! The HTTP/1.1 listener: accept loop, optional TLS, connection deadlines, graceful shutdown.
//!
//! flexgate speaks HTTP/1.1 only (browsers, Flex and reverse proxies all speak it to an IdP).
//! That is a deliberate choice: hyper-util's auto (h1 + h2) connection first sniffs for the
//! HTTP/2 preface with no deadline, so a client that connects and never sends a byte would hold
//! a socket forever. Here every connection is under a deadline from its first byte on:
//!
//! - TLS handshake: `header_timeout` too;
//! - request head (and idling between kept-alive requests): `header_timeout`
//!   (`server.header_timeout_secs`), hyper's header-read timer;
//! - the request itself: `server.request_timeout_secs`, a tower layer in `app`.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How a listener behaves.
#[derive(Clone)]
pub struct Listen {
    /// `server.header_timeout_secs`: the TLS handshake, each request head and each idle spell
    /// between kept-alive requests must complete within it.
    pub header_timeout: Duration,
    /// `server.shutdown_grace_secs`: how long requests in flight may finish after shutdown.
    pub grace: Duration,
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// How the server stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the grace period.
    Drained,
    /// Connections were still open when the grace period ended; they were cut.
    GraceExpired,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests in
/// flight finish (idle kept-alive connections are closed at once) for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: Listen,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true);
    let tls = opts.tls.map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: the condition passes; do not spin on it.
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let http = http.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(tcp), service);
                tokio::spawn(finish(watcher.watch(conn)));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let handshake = opts.header_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            finish(watcher.watch(conn)).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => Stopped::Drained,
        _ = tokio::time::sleep(opts.grace) => Stopped::GraceExpired,
    }
}

async fn finish(conn: impl Future<Output = Result<(), hyper::Error>>) {
    if let Err(e) = conn.await {
        // Header timeouts, resets, malformed heads: ordinary on the open internet.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A rustls server configuration (HTTP/1.1 in ALPN) from a PEM certificate chain and PEM key.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
