//! Configuration: one TOML file → a validated [`Config`], with Flex presets resolved once.
//!
//! This is the only module that reads files at start-up (the config and the key material,
//! `keys.rs`). Every error names the file, the key and the fix, and stops start-up.

pub mod keys;
mod raw;
mod validate;

/// Re-exported: [`crate::secret::Secret`] lives below `config` and `pkcs11`, which both use it.
pub use crate::secret::Secret;

use crate::saml::sign::SignMode;
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
    /// Several problems, each as `Invalid` says it, in the order of the file's sections.
    #[error("{}", join(.0))]
    Several(Vec<ConfigError>),
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
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
    pub trace: TraceConfig,
}

/// `[trace]`: the login traces support and QA read (`trace::keep`).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    pub enabled: bool,
    /// How long a trace is kept.
    pub keep: Duration,
    /// The fraction of successful logins kept (failures are always kept), 0.0 to 1.0.
    pub sample: f64,
    /// The most traces kept in all; the oldest go first.
    pub max_traces: usize,
    /// The largest trace kept, in bytes of JSON (larger ones lose their XML first).
    pub max_trace_bytes: usize,
    /// The attempts kept per email address.
    pub per_email: usize,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The private admin listener (`/metrics`, the detailed `/readyz`, admin pages): plain
    /// HTTP, no authentication; `None` (the default) = not started.
    pub admin_listen: Option<SocketAddr>,
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

/// `log.level` when it is not set (and when it cannot be read).
pub const DEFAULT_LOG_LEVEL: &str = "info";

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
    /// After the token refused the PIN, how long before flexgate tries that PIN once more
    /// (a reload tries at once).
    pub pin_retry: Duration,
}

/// How flexgate authenticates at the upstream's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The provider preset in force (`[upstream] provider`, else detected from the issuer).
    pub provider: crate::provider::Provider,
    /// Why that preset: set in the config, or what in the issuer matched.
    pub provider_reason: String,
    /// Google Workspace: the `hd` claim every person must carry.
    pub hosted_domain: Option<String>,
    /// Microsoft Graph, read on Entra ID's groups overage.
    pub graph: Option<GraphSettings>,
    /// Google Cloud Identity, for groups of Google Workspace people.
    pub google: Option<GoogleSettings>,
}

impl UpstreamConfig {
    /// The preset in force.
    pub fn preset(&self) -> &'static crate::provider::Preset {
        self.provider
    }
}

/// `[upstream] graph_url` / `graph_token_url` (Entra ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSettings {
    /// `https://graph.microsoft.com`, without a trailing slash.
    pub graph_url: String,
    /// The client-credentials token endpoint (default: the tenant's, from the issuer).
    pub token_url: String,
}

/// `[upstream] google_service_account_key` and the Cloud Identity URLs (Google Workspace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleSettings {
    /// The service account's JSON key file.
    pub service_account_key: PathBuf,
    /// Overrides the key's `token_uri`.
    pub token_url: Option<String>,
    /// `https://cloudidentity.googleapis.com`, without a trailing slash.
    pub cloud_identity_url: String,
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
    /// How often every user with a Flex role is read in bulk and shared through the store
    /// (`prefetch_secs`; `None` = roles are read at each login only).
    pub prefetch: Option<Duration>,
}

/// `sp[].kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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

/// `[sp.role_map]`: groups, as the IdP sends them, mapped to Flex roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap {
    /// The claims (names or dotted paths) holding the person's groups, merged in order:
    /// `[sp.attributes] groups`, else the provider preset's.
    pub claims: Vec<String>,
    /// `(group, roles)`; groups are matched exactly (case-sensitive).
    pub entries: Vec<(String, Vec<String>)>,
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
    /// Groups → roles (`[sp.role_map]`); `None` when not configured.
    pub role_map: Option<RoleMap>,
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
        let raw: raw::RawConfig =
            value
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        validate::validate(raw, path, &base, &env)
    }
}

fn expand_env(
    v: &mut toml::Value,
    key: &str,
    ctx: &Ctx,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        // A key URI is expanded attribute by attribute while it is parsed (`keys.rs`), so a
        // PIN from the environment is never read as URI syntax.
        toml::Value::String(s) if key == "idp.key" && crate::pkcs11::uri::is_pkcs11_uri(s) => {}
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
    expand_vars(s, env).map_err(|(problem, fix)| ctx.invalid(key, problem, fix))
}

/// `s` with every `${NAME}` replaced by the environment's value; the error is (problem, fix) and
/// names the variable, never a value.
pub(crate) fn expand_vars(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (String, String)> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            (
                "has a `${` without its closing `}`".to_string(),
                "write ${NAME} with NAME an environment variable".to_string(),
            )
        })?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err((
                format!("refers to ${{{name}}}, which is not an environment variable name"),
                "use letters, digits and _ in ${NAME}".to_string(),
            ));
        }
        let value = env(name).ok_or_else(|| {
            (format!("refers to the environment variable {name}, which is not set"), format!("export {name}=… before starting flexgate (for systemd: Environment= or EnvironmentFile=)"))
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A path from the config: relative ones start at `base`, the config file's folder.
pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    base.join(p)
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
