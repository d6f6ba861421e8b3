//! The files `flexgate init` writes: `flexgate.toml`, `flexgate.env` (0600) and, when there are
//! none, the signing key pair (through `keygen`). An existing file is never replaced silently.

use super::InitError;
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "flexgate.toml";
pub const ENV: &str = "flexgate.env";
pub const SECRET_VAR: &str = "FLEXGATE_CLIENT_SECRET";
const KEY: &str = "certs/idp-key.pem";
const CERT: &str = "certs/idp-cert.pem";

/// What the config says.
#[derive(Debug, Clone)]
pub struct ConfigValues<'a> {
    pub domain: &'a str,
    pub public_url: &'a str,
    pub client_id: &'a str,
    pub token_auth_method: &'a str,
    pub flex_connection: &'a str,
    pub region: &'a str,
    pub roles_claim: &'a str,
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `flexgate.toml` for one Flex (Enhanced) SP behind the Auth0 application.
pub fn config_text(v: &ConfigValues) -> String {
    format!(
        r#"# Written by `flexgate init`. The client secret is in flexgate.env (FLEXGATE_CLIENT_SECRET).
[server]
listen = "127.0.0.1:8080"
public_url = {public_url}

[idp]
key = "{KEY}"
cert = "{CERT}"

[upstream]
issuer = {issuer}
client_id = {client_id}
client_secret = "${{{SECRET_VAR}}}"
token_auth_method = {method}                 # as the Auth0 application is set

[[sp]]
name = "flex"
kind = "flex-enhanced"
flex_connection = {jq}
region = {region}

[sp.attributes]
email = "email"
full_name = "name"
image_url = "picture"
roles = {claim}              # set by the post-login Action `flexgate init` deployed
"#,
        public_url = quoted(v.public_url),
        issuer = quoted(&format!("https://{}/", v.domain)),
        client_id = quoted(v.client_id),
        method = quoted(v.token_auth_method),
        jq = quoted(v.flex_connection),
        region = quoted(v.region),
        claim = quoted(v.roles_claim),
    )
}

/// `flexgate.env`, for systemd's `EnvironmentFile=` or `set -a; . ./flexgate.env`.
pub fn env_text(secret: &str) -> String {
    format!("{SECRET_VAR}={secret}\n")
}

/// The secret `flexgate.env` holds, if it is one `init` could have written.
pub fn env_secret(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix(SECRET_VAR)?.strip_prefix('='))
}

/// One file of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    Create,
    Unchanged,
    /// Exists with other contents; replaced only with `--force`.
    Replace,
}

impl FileChange {
    pub fn verb(&self) -> &'static str {
        match self {
            FileChange::Create => "create",
            FileChange::Unchanged => "unchanged",
            FileChange::Replace => "replace",
        }
    }
}

/// Compares `path` with `want` (`None`: the contents cannot be known yet, e.g. before the
/// application exists, so an existing file differs).
pub fn file_change(path: &Path, want: Option<&str>) -> Result<FileChange, InitError> {
    match std::fs::read_to_string(path) {
        Ok(have) if want == Some(have.as_str()) => Ok(FileChange::Unchanged),
        Ok(_) => Ok(FileChange::Replace),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileChange::Create),
        Err(e) => Err(InitError::Io(path.to_path_buf(), e)),
    }
}

/// The key pair: `true` when it must be generated. Half a pair is an error.
pub fn keys_needed(dir: &Path) -> Result<bool, InitError> {
    let (key, cert) = (dir.join(KEY), dir.join(CERT));
    match (key.exists(), cert.exists()) {
        (true, true) => Ok(false),
        (false, false) => Ok(true),
        _ => Err(InitError::Usage(format!(
            "{} and {} must both exist or both be absent; remove the one left over, or run `flexgate keygen --out {} --force`",
            key.display(),
            cert.display(),
            dir.join("certs").display()
        ))),
    }
}

/// Generates the key pair with `keygen` (key 0600).
pub fn write_keys(dir: &Path, common_name: &str) -> Result<(PathBuf, PathBuf), InitError> {
    let opts = crate::keygen::KeygenOptions {
        out: dir.join("certs"),
        bits: 2048,
        days: 1095,
        common_name: common_name.to_string(),
        force: false,
        next: false,
    };
    crate::keygen::run(&opts).map_err(InitError::Keygen)
}

/// Writes `text` to `path` with `mode` (created, or replaced when `replace`).
pub fn write(path: &Path, text: &str, mode: u32, replace: bool) -> Result<(), InitError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| InitError::Io(dir.to_path_buf(), e))?;
    }
    crate::keygen::write_file(path, text.as_bytes(), mode, replace).map_err(InitError::Keygen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> ConfigValues<'static> {
        ConfigValues {
            domain: "example.us.auth0.com",
            public_url: "https://sso.example.com",
            client_id: "abc\"def",
            token_auth_method: "client_secret_post",
            flex_connection: "JQ0123456789abcdef0123456789abcdef",
            region: "us1",
            roles_claim: "https://sso.example.com/flex_roles",
        }
    }

    #[test]
    fn config_validates_and_says_what_init_set() {
        let text = config_text(&values());
        let cfg = crate::config::Config::from_toml(&text, Path::new("/x/flexgate.toml"), |k| {
            (k == SECRET_VAR).then(|| "s3cret".to_string())
        })
        .expect("the written config validates");
        assert_eq!(cfg.upstream.issuer, "https://example.us.auth0.com/");
        assert_eq!(cfg.upstream.client_id, "abc\"def");
        assert_eq!(cfg.upstream.client_secret.expose(), "s3cret");
        assert_eq!(
            cfg.upstream.token_auth_method,
            Some(crate::config::TokenAuthMethod::ClientSecretPost)
        );
        assert_eq!(cfg.idp.key, Path::new("/x/certs/idp-key.pem"));
        let roles = cfg.sps[0]
            .attributes
            .iter()
            .find(|a| a.saml_name == "roles")
            .map(|a| a.claim.as_str());
        assert_eq!(roles, Some("https://sso.example.com/flex_roles"));
    }

    #[test]
    fn env_round_trip() {
        assert_eq!(env_secret(&env_text("a=b")), Some("a=b"));
        assert_eq!(env_secret("OTHER=1\n"), None);
    }
}
