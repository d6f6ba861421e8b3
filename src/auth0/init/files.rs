//! The files `flexgate init` writes: `flexgate.toml`, `flexgate.env` (0600) and, when there are
//! none, the signing key pair (through `keygen`). An existing file is never replaced silently.
//!
//! A file is written as a new temporary file in the same folder (created exclusively, its mode
//! set, synced), then renamed over the old one (or linked to the name when there was none), so a
//! symlink planted at the name is replaced, never written through, and a reader never sees half
//! a file.

use super::InitError;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    format!("{SECRET_VAR}={}\n", env_quote(secret))
}

/// The characters a double-quoted value escapes with a backslash: bash unescapes exactly these
/// inside double quotes, and so does systemd's `EnvironmentFile=` parser (its `SHELL_NEED_ESCAPE`,
/// "like the real shell does"); any other character stands for itself in both.
const ENV_ESCAPED: [char; 4] = ['"', '\\', '`', '$'];

/// `v` as a double-quoted value that bash's `.` and systemd's `EnvironmentFile=` both read back
/// as `v` (spaces, `#`, `'` and newlines are literal inside double quotes in both).
pub fn env_quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if ENV_ESCAPED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The secret `flexgate.env` holds, if it is one `init` could have written: double-quoted as
/// [`env_text`] writes it, or bare (one line) as earlier versions did.
pub fn env_secret(text: &str) -> Option<String> {
    let start = text
        .match_indices(&format!("{SECRET_VAR}="))
        .find(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
        .map(|(i, m)| i + m.len())?;
    let rest = &text[start..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(
            rest.lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_string(),
        );
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                e if ENV_ESCAPED.contains(&e) => out.push(e),
                '\n' => {}
                e => {
                    out.push('\\');
                    out.push(e);
                }
            },
            c => out.push(c),
        }
    }
    None // no closing quote
}

/// Characters a bare value may hold and read the same in bash and systemd.
fn bare_safe(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+/=:@%,".contains(c))
}

/// Compares `flexgate.env` at `path` with the one for `secret`. One written bare by an earlier
/// `init` is kept when the secret reads the same there.
pub fn env_change(path: &Path, secret: &str) -> Result<FileChange, InitError> {
    let bare = format!("{SECRET_VAR}={secret}\n");
    match file_change(path, Some(&env_text(secret)))? {
        FileChange::Replace if bare_safe(secret) && read_plain(path)?.as_deref() == Some(&bare) => {
            Ok(FileChange::Unchanged)
        }
        other => Ok(other),
    }
}

/// The file's text when `path` is a regular file (not a symlink).
fn read_plain(path: &Path) -> Result<Option<String>, InitError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => std::fs::read_to_string(path)
            .map(Some)
            .map_err(|e| InitError::Io(path.to_path_buf(), e)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InitError::Io(path.to_path_buf(), e)),
    }
}

/// The mode of `flexgate.env` when it is a regular file whose mode is not 0600 (to be fixed).
pub fn env_mode_to_fix(path: &Path) -> Result<Option<u32>, InitError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && m.mode() & 0o7777 != 0o600 => {
            Ok(Some(m.mode() & 0o7777))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InitError::Io(path.to_path_buf(), e)),
    }
}

/// Sets the mode of the regular file at `path` to `mode`, through a handle checked to be the
/// file that was inspected (a symlink swapped in meanwhile is refused, not followed).
pub fn fix_mode(path: &Path, mode: u32) -> Result<(), InitError> {
    let io = |e| InitError::Io(path.to_path_buf(), e);
    let seen = std::fs::symlink_metadata(path).map_err(io)?;
    let f = std::fs::File::open(path).map_err(io)?;
    let now = f.metadata().map_err(io)?;
    if !seen.file_type().is_file() || (seen.dev(), seen.ino()) != (now.dev(), now.ino()) {
        return Err(InitError::Usage(format!(
            "{} changed while `flexgate init` fixed its mode (is it a symlink?); make it a regular file, then run `flexgate init` again",
            path.display()
        )));
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)
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
/// A symlink at `path` always differs (it is replaced by a file, never written through).
pub fn file_change(path: &Path, want: Option<&str>) -> Result<FileChange, InitError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileChange::Create),
        Err(e) => return Err(InitError::Io(path.to_path_buf(), e)),
        Ok(_) => {}
    }
    match read_plain(path)? {
        Some(have) if want == Some(have.as_str()) => Ok(FileChange::Unchanged),
        _ => Ok(FileChange::Replace),
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

/// Writes `text` to `path` with `mode`: created (an existing name, a symlink included, is an
/// error), or replaced when `replace` (a symlink there is replaced, its target untouched).
pub fn write(path: &Path, text: &str, mode: u32, replace: bool) -> Result<(), InitError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| InitError::Io(dir.to_path_buf(), e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let done = write_new(&tmp, text.as_bytes(), mode).and_then(|()| {
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path).and_then(|()| std::fs::remove_file(&tmp))
        }
    });
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(InitError::Usage(format!(
                "{} appeared while `flexgate init` ran; nothing was written there. Look at it, then run `flexgate init` again (with --force to replace it)",
                path.display()
            )));
        }
        return Err(InitError::Io(path.to_path_buf(), e));
    }
    // The rename itself is durable once the folder is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| InitError::Io(dir.to_path_buf(), e))
}

/// A new file (never an existing name, never through a symlink) with exactly `mode`, synced.
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have narrowed the mode; set it exactly (the file is ours alone so far).
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()
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
        for s in ["a=b", "plain", "x$HOME y\"z'w\\v#u`t!s", "two\nlines", ""] {
            assert_eq!(env_secret(&env_text(s)).as_deref(), Some(s), "{s:?}");
        }
        assert_eq!(
            env_text("a$b\"c"),
            "FLEXGATE_CLIENT_SECRET=\"a\\$b\\\"c\"\n"
        );
        // As earlier versions wrote it.
        assert_eq!(
            env_secret("FLEXGATE_CLIENT_SECRET=abc\n").as_deref(),
            Some("abc")
        );
        assert_eq!(env_secret("OTHER=1\n"), None);
        assert_eq!(env_secret("X_FLEXGATE_CLIENT_SECRET=1\n"), None);
    }

    #[test]
    fn a_write_replaces_a_symlink_and_never_writes_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("flexgate.env");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        // Creating: the name is taken (by the symlink): refused, nothing written.
        assert!(write(&link, "new", 0o600, false).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            file_change(&link, Some("precious")).unwrap(),
            FileChange::Replace
        );
        write(&link, "new", 0o600, true).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let m = std::fs::symlink_metadata(&link).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
