//! `[server]`, `[store]` and `[log]`: where and how the process runs.

use super::Problems;
use crate::config::raw::{RawLog, RawServer, RawStore};
use crate::config::{
    https_or_loopback, LogConfig, Secret, ServerConfig, StoreConfig, TlsConfig, DEFAULT_LOG_LEVEL,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// `server.listen` when it is not set.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(super) fn server(raw: RawServer, p: &mut Problems) -> Option<ServerConfig> {
    let listen_s = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_s.parse::<SocketAddr>().ok();
    if listen.is_none() {
        p.add(
            "server.listen",
            format!("is {listen_s:?}, not an address:port"),
            "write e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
        );
    }
    let admin_listen = admin_listen(raw.admin_listen.as_deref(), listen, p);
    let public_url = public_url(&raw.public_url, p);
    let shutdown_grace = p.secs(
        "server.shutdown_grace_secs",
        raw.shutdown_grace_secs,
        10,
        0..=300,
    );
    let request_timeout = p.secs(
        "server.request_timeout_secs",
        raw.request_timeout_secs,
        30,
        5..=300,
    );
    let header_timeout = p.secs(
        "server.header_timeout_secs",
        raw.header_timeout_secs,
        15,
        1..=300,
    );
    let login_timeout = p.secs(
        "server.login_timeout_secs",
        raw.login_timeout_secs,
        600,
        30..=3600,
    );
    let tls = raw.tls.map(|t| TlsConfig {
        cert: p.path(&t.cert),
        key: p.path(&t.key),
    });
    Some(ServerConfig {
        listen: listen?,
        admin_listen: admin_listen?,
        public_url: public_url?,
        login_timeout: login_timeout?,
        shutdown_grace: shutdown_grace?,
        request_timeout: request_timeout?,
        header_timeout: header_timeout?,
        tls,
    })
}

/// `server.admin_listen`: unset (the default) means no admin listener. Any address is
/// accepted (a pod address or `0.0.0.0` in a container is normal); `check` warns when it is not
/// loopback or private. It must not be `server.listen`.
fn admin_listen(
    raw: Option<&str>,
    listen: Option<SocketAddr>,
    p: &mut Problems,
) -> Option<Option<SocketAddr>> {
    let key = "server.admin_listen";
    let Some(raw) = raw else {
        return Some(None);
    };
    let Ok(addr) = raw.parse::<SocketAddr>() else {
        p.add(
            key,
            format!("is {raw:?}, not an address:port"),
            "write e.g. \"127.0.0.1:9090\", or leave it out to run no admin listener",
        );
        return None;
    };
    if listen.is_some_and(|l| l.port() == addr.port() && addr.port() != 0) {
        p.add(
            key,
            format!("uses the port of server.listen ({})", addr.port()),
            "give the admin listener its own port, e.g. \"127.0.0.1:9090\"",
        );
        return None;
    }
    Some(Some(addr))
}

/// `server.public_url`, without a trailing slash.
fn public_url(raw: &str, p: &mut Problems) -> Option<String> {
    let key = "server.public_url";
    match https_or_loopback(raw) {
        Err(problem) => p.add(
            key,
            problem,
            "write the https URL browsers use to reach flexgate, e.g. \"https://sso.example.com\"",
        ),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => p.add(
            key,
            "has a query or fragment",
            "remove everything after the path",
        ),
        Ok(u) => return Some(u.as_str().trim_end_matches('/').to_string()),
    }
    None
}

/// The Redis URL forms flexgate reads, for the fix of a bad `store.url`.
const STORE_URL_FIX: &str = "write redis://host:6379, redis+sentinel://host:26379/SERVICE or redis+cluster://node1:6379,node2:6379 (rediss://, rediss+sentinel://, rediss+cluster:// for TLS); leave [store] out for the in-memory store";

pub(super) fn store(raw: Option<RawStore>, p: &mut Problems) -> Option<StoreConfig> {
    let Some(RawStore {
        url: Some(url),
        prefix,
        timeout_ms,
    }) = raw
    else {
        return Some(StoreConfig::Memory);
    };
    let url_ok = match crate::store::redis::check_url(&url) {
        Ok(()) => true,
        Err(problem) => {
            p.add("store.url", problem, STORE_URL_FIX);
            false
        }
    };
    let timeout = p
        .within(
            "store.timeout_ms",
            timeout_ms,
            2000,
            50..=30_000,
            "milliseconds",
        )
        .map(Duration::from_millis);
    url_ok.then_some(())?;
    Some(StoreConfig::Redis {
        url: Secret::new(url),
        prefix: prefix.unwrap_or_else(|| "flexgate".into()),
        timeout: timeout?,
    })
}

/// `log.format`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

pub(super) fn log(raw: Option<RawLog>, p: &mut Problems) -> Option<LogConfig> {
    let raw = raw.unwrap_or_default();
    let format = p.choice(
        "log.format",
        raw.format.as_deref(),
        LogFormat::Text,
        "use \"text\" or \"json\"",
    )?;
    Some(LogConfig {
        json: matches!(format, LogFormat::Json),
        level: raw.level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
    })
}
