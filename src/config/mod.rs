//! Configuration: one TOML file → a validated [`Config`], with Flex presets resolved once.
//!
//! This is the only module that reads files at start-up (the config and the key material,
//! `keys.rs`). Every error names the file, the key and the fix, and stops start-up.

pub mod keys;
pub mod secret;

pub use secret::Secret;

use crate::saml::sign::SignMode;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}\n  fix: pass --config PATH, set FLEXGATE_CONFIG, or create ./flexgate.toml (see the README's configuration reference)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}\n  fix: compare with the configuration reference in the README")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}` {problem}\n  fix: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
        fix: String,
    },
}

/// Where the config came from, for error messages.
#[derive(Debug, Clone)]
struct Ctx {
    path: PathBuf,
}

impl Ctx {
    fn invalid(
        &self,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

// ---------------------------------------------------------------- raw TOML shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    idp: RawIdp,
    upstream: RawUpstream,
    #[serde(default)]
    sp: Vec<RawSp>,
    #[serde(default)]
    limits: RawLimits,
    mfa: Option<RawMfa>,
    store: Option<RawStore>,
    log: Option<RawLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    prefix: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMfa {
    acr_values: Option<String>,
    proof: Option<String>,
    amr_values: Option<Vec<String>>,
    context_class: Option<String>,
    request_classes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: String,
    login_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    header_timeout_secs: Option<u64>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdp {
    entity_id: Option<String>,
    key: String,
    cert: PathBuf,
    next_cert: Option<PathBuf>,
    assertion_lifetime_secs: Option<u64>,
    clock_skew_secs: Option<u64>,
    request_max_age_secs: Option<u64>,
    authn_context_class: Option<String>,
    #[serde(default)]
    allow_insecure_key_permissions: bool,
    pkcs11_sessions: Option<usize>,
    #[serde(default)]
    allow_extractable_key: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    issuer: String,
    client_id: String,
    client_secret: String,
    connection: Option<String>,
    scopes: Option<Vec<String>>,
    token_auth_method: Option<String>,
    timeout_secs: Option<u64>,
    userinfo: Option<bool>,
    management: Option<RawManagement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    url: Option<String>,
    client_id: String,
    client_secret: String,
    cache_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSp {
    name: String,
    kind: Option<String>,
    flex_connection: Option<String>,
    region: Option<String>,
    account_sid: Option<String>,
    entity_id: Option<String>,
    acs_url: Option<String>,
    sign: Option<String>,
    default_relay_state: Option<String>,
    attributes: Option<toml::Table>,
    #[serde(default)]
    extra_roles: Vec<String>,
    request_cert: Option<PathBuf>,
    want_signed_requests: Option<bool>,
    #[serde(default)]
    allow_sha1_requests: bool,
    mfa: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_saml_request_bytes: Option<usize>,
    max_authn_request_xml_bytes: Option<usize>,
    max_relay_state_bytes: Option<usize>,
    max_pending_logins: Option<usize>,
}

// ---------------------------------------------------------------- validated config

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub idp: IdpConfig,
    pub upstream: UpstreamConfig,
    pub sps: Vec<SpConfig>,
    pub limits: LimitsConfig,
    pub mfa: crate::mfa::MfaPolicy,
    pub store: StoreConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// How browsers reach flexgate, without a trailing slash.
    pub public_url: String,
    /// How long a login may take at the upstream before its state expires.
    pub login_timeout: Duration,
    /// After SIGTERM/SIGINT, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    /// The longest any request may take (upstream calls included).
    pub request_timeout: Duration,
    /// How long a connection may take to send a request's head, and how long it may sit idle
    /// between requests (slow-header clients are cut here, before any handler runs).
    pub header_timeout: Duration,
    /// Serve HTTPS directly (for deployments without a reverse proxy).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: PEM certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[store]`: where shared login state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process (one instance).
    Memory,
    /// Redis, shared by several instances.
    Redis {
        url: Secret,
        prefix: String,
        timeout: Duration,
    },
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub json: bool,
    /// An env-filter directive (FLEXGATE_LOG overrides it).
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct IdpConfig {
    pub entity_id: String,
    /// A PEM file or a `pkcs11:` URI.
    pub key: keys::KeyLocation,
    pub cert: PathBuf,
    pub next_cert: Option<PathBuf>,
    pub assertion_lifetime: Duration,
    pub clock_skew: Duration,
    pub request_max_age: Duration,
    pub authn_context_class: String,
    pub allow_insecure_key_permissions: bool,
    /// Sessions kept open to a PKCS#11 token (concurrent signatures).
    pub pkcs11_sessions: usize,
    /// Accept a token key whose private part can be read out.
    pub allow_extractable_key: bool,
}

/// How flexgate authenticates at the upstream's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The issuer exactly as the provider writes it (Auth0: with a trailing slash).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub connection: Option<String>,
    pub scopes: Vec<String>,
    /// `None`: pick from what discovery allows (basic first).
    pub token_auth_method: Option<TokenAuthMethod>,
    pub timeout: Duration,
    /// Merge the userinfo response into the ID token's claims (when the endpoint exists).
    pub userinfo: bool,
    /// Read `app_metadata` from the Auth0 Management API.
    pub management: Option<ManagementConfig>,
}

/// The Auth0 Management API client (`[upstream.management]`).
#[derive(Debug, Clone)]
pub struct ManagementConfig {
    /// `https://{tenant}.auth0.com`, without a trailing slash.
    pub url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// How long a user's app_metadata is reused.
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpKind {
    FlexEnhanced,
    FlexLegacy,
    Generic,
}

impl SpKind {
    pub fn is_flex(self) -> bool {
        !matches!(self, SpKind::Generic)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SpKind::FlexEnhanced => "flex-enhanced",
            SpKind::FlexLegacy => "flex-legacy",
            SpKind::Generic => "generic",
        }
    }
}

/// One SAML attribute and the claim it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMapping {
    pub saml_name: String,
    pub claim: String,
}

#[derive(Debug, Clone)]
pub struct SpConfig {
    pub name: String,
    pub kind: SpKind,
    /// The SP's entity id: the AuthnRequest Issuer and the assertion's Audience.
    pub entity_id: String,
    pub acs_url: String,
    pub sign: SignMode,
    pub default_relay_state: Option<String>,
    pub attributes: Vec<AttributeMapping>,
    /// Role values accepted besides Flex's own.
    pub extra_roles: Vec<String>,
    /// The SP's request-signing certificate: signed AuthnRequests are verified with it.
    pub request_cert: Option<PathBuf>,
    /// Unsigned AuthnRequests are refused (needs `request_cert`).
    pub want_signed_requests: bool,
    /// Accept RSA-SHA1 request signatures (refused by default).
    pub allow_sha1_requests: bool,
    /// Step-up MFA for this SP.
    pub mfa: crate::mfa::MfaMode,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub saml: crate::saml::request::Limits,
    pub max_pending_logins: usize,
}

impl Config {
    pub fn sso_url(&self) -> String {
        format!("{}/saml/sso", self.server.public_url)
    }
    pub fn callback_url(&self) -> String {
        format!("{}/oidc/callback", self.server.public_url)
    }
    pub fn metadata_url(&self) -> String {
        format!("{}/saml/metadata", self.server.public_url)
    }
    pub fn init_url(&self, sp: &SpConfig) -> String {
        format!("{}/saml/init/{}", self.server.public_url, sp.name)
    }
    /// `public_url` is https, so cookies carry `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.server.public_url.starts_with("https://")
    }
    pub fn sp_by_entity_id(&self, entity_id: &str) -> Option<&SpConfig> {
        self.sps.iter().find(|s| s.entity_id == entity_id)
    }
    pub fn sp_by_name(&self, name: &str) -> Option<&SpConfig> {
        self.sps.iter().find(|s| s.name == name)
    }

    /// Finds the config file: `--config`, else `$FLEXGATE_CONFIG`, else `./flexgate.toml`.
    pub fn locate(cli: Option<&Path>) -> PathBuf {
        if let Some(p) = cli {
            return p.to_path_buf();
        }
        match std::env::var_os("FLEXGATE_CONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from("flexgate.toml"),
        }
    }

    /// Reads and validates a config file, expanding `${VAR}` from the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path, |k| std::env::var(k).ok())
    }

    /// Validates TOML text; `env` resolves `${VAR}`. `path` is used for messages and to
    /// resolve relative key paths (relative to the config file's folder).
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            path: path.to_path_buf(),
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        expand_env(&mut value, "", &ctx, &env)?;
        let raw: RawConfig =
            value
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        validate(raw, &ctx, &base)
    }
}

fn expand_env(
    v: &mut toml::Value,
    key: &str,
    ctx: &Ctx,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand_str(s, key, ctx, env)?;
        }
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                expand_env(item, &format!("{key}[{i}]"), ctx, env)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                let sub = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                expand_env(item, &sub, ctx, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(
    s: &str,
    key: &str,
    ctx: &Ctx,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            ctx.invalid(
                key,
                "has a `${` without its closing `}`",
                "write ${NAME} with NAME an environment variable",
            )
        })?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(ctx.invalid(
                key,
                format!("refers to ${{{name}}}, which is not an environment variable name"),
                "use letters, digits and _ in ${NAME}",
            ));
        }
        let value = env(name).ok_or_else(|| {
            ctx.invalid(key, format!("refers to the environment variable {name}, which is not set"), format!("export {name}=… before starting flexgate (for systemd: Environment= or EnvironmentFile=)"))
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Parses an absolute URL that must be https, or http on a loopback address.
pub(crate) fn https_or_loopback(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("is not an absolute URL ({e})"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(&url) => Ok(url),
        "http" => Err(
            "uses http; only https is allowed (http only on 127.0.0.1, ::1 or localhost)".into(),
        ),
        other => Err(format!("uses the scheme {other:?}; only https is allowed")),
    }
}

fn secs(
    v: Option<u64>,
    default: u64,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    ctx: &Ctx,
) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !range.contains(&v) {
        return Err(ctx.invalid(
            key,
            format!("is {v}, outside {}..={}", range.start(), range.end()),
            format!(
                "pick a value between {} and {} seconds",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Duration::from_secs(v))
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34
        && s.starts_with(prefix)
        && s[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn validate(raw: RawConfig, ctx: &Ctx, base: &Path) -> Result<Config, ConfigError> {
    // [server]
    let listen_s = raw
        .server
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen: SocketAddr = listen_s.parse().map_err(|_| {
        ctx.invalid(
            "server.listen",
            format!("is {listen_s:?}, not an address:port"),
            "write e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
        )
    })?;
    let public = https_or_loopback(&raw.server.public_url).map_err(|p| {
        ctx.invalid(
            "server.public_url",
            p,
            "write the https URL browsers use to reach flexgate, e.g. \"https://sso.example.com\"",
        )
    })?;
    if public.query().is_some() || public.fragment().is_some() {
        return Err(ctx.invalid(
            "server.public_url",
            "has a query or fragment",
            "remove everything after the path",
        ));
    }
    let public_url = public.as_str().trim_end_matches('/').to_string();
    let shutdown_grace = secs(
        raw.server.shutdown_grace_secs,
        10,
        "server.shutdown_grace_secs",
        0..=300,
        ctx,
    )?;
    let request_timeout = secs(
        raw.server.request_timeout_secs,
        30,
        "server.request_timeout_secs",
        5..=300,
        ctx,
    )?;
    let header_timeout = secs(
        raw.server.header_timeout_secs,
        15,
        "server.header_timeout_secs",
        1..=300,
        ctx,
    )?;
    let tls = raw.server.tls.as_ref().map(|t| TlsConfig {
        cert: if t.cert.is_absolute() {
            t.cert.clone()
        } else {
            base.join(&t.cert)
        },
        key: if t.key.is_absolute() {
            t.key.clone()
        } else {
            base.join(&t.key)
        },
    });
    let store = match raw.store {
        None => StoreConfig::Memory,
        Some(RawStore { url: None, .. }) => StoreConfig::Memory,
        Some(RawStore {
            url: Some(url),
            prefix,
            timeout_ms,
        }) => {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            let fix = "write redis://host:6379, redis+sentinel://host:26379/SERVICE or redis+cluster://node1:6379,node2:6379 (rediss://, rediss+sentinel://, rediss+cluster:// for TLS); leave [store] out for the in-memory store";
            match scheme {
                "redis" | "rediss" => {
                    Url::parse(&url).map_err(|e| {
                        ctx.invalid("store.url", format!("is not a URL ({e})"), fix)
                    })?;
                }
                "redis+sentinel" | "redis+cluster" | "rediss+sentinel" | "rediss+cluster" => {
                    if crate::store::redis::RedisStore::new(&url, "x", Duration::from_secs(1))
                        .is_err()
                    {
                        return Err(ctx.invalid("store.url", "cannot be used (hosts or the Sentinel service name are missing or malformed)", fix));
                    }
                }
                other => {
                    return Err(ctx.invalid("store.url", format!("uses the scheme {other:?}"), fix))
                }
            }
            let timeout_ms = timeout_ms.unwrap_or(2000);
            if !(50..=30_000).contains(&timeout_ms) {
                return Err(ctx.invalid(
                    "store.timeout_ms",
                    format!("is {timeout_ms}"),
                    "pick 50 to 30000 milliseconds",
                ));
            }
            StoreConfig::Redis {
                url: Secret::new(url),
                prefix: prefix.unwrap_or_else(|| "flexgate".into()),
                timeout: Duration::from_millis(timeout_ms),
            }
        }
    };
    let log = match raw.log {
        None => LogConfig {
            json: false,
            level: "info".into(),
        },
        Some(l) => LogConfig {
            json: match l.format.as_deref().unwrap_or("text") {
                "text" => false,
                "json" => true,
                other => {
                    return Err(ctx.invalid(
                        "log.format",
                        format!("is {other:?}"),
                        "use \"text\" or \"json\"",
                    ))
                }
            },
            level: l.level.unwrap_or_else(|| "info".into()),
        },
    };
    let login_timeout = secs(
        raw.server.login_timeout_secs,
        600,
        "server.login_timeout_secs",
        30..=3600,
        ctx,
    )?;

    // [idp]
    let entity_id = raw
        .idp
        .entity_id
        .clone()
        .unwrap_or_else(|| format!("{public_url}/saml/metadata"));
    if entity_id.trim().is_empty() || entity_id.trim() != entity_id {
        return Err(ctx.invalid(
            "idp.entity_id",
            "is empty or has surrounding spaces",
            "remove it to use {public_url}/saml/metadata, or write the issuer Flex expects",
        ));
    }
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let idp = IdpConfig {
        entity_id,
        key: keys::KeyLocation::parse(&raw.idp.key, base).map_err(|p| {
            ctx.invalid("idp.key", p, "write a PEM file path, or pkcs11:token=T;object=L?module-path=M&pin-value=P (README: signing key in an HSM)")
        })?,
        cert: resolve(&raw.idp.cert),
        next_cert: raw.idp.next_cert.as_deref().map(resolve),
        assertion_lifetime: secs(
            raw.idp.assertion_lifetime_secs,
            300,
            "idp.assertion_lifetime_secs",
            30..=3600,
            ctx,
        )?,
        clock_skew: secs(
            raw.idp.clock_skew_secs,
            60,
            "idp.clock_skew_secs",
            0..=600,
            ctx,
        )?,
        request_max_age: secs(
            raw.idp.request_max_age_secs,
            300,
            "idp.request_max_age_secs",
            30..=3600,
            ctx,
        )?,
        authn_context_class: raw
            .idp
            .authn_context_class
            .clone()
            .unwrap_or_else(|| crate::saml::ns::AC_PPT.to_string()),
        allow_insecure_key_permissions: raw.idp.allow_insecure_key_permissions,
        pkcs11_sessions: match raw.idp.pkcs11_sessions {
            None => 8,
            Some(n @ 1..=256) => n,
            Some(n) => {
                return Err(ctx.invalid(
                    "idp.pkcs11_sessions",
                    format!("is {n}"),
                    "pick 1 to 256 (at most what the token allows)",
                ))
            }
        },
        allow_extractable_key: raw.idp.allow_extractable_key,
    };

    // [upstream]
    let u = raw.upstream;
    https_or_loopback(&u.issuer).map_err(|p| {
        ctx.invalid("upstream.issuer", p, "write the issuer exactly as the provider's discovery document says, e.g. \"https://example.us.auth0.com/\" (Auth0 keeps the trailing slash)")
    })?;
    if u.client_id.trim().is_empty() {
        return Err(ctx.invalid(
            "upstream.client_id",
            "is empty",
            "copy the Client ID of the upstream application",
        ));
    }
    if u.client_secret.is_empty() {
        return Err(ctx.invalid(
            "upstream.client_secret",
            "is empty",
            "set it, e.g. client_secret = \"${FLEXGATE_CLIENT_SECRET}\" and export that variable",
        ));
    }
    let scopes = u
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ctx.invalid(
            "upstream.scopes",
            "does not include \"openid\"",
            "add \"openid\" (OpenID Connect needs it)",
        ));
    }
    if scopes
        .iter()
        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(ctx.invalid(
            "upstream.scopes",
            "has an empty scope or one with spaces",
            "list one scope per string",
        ));
    }
    let token_auth_method = match u.token_auth_method.as_deref() {
        None => None,
        Some("client_secret_basic") => Some(TokenAuthMethod::ClientSecretBasic),
        Some("client_secret_post") => Some(TokenAuthMethod::ClientSecretPost),
        Some(other) => {
            return Err(ctx.invalid("upstream.token_auth_method", format!("is {other:?}"), "use \"client_secret_basic\" or \"client_secret_post\", or leave it out to follow discovery"))
        }
    };
    let management = match u.management {
        None => None,
        Some(m) => {
            let url = match m.url {
                Some(url) => url,
                None => {
                    let issuer = Url::parse(&u.issuer).map_err(|e| {
                        ctx.invalid("upstream.issuer", e.to_string(), "write an absolute URL")
                    })?;
                    format!("{}://{}", issuer.scheme(), issuer.host_str().unwrap_or(""))
                }
            };
            let parsed = https_or_loopback(&url).map_err(|p| {
                ctx.invalid("upstream.management.url", p, "write your tenant's canonical domain, e.g. \"https://example.us.auth0.com\" (not a custom domain)")
            })?;
            if parsed.path() != "/" || parsed.query().is_some() {
                return Err(ctx.invalid(
                    "upstream.management.url",
                    "has a path or query",
                    "write only scheme and host, e.g. \"https://example.us.auth0.com\"",
                ));
            }
            if m.client_id.is_empty() || m.client_secret.is_empty() {
                return Err(ctx.invalid("upstream.management", "has an empty client_id or client_secret", "create a Machine-to-Machine application authorized for the Auth0 Management API with the read:users scope, and copy its credentials"));
            }
            Some(ManagementConfig {
                url: url.trim_end_matches('/').to_string(),
                client_id: m.client_id,
                client_secret: Secret::new(m.client_secret),
                cache_ttl: secs(
                    m.cache_secs,
                    60,
                    "upstream.management.cache_secs",
                    0..=3600,
                    ctx,
                )?,
            })
        }
    };
    let upstream = UpstreamConfig {
        management,
        issuer: u.issuer,
        client_id: u.client_id,
        client_secret: Secret::new(u.client_secret),
        connection: u.connection.filter(|c| !c.is_empty()),
        scopes,
        token_auth_method,
        timeout: secs(u.timeout_secs, 10, "upstream.timeout_secs", 1..=120, ctx)?,
        userinfo: u.userinfo.unwrap_or(true),
    };

    // [[sp]]
    if raw.sp.is_empty() {
        return Err(ctx.invalid("sp", "has no entry", "add an [[sp]] table for your Flex instance (kind = \"flex-enhanced\", flex_connection = \"JQ…\")"));
    }
    let mut sps: Vec<SpConfig> = Vec::new();
    for (i, s) in raw.sp.into_iter().enumerate() {
        let sp = validate_sp(s, i, ctx, base)?;
        if sps.iter().any(|o| o.name == sp.name) {
            return Err(ctx.invalid(
                format!("sp[{i}].name"),
                format!("{:?} is used by two [[sp]] entries", sp.name),
                "give each service provider its own name",
            ));
        }
        if let Some(o) = sps.iter().find(|o| o.entity_id == sp.entity_id) {
            return Err(ctx.invalid(format!("sp[{i}]"), format!("has the entity id {:?}, which [[sp]] {:?} already has", sp.entity_id, o.name), "each service provider needs its own entity id (requests are matched by their Issuer)"));
        }
        sps.push(sp);
    }

    let d = crate::saml::request::Limits::default();
    let limits = LimitsConfig {
        saml: crate::saml::request::Limits {
            max_encoded: raw.limits.max_saml_request_bytes.unwrap_or(d.max_encoded),
            max_xml: raw.limits.max_authn_request_xml_bytes.unwrap_or(d.max_xml),
            max_relay_state: raw
                .limits
                .max_relay_state_bytes
                .unwrap_or(d.max_relay_state),
        },
        max_pending_logins: raw.limits.max_pending_logins.unwrap_or(100_000),
    };

    let mut mfa = crate::mfa::MfaPolicy::default();
    if let Some(m) = raw.mfa {
        if let Some(a) = m.acr_values {
            mfa.acr_values = a;
        }
        if let Some(p) = m.proof {
            mfa.proof = match p.as_str() {
                "amr" => crate::mfa::Proof::Amr,
                "acr" => crate::mfa::Proof::Acr,
                "amr-or-acr" => crate::mfa::Proof::AmrOrAcr,
                other => {
                    return Err(ctx.invalid(
                        "mfa.proof",
                        format!("is {other:?}"),
                        "use \"amr\" (amr contains one of amr_values), \"acr\" (acr equals acr_values) or \"amr-or-acr\"",
                    ))
                }
            };
        }
        if let Some(v) = m.amr_values {
            if v.is_empty() {
                return Err(ctx.invalid(
                    "mfa.amr_values",
                    "is empty",
                    "list the amr values that mean a second factor, e.g. [\"mfa\"]",
                ));
            }
            mfa.amr_values = v;
        }
        if let Some(c) = m.context_class {
            mfa.context_class = c;
        }
        if let Some(r) = m.request_classes {
            mfa.request_classes = r;
        }
    }
    mfa.plain_class = idp.authn_context_class.clone();

    Ok(Config {
        mfa,
        source: ctx.path.clone(),
        server: ServerConfig {
            listen,
            public_url,
            login_timeout,
            shutdown_grace,
            request_timeout,
            header_timeout,
            tls,
        },
        store,
        log,
        idp,
        upstream,
        sps,
        limits,
    })
}

fn validate_sp(s: RawSp, i: usize, ctx: &Ctx, base: &Path) -> Result<SpConfig, ConfigError> {
    let k = |name: &str| format!("sp[{i}].{name}");
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ctx.invalid(
            k("name"),
            format!("is {:?}", s.name),
            "use letters, digits, - and _ (it appears in URLs: /saml/init/{name})",
        ));
    }
    let kind = match s.kind.as_deref().unwrap_or("flex-enhanced") {
        "flex-enhanced" => SpKind::FlexEnhanced,
        "flex-legacy" => SpKind::FlexLegacy,
        "generic" => SpKind::Generic,
        other => {
            return Err(ctx.invalid(
                k("kind"),
                format!("is {other:?}"),
                "use \"flex-enhanced\", \"flex-legacy\" or \"generic\"",
            ))
        }
    };
    let (preset_entity, preset_acs) = match kind {
        SpKind::FlexEnhanced => {
            let jq = s.flex_connection.as_deref().ok_or_else(|| {
                ctx.invalid(k("flex_connection"), "is missing (needed by kind = \"flex-enhanced\")", "copy the SSO connection id (JQ followed by 32 hex digits) from Flex Console → Single Sign-On")
            })?;
            if !is_sid(jq, "JQ") {
                return Err(ctx.invalid(k("flex_connection"), format!("is {jq:?}, not JQ followed by 32 lowercase hex digits"), "copy the id from the ACS URL Flex Console shows (…/login/callback?connection=JQ…)"));
            }
            let region = s.region.as_deref().unwrap_or("us1");
            let b = region.as_bytes();
            let ok = b.len() == 3
                && b[0].is_ascii_lowercase()
                && b[1].is_ascii_lowercase()
                && b[2].is_ascii_digit();
            if !ok {
                return Err(ctx.invalid(
                    k("region"),
                    format!("is {region:?}"),
                    "use the Flex region id, e.g. \"us1\", \"ie1\" or \"au1\"",
                ));
            }
            (
                Some(format!("urn:flex:{jq}")),
                Some(format!(
                    "https://login.flex.{region}.twilio.com/login/callback?connection={jq}"
                )),
            )
        }
        SpKind::FlexLegacy => {
            let ac = s.account_sid.as_deref().ok_or_else(|| {
                ctx.invalid(
                    k("account_sid"),
                    "is missing (needed by kind = \"flex-legacy\")",
                    "copy the Account SID (AC followed by 32 hex digits) from the Twilio Console",
                )
            })?;
            if !is_sid(ac, "AC") {
                return Err(ctx.invalid(
                    k("account_sid"),
                    format!("is {ac:?}, not AC followed by 32 lowercase hex digits"),
                    "copy the Account SID from the Twilio Console",
                ));
            }
            (
                Some(format!(
                    "https://iam.twilio.com/v1/Accounts/{ac}/saml2/metadata"
                )),
                Some(format!("https://iam.twilio.com/v1/Accounts/{ac}/saml2")),
            )
        }
        SpKind::Generic => (None, None),
    };
    let entity_id = s.entity_id.clone().or(preset_entity).ok_or_else(|| {
        ctx.invalid(
            k("entity_id"),
            "is missing (needed by kind = \"generic\")",
            "write the service provider's entity id (the Issuer of its AuthnRequests)",
        )
    })?;
    if entity_id.is_empty() || entity_id.trim() != entity_id {
        return Err(ctx.invalid(
            k("entity_id"),
            "is empty or has surrounding spaces",
            "write the service provider's entity id exactly",
        ));
    }
    let acs_url = s.acs_url.clone().or(preset_acs).ok_or_else(|| {
        ctx.invalid(
            k("acs_url"),
            "is missing (needed by kind = \"generic\")",
            "write the service provider's Assertion Consumer Service URL",
        )
    })?;
    https_or_loopback(&acs_url).map_err(|p| {
        ctx.invalid(
            k("acs_url"),
            p,
            "write the https ACS URL of the service provider",
        )
    })?;
    let sign = match s.sign.as_deref().unwrap_or("response") {
        "response" => SignMode::Response,
        "assertion" => SignMode::Assertion,
        "both" => SignMode::Both,
        other => {
            return Err(ctx.invalid(
                k("sign"),
                format!("is {other:?}"),
                "use \"response\" (Flex Enhanced), \"assertion\" or \"both\"",
            ))
        }
    };
    let mut attributes = Vec::new();
    match s.attributes {
        None => {
            for (a, c) in [
                ("email", "email"),
                ("full_name", "name"),
                ("image_url", "picture"),
                ("roles", "app_metadata.flex.roles"),
            ] {
                attributes.push(AttributeMapping {
                    saml_name: a.into(),
                    claim: c.into(),
                });
            }
        }
        Some(table) => {
            for (name, v) in table {
                let key = format!("sp[{i}].attributes.{name}");
                let claim = v.as_str().ok_or_else(|| {
                    ctx.invalid(
                        &key,
                        "is not a string",
                        "write the claim name, e.g. roles = \"https://example.com/flex_roles\"",
                    )
                })?;
                if claim.is_empty() {
                    return Err(ctx.invalid(
                        &key,
                        "is empty",
                        "write the claim name or dotted path",
                    ));
                }
                if name.is_empty() || name.contains(char::is_whitespace) || name.contains("://") {
                    return Err(ctx.invalid(
                        &key,
                        "is not a bare attribute name",
                        "Flex wants bare names such as email, full_name, roles",
                    ));
                }
                attributes.push(AttributeMapping {
                    saml_name: name,
                    claim: claim.to_string(),
                });
            }
        }
    }
    let has = |n: &str| attributes.iter().any(|a| a.saml_name == n);
    if !has("email") {
        return Err(ctx.invalid(
            format!("sp[{i}].attributes"),
            "has no `email` (it is also the NameID)",
            "add email = \"email\"",
        ));
    }
    if kind.is_flex() {
        for required in ["full_name", "roles"] {
            if !has(required) {
                return Err(ctx.invalid(
                    format!("sp[{i}].attributes"),
                    format!("has no `{required}`, which Flex requires"),
                    format!("add {required} = \"<claim>\" (see the README's mapping section)"),
                ));
            }
        }
    }
    let mfa = match s.mfa.as_deref().unwrap_or("never") {
        "never" => crate::mfa::MfaMode::Never,
        "always" => crate::mfa::MfaMode::Always,
        "on-request" => crate::mfa::MfaMode::OnRequest,
        other => {
            return Err(ctx.invalid(
                k("mfa"),
                format!("is {other:?}"),
                "use \"never\", \"always\" (every login needs a second factor) or \"on-request\" (when the AuthnRequest asks for it)",
            ))
        }
    };
    let want_signed_requests = s.want_signed_requests.unwrap_or(s.request_cert.is_some());
    if want_signed_requests && s.request_cert.is_none() {
        return Err(ctx.invalid(
            k("want_signed_requests"),
            "is true, but no request_cert is configured to check the signatures with",
            "set request_cert to the service provider's signing certificate (PEM), or remove want_signed_requests",
        ));
    }
    Ok(SpConfig {
        name: s.name,
        kind,
        entity_id,
        acs_url,
        sign,
        default_relay_state: s.default_relay_state,
        attributes,
        extra_roles: s.extra_roles,
        request_cert: s
            .request_cert
            .map(|p| if p.is_absolute() { p } else { base.join(p) }),
        want_signed_requests,
        allow_sha1_requests: s.allow_sha1_requests,
        mfa,
    })
}
