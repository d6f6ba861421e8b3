//! The TOML shape of `flexgate.toml`, as serde reads it: unknown keys are refused here; every
//! value is checked in `validate/`.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) idp: RawIdp,
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) sp: Vec<RawSp>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    pub(super) mfa: Option<RawMfa>,
    pub(super) store: Option<RawStore>,
    pub(super) log: Option<RawLog>,
    pub(super) trace: Option<RawTrace>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrace {
    pub(super) enabled: Option<bool>,
    pub(super) keep_secs: Option<u64>,
    pub(super) sample: Option<f64>,
    pub(super) max_traces: Option<u64>,
    pub(super) max_trace_bytes: Option<u64>,
    pub(super) per_email: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMfa {
    pub(super) acr_values: Option<String>,
    pub(super) proof: Option<String>,
    pub(super) amr_values: Option<Vec<String>>,
    pub(super) context_class: Option<String>,
    pub(super) request_classes: Option<Vec<String>>,
    pub(super) reauth_window_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) public_url: String,
    pub(super) login_timeout_secs: Option<u64>,
    pub(super) shutdown_grace_secs: Option<u64>,
    pub(super) request_timeout_secs: Option<u64>,
    pub(super) header_timeout_secs: Option<u64>,
    pub(super) tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdp {
    pub(super) entity_id: Option<String>,
    /// A PEM file or a `pkcs11:` URI.
    pub(super) key: String,
    pub(super) cert: PathBuf,
    pub(super) next_cert: Option<PathBuf>,
    pub(super) assertion_lifetime_secs: Option<u64>,
    pub(super) clock_skew_secs: Option<u64>,
    pub(super) request_max_age_secs: Option<u64>,
    pub(super) authn_context_class: Option<String>,
    #[serde(default)]
    pub(super) allow_insecure_key_permissions: bool,
    pub(super) pkcs11_sessions: Option<usize>,
    #[serde(default)]
    pub(super) allow_extractable_key: bool,
    pub(super) pin_retry_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) connection: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) token_auth_method: Option<String>,
    pub(super) timeout_secs: Option<u64>,
    pub(super) userinfo: Option<bool>,
    pub(super) provider: Option<String>,
    pub(super) hosted_domain: Option<String>,
    pub(super) graph_url: Option<String>,
    pub(super) graph_token_url: Option<String>,
    pub(super) google_service_account_key: Option<PathBuf>,
    pub(super) google_token_url: Option<String>,
    pub(super) cloud_identity_url: Option<String>,
    pub(super) management: Option<RawManagement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManagement {
    pub(super) url: Option<String>,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) cache_secs: Option<u64>,
    pub(super) prefetch_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSp {
    pub(super) name: String,
    pub(super) kind: Option<String>,
    pub(super) flex_connection: Option<String>,
    pub(super) region: Option<String>,
    pub(super) account_sid: Option<String>,
    pub(super) entity_id: Option<String>,
    pub(super) acs_url: Option<String>,
    pub(super) sign: Option<String>,
    pub(super) default_relay_state: Option<String>,
    pub(super) attributes: Option<toml::Table>,
    #[serde(default)]
    pub(super) extra_roles: Vec<String>,
    pub(super) role_map: Option<toml::Table>,
    pub(super) request_cert: Option<PathBuf>,
    pub(super) want_signed_requests: Option<bool>,
    #[serde(default)]
    pub(super) allow_sha1_requests: bool,
    pub(super) mfa: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_saml_request_bytes: Option<usize>,
    pub(super) max_authn_request_xml_bytes: Option<usize>,
    pub(super) max_relay_state_bytes: Option<usize>,
    pub(super) max_pending_logins: Option<usize>,
}
